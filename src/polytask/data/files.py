"""Reading the published on-disk formats of real benchmarks, with errors that name file, line and column.

Helpers shared by the loaders: :func:`read_table` (delimited text, fixed column count), :class:`Vocabulary`
(category strings -> ids, 0 = OOV for values never seen in training), :func:`parse_float`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

from polytask.errors import PolytaskError
from polytask.features import OOV


class DataFileError(PolytaskError):
    """A dataset file that is missing or does not have the expected layout."""


def require_file(path: Path, hint: str) -> Path:
    if not path.is_file():
        raise DataFileError(f"{path} not found. {hint}")
    return path


def read_table(
    path: Path, n_columns: int, header: Sequence[str] | None = None, delimiter: str = ","
) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) of every non-empty row; a wrong column count or header raises
    :class:`DataFileError` naming the file and line."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter=delimiter, skipinitialspace=True)
        for line, row in enumerate(reader, start=1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if header is not None and line == 1:
                got = [c.strip() for c in row]
                if got != list(header):
                    missing = [c for c in header if c not in got]
                    raise DataFileError(f"{path}, line 1: unexpected header; missing columns {missing[:5]}")
                continue
            if len(row) != n_columns:
                raise DataFileError(f"{path}, line {line}: expected {n_columns} columns, found {len(row)}")
            yield line, [c.strip() for c in row]


def parse_float(value: str, path: Path, line: int, column: str) -> float:
    """A finite number from a table cell; NaN and inf are errors naming file, line and column (one NaN would
    turn a whole standardised column into NaN)."""
    try:
        number = float(value)
    except ValueError:
        raise DataFileError(f"{path}, line {line}, column {column!r}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise DataFileError(f"{path}, line {line}, column {column!r}: expected a finite number, got {value!r}")
    return number


class Vocabulary:
    """Category strings -> ids 1..n in order of first appearance in training; unseen or missing -> 0 (OOV)."""

    def __init__(self, missing: Sequence[str] = ("?",)):
        self.ids: dict[str, int] = {}
        self.missing = set(missing)

    def fit(self, value: str) -> int:
        if value in self.missing:
            return OOV
        return self.ids.setdefault(value, len(self.ids) + 1)

    def lookup(self, value: str) -> int:
        return self.ids.get(value, OOV)

    def __len__(self) -> int:
        """Table size including the OOV row."""
        return len(self.ids) + 1
