"""Per-epoch logs: one JSON object a line (``log.jsonl``) and the same rows flattened (``log.csv``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


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
    """Appends one record per epoch to ``log.jsonl`` and ``log.csv`` in ``directory``.

    ``truncate(epochs)`` keeps the first ``epochs`` rows, so a resumed run does not duplicate epochs that
    were logged after its checkpoint.
    """

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl, self.csv = self.dir / "log.jsonl", self.dir / "log.csv"

    def reset(self) -> None:
        for p in (self.jsonl, self.csv):
            p.unlink(missing_ok=True)

    def truncate(self, epochs: int) -> None:
        rows = self.read()[:epochs]
        self.reset()
        for row in rows:
            self.append(row)

    def read(self) -> list[dict[str, Any]]:
        if not self.jsonl.exists():
            return []
        return [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]

    def append(self, record: dict[str, Any]) -> None:
        with self.jsonl.open("a") as f:
            f.write(json.dumps(record) + "\n")
        flat = flatten(record)
        new = not self.csv.exists()
        with self.csv.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(flat), extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(flat)
