"""Per-epoch logs: one JSON object a line (``log.jsonl``) and the same rows flattened (``log.csv``)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from polytask.utils import atomic_write


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"val": {"left": {"accuracy": 0.9}}} -> {"val/left/accuracy": 0.9}."""
    flat: dict[str, Any] = {}
    for k, v in record.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten(v, key + "/"))
        else:
            flat[key] = v
    return flat


class EpochLogger:
    """Keeps ``log.jsonl`` and ``log.csv`` in ``directory`` equal to the run's history.

    Each :meth:`write` replaces both files atomically with every record so far (a few kB an epoch), so a
    kill or a full disk leaves the previous complete log, never a torn line, and a resumed run rewrites
    them from its checkpoint's history (no epoch logged after the checkpoint is duplicated).
    """

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl, self.csv = self.dir / "log.jsonl", self.dir / "log.csv"

    def reset(self) -> None:
        for p in (self.jsonl, self.csv):
            p.unlink(missing_ok=True)

    def write(self, records: list[dict[str, Any]]) -> None:
        """Both files hold exactly ``records`` (one row each)."""
        if not records:
            self.reset()
            return
        lines = "".join(json.dumps(r) + "\n" for r in records)
        atomic_write(self.jsonl, lambda f: f.write(lines.encode()))
        rows = [flatten(r) for r in records]
        fields = list(dict.fromkeys(k for row in rows for k in row))
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.csv, lambda f: f.write(text.getvalue().encode()))

    def read(self) -> list[dict[str, Any]]:
        """The logged records; a last line cut off (by a tool appending to the file) is left out."""
        if not self.jsonl.exists():
            return []
        lines = [line for line in self.jsonl.read_text().splitlines() if line.strip()]
        records = []
        for i, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if i == len(lines) - 1:
                    break
                raise
        return records
