"""Reading the results that ``compare`` reuses (its cache and the finished runs of an ``--out``): a file
that is unreadable, not a JSON object or lacks what a result holds is a miss, reported once and moved
aside as ``<name>.corrupt`` so that the run is made again, never a traceback and never a wrong number."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

# what compare reads from a saved result, and the JSON types it must have
RESULT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "test_scores": dict,
    "val_scores": dict,
    "best_epoch": int,
    "params": int,
    "ms_per_step": (int, float),
    "skipped_batches": int,
    "history": list,
    "extra": dict,
}


def _scores_problem(scores: Any, key: str) -> str | None:
    for task, metrics in scores.items():
        if not isinstance(metrics, dict):
            return f"{key}[{task!r}] is not a mapping"
        for metric, value in metrics.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                return f"{key}[{task!r}][{metric!r}] is {value!r}, not a number"
    return None


def result_problem(saved: Any) -> str | None:
    """Why ``saved`` (parsed JSON) is not a usable result, or None."""
    if not isinstance(saved, dict):
        return f"a JSON {type(saved).__name__}, not an object"
    for key, kind in RESULT_FIELDS.items():
        if key not in saved:
            return f"no {key!r}"
        if not isinstance(saved[key], kind) or isinstance(saved[key], bool):
            return f"{key!r} is {type(saved[key]).__name__}"
    return _scores_problem(saved["test_scores"], "test_scores") or _scores_problem(saved["val_scores"], "val_scores")


class SavedRuns:
    """Reads saved results and key files; ``log`` reports each corrupt file once (it is then moved aside)."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log

    def _load(self, path: Path) -> tuple[Any, str | None]:
        try:
            return json.loads(path.read_text()), None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return None, f"unreadable ({type(exc).__name__})"

    def result(self, path: Path, digest: str) -> dict[str, Any] | None:
        """The result saved at ``path`` when it was made for key hash ``digest``; None when there is none,
        it is another key's, or it is corrupt (then reported and moved aside)."""
        if not path.exists():
            return None
        saved, problem = self._load(path)
        extra = saved.get("extra") if problem is None and isinstance(saved, dict) else None
        if isinstance(extra, dict) and extra.get("key_hash") != digest:
            return None  # another configuration's result: not corrupt
        problem = problem or result_problem(saved)
        if problem:
            self.quarantine(path, problem)
            return None
        return saved

    def key_matches(self, path: Path, digest: str) -> bool:
        """Whether the key file at ``path`` names ``digest`` (a corrupt one is reported, moved aside: no)."""
        if not path.exists():
            return False
        saved, problem = self._load(path)
        if problem is None and not (isinstance(saved, dict) and isinstance(saved.get("key_hash"), str)):
            problem = "not an object with a key_hash"
        if problem:
            self.quarantine(path, problem)
            return False
        return saved["key_hash"] == digest

    def quarantine(self, path: Path, problem: str) -> None:
        aside = path.with_name(path.name + ".corrupt")
        try:
            path.replace(aside)
            where = f"moved to {aside}"
        except OSError as exc:
            where = f"could not be moved aside ({exc.strerror})"
        self.log(f"ignoring {path}: {problem}; it is {where}, and the run is made again")
