"""``aliexpress``: the AliExpress search-log benchmark in the per-country CSV layout used by the
Multitask-Recommendation-Library (``AliExpress_{NL,ES,FR,US}/{train,test}.csv``; download it yourself).

Each file has a header and 82 columns: ``search_id`` (dropped), ``categorical_1..16`` (integer ids),
``numerical_1..63`` (already scaled floats), ``click`` and ``conversion``. In that preprocessing
``conversion`` is click and purchase, so the two tasks are ``ctr`` (label: click) and ``ctcvr`` (label:
conversion), both over all impressions — the ESMM setting. Ids are shifted by one so that 0 is the OOV
row; the vocabulary of each field is the training maximum + 2 (ids above it, seen only in test, become
OOV). ``val_fraction`` of the training file (its last rows, as the data are time-ordered) is validation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from polytask.data.base import MultiTaskData, Split
from polytask.data.files import DataFileError, parse_float, read_table, require_file
from polytask.data.registry import register
from polytask.features import FeatureSpec, categorical
from polytask.tasks import Task

CATEGORICAL = tuple(f"categorical_{i}" for i in range(1, 17))
NUMERICAL = tuple(f"numerical_{i}" for i in range(1, 64))
HEADER = ("search_id", *CATEGORICAL, *NUMERICAL, "click", "conversion")
COUNTRIES = ("NL", "ES", "FR", "US")


def _read(path: Path):
    cats, nums, labels = [], [], []
    for line, fields in read_table(path, len(HEADER), header=HEADER):
        values = [parse_float(v, path, line, name) for name, v in zip(HEADER[1:], fields[1:])]
        ids = values[: len(CATEGORICAL)]
        if any(v < 0 or v != int(v) or v >= 2**53 for v in ids):
            bad = next(n for n, v in zip(CATEGORICAL, ids) if v < 0 or v != int(v) or v >= 2**53)
            raise DataFileError(
                f"{path}, line {line}, column {bad!r}: category ids must be non-negative integers below 2**53"
            )
        cats.append([int(v) + 1 for v in ids])
        nums.append(values[len(CATEGORICAL) : len(CATEGORICAL) + len(NUMERICAL)])
        click, conversion = values[-2:]
        if click not in (0, 1) or conversion not in (0, 1):
            raise DataFileError(f"{path}, line {line}: click and conversion must be 0 or 1")
        labels.append((click, conversion))
    if not cats:
        raise DataFileError(f"{path}: no data rows")
    return np.array(cats, dtype=np.int64), np.array(nums, dtype=np.float32), np.array(labels, dtype=np.float32)


@register("aliexpress", "AliExpress search logs, per-country CSV layout (files you download); tasks ctr, ctcvr")
def aliexpress(path: str, country: str = "NL", val_fraction: float = 0.1, embed_dim: int = 8) -> MultiTaskData:
    if country not in COUNTRIES:
        raise DataFileError(f"aliexpress: country must be one of {COUNTRIES}, got {country!r}")
    if not 0 < val_fraction < 1:
        raise DataFileError(f"aliexpress: val_fraction must be in (0, 1), got {val_fraction}")
    folder = Path(path).expanduser() / f"AliExpress_{country}"
    hint = f"Expected {folder}/train.csv and test.csv (the AliExpress per-country CSV layout)."
    train = _read(require_file(folder / "train.csv", hint))
    test = _read(require_file(folder / "test.csv", hint))
    vocab = train[0].max(axis=0) + 1  # ids 1..max seen in training, plus the OOV row 0
    tasks = [Task("ctr", "binary", 1, ("auc", "log_loss")), Task("ctcvr", "binary", 1, ("auc", "log_loss"))]

    def split(data, rows) -> Split:
        cats, nums, labels = data
        ids = np.where(cats[rows] < vocab, cats[rows], 0)
        inputs = {"categorical": torch.from_numpy(ids), "numerical": torch.from_numpy(nums[rows])}
        return Split(inputs, {"ctr": torch.from_numpy(labels[rows, 0]), "ctcvr": torch.from_numpy(labels[rows, 1])})

    n = len(train[0])
    cut = max(1, min(n - 1, round(n * (1 - val_fraction))))
    spec = FeatureSpec(categorical(CATEGORICAL, [int(v) for v in vocab], embed_dim), NUMERICAL)
    return MultiTaskData(
        f"aliexpress_{country}",
        tasks,
        spec,
        split(train, np.arange(cut)),
        split(train, np.arange(cut, n)),
        split(test, np.arange(len(test[0]))),
        {"country": country},
    )
