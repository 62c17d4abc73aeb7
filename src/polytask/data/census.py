"""``census_income``: UCI Census-Income (KDD) with the MMoE paper's task groups (Ma et al. 2018, §6.3).

Download ``census-income.data`` and ``census-income.test`` (UCI repository, "Census-Income (KDD)") into
one directory and pass it as ``path``. Format: headerless, 42 comma-separated fields, ``?`` = missing.

Tasks (binary):
- group ``G1``: ``income`` (> 50K, the file's "50000+.") and ``marital`` ("Never married");
- group ``G2``: ``education`` (at least an associate degree — the paper does not define "≥ college";
  this mapping is ours) and ``marital``.

Education and marital status are removed from the inputs (as in the paper), and so are the income label
and ``instance_weight``. The 7 continuous columns are standardised with training statistics; the other 33
are categorical with vocabularies from the training file (``?`` and values unseen in training -> OOV 0).
The training file is the train split; the test file is split 1:1 into validation and test (``seed``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from polytask.data.base import MultiTaskData, Split
from polytask.data.files import DataFileError, Vocabulary, parse_float, read_table, require_file
from polytask.data.registry import register
from polytask.features import FeatureSpec, categorical
from polytask.tasks import Task

COLUMNS = (
    "age",
    "class_worker",
    "det_ind_code",
    "det_occ_code",
    "education",
    "wage_per_hour",
    "hs_college",
    "marital_stat",
    "major_ind_code",
    "major_occ_code",
    "race",
    "hisp_origin",
    "sex",
    "union_member",
    "unemp_reason",
    "full_or_part_emp",
    "capital_gains",
    "capital_losses",
    "stock_dividends",
    "tax_filer_stat",
    "region_prev_res",
    "state_prev_res",
    "det_hh_fam_stat",
    "det_hh_summ",
    "instance_weight",
    "mig_chg_msa",
    "mig_chg_reg",
    "mig_move_reg",
    "mig_same",
    "mig_prev_sunbelt",
    "num_emp",
    "fam_under_18",
    "country_father",
    "country_mother",
    "country_self",
    "citizenship",
    "own_or_self",
    "vet_question",
    "vet_benefits",
    "weeks_worked",
    "year",
    "income",
)
NUMERICAL = ("age", "wage_per_hour", "capital_gains", "capital_losses", "stock_dividends", "num_emp", "weeks_worked")
DROPPED = ("education", "marital_stat", "instance_weight", "income")
CATEGORICAL = tuple(c for c in COLUMNS if c not in NUMERICAL and c not in DROPPED)
COLLEGE = (
    "Associates degree-academic program",
    "Associates degree-occup /vocational",
    "Bachelors degree(BA AB BS)",
    "Masters degree(MA MS MEng MEd MSW MBA)",
    "Prof school degree (MD DDS DVM LLB JD)",
    "Doctorate degree(PhD EdD)",
)
HINT = "Download census-income.data and census-income.test (UCI 'Census-Income (KDD)') into that directory."


def _labels(row: dict[str, str], path: Path, line: int) -> dict[str, float]:
    income = row["income"].rstrip(".").strip()
    if income not in ("- 50000", "50000+", "-50000"):
        raise DataFileError(f"{path}, line {line}, column 'income': expected '- 50000.' or '50000+.', got {income!r}")
    return {
        "income": float(income == "50000+"),
        "marital": float(row["marital_stat"] == "Never married"),
        "education": float(row["education"] in COLLEGE),
    }


def _read(path: Path, vocabs: dict[str, Vocabulary], fit: bool):
    cats, nums, labels = [], [], []
    for line, fields in read_table(path, len(COLUMNS)):
        row = dict(zip(COLUMNS, fields))
        cats.append([(vocabs[c].fit if fit else vocabs[c].lookup)(row[c]) for c in CATEGORICAL])
        nums.append([parse_float(row[c], path, line, c) for c in NUMERICAL])
        labels.append(_labels(row, path, line))
    if not cats:
        raise DataFileError(f"{path}: no data rows")
    return np.array(cats, dtype=np.int64), np.array(nums, dtype=np.float64), labels


@register("census_income", "UCI Census-Income (KDD), the MMoE paper's task groups G1/G2 (files you download)")
def census_income(path: str, group: str = "G1", embed_dim: int = 4, seed: int = 0) -> MultiTaskData:
    if group not in ("G1", "G2"):
        raise DataFileError(f"census_income: group must be 'G1' or 'G2', got {group!r}")
    root = Path(path).expanduser()
    train_file = require_file(root / "census-income.data", HINT)
    test_file = require_file(root / "census-income.test", HINT)
    vocabs = {c: Vocabulary() for c in CATEGORICAL}
    train = _read(train_file, vocabs, fit=True)
    test = _read(test_file, vocabs, fit=False)
    mean, std = train[1].mean(axis=0), train[1].std(axis=0)
    std[std == 0] = 1.0
    task_names = ["income", "marital"] if group == "G1" else ["education", "marital"]
    tasks = [Task(t, "binary", 1, ("auc", "log_loss")) for t in task_names]

    def split(cats, nums, labels, rows) -> Split:
        inputs = {
            "categorical": torch.from_numpy(cats[rows]),
            "numerical": torch.tensor((nums[rows] - mean) / std, dtype=torch.float32),
        }
        targets = {t: torch.tensor([labels[i][t] for i in rows], dtype=torch.float32) for t in task_names}
        return Split(inputs, targets)

    order = np.random.default_rng(seed).permutation(len(test[0]))
    half = len(order) // 2
    spec = FeatureSpec(categorical(CATEGORICAL, [len(vocabs[c]) for c in CATEGORICAL], embed_dim), NUMERICAL)
    return MultiTaskData(
        f"census_income_{group}",
        tasks,
        spec,
        split(*train, np.arange(len(train[0]))),
        split(*test, order[:half]),
        split(*test, order[half:]),
        {"group": group, "rows": {"train": len(train[0]), "test_file": len(test[0])}},
    )
