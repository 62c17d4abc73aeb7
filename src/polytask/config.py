"""Run configurations: dataclasses validated on construction; YAML files map onto them one to one and an
unknown key is an error that names it and lists the valid keys."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from polytask.errors import ConfigError
from polytask.typecheck import check_value

# epochs, batch_size and lr when neither the user nor the dataset sets them
DEFAULT_TRAINING = {"epochs": 20, "batch_size": 64, "lr": 2e-3}


SEARCH_BUDGETS = ("extra", "included")


@dataclass
class TrainSettings:
    """Optimisation settings shared by single runs and comparisons. ``epochs``, ``batch_size`` and ``lr``
    left as ``None`` take the dataset's recommendation (``MultiTaskData.info["train_defaults"]``, e.g.
    fewer epochs for the dense ``scenes``), else :data:`DEFAULT_TRAINING`; see :func:`resolve_training`."""

    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    device: str = "auto"
    amp: bool = False
    on_nonfinite: str = "raise"
    patience: int | None = None
    # architectures searched before training: "extra" trains every design for ``epochs`` after its search
    # (the papers' protocol); "included" counts the search epochs whose weights stay in the final model
    # (fully-adaptive's) in ``epochs``, so every design's weights get the same number of training epochs
    search_budget: str = "extra"

    def __post_init__(self) -> None:
        if self.search_budget not in SEARCH_BUDGETS:
            raise ConfigError(f"search_budget must be one of {SEARCH_BUDGETS}, got {self.search_budget!r}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience must be >= 1 (epochs without improvement), got {self.patience}")
        if (self.epochs is not None and self.epochs < 1) or (self.batch_size is not None and self.batch_size < 1):
            raise ConfigError(f"epochs and batch_size must be >= 1 (got {self.epochs}, {self.batch_size})")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.on_nonfinite not in ("raise", "skip"):
            raise ConfigError(f"on_nonfinite must be 'raise' or 'skip', got {self.on_nonfinite!r}")


@dataclass
class RunConfig(TrainSettings):
    """One training run (``polytask train --config FILE.yaml``)."""

    dataset: str = "multidigits"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    tasks: list[str] | None = None
    arch: str = "hps_cnn"
    arch_options: dict[str, Any] = field(default_factory=dict)
    method: str = "ew"
    method_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    out: str | None = None


# The no-option `polytask compare` (`make demo`): the strongest loss weightings on multidigits and three
# gradient methods, chosen so that it finishes in under 5 minutes on 2 CPU cores; `--methods all` runs all.
DEFAULT_METHODS = ["ew", "uw", "gls", "famo", "mgda", "pcgrad", "upgrad"]


@dataclass
class CompareConfig(TrainSettings):
    """A comparison (``polytask compare``): single-task baselines, then methods x archs x seeds."""

    dataset: str = "multidigits"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    tasks: list[str] | None = None
    archs: list[str] | None = None  # None: the dataset's default architecture (hps_cnn on multidigits)
    arch_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # None: DEFAULT_METHODS for one architecture; equal weighting when comparing several architectures
    # (an architecture comparison, as in Vandenhende et al. 2021: 16 designs x 7 methods would take hours)
    methods: list[str] | None = None
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    auxiliary: list[str] = field(default_factory=list)  # tasks trained and reported, never selected on
    out: str | None = None
    cache: bool = True
    # which ΔMTL sorts and heads the leaderboard: p (per task, positive = better) or m (per metric, lower =
    # better); both are computed and stored (polytask.metrics.delta)
    delta: str = "p"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.archs == [] or self.methods == [] or not self.seeds:
            raise ConfigError("archs, methods and seeds must each name at least one entry")
        check_unique(self.seeds, "seeds")
        check_unique(list(self.archs or []), "archs")
        check_unique(list(self.methods or []), "methods")
        if self.delta not in ("p", "m"):
            raise ConfigError(f"delta must be 'p' (Δp, per task) or 'm' (Δm, per metric), got {self.delta!r}")


def check_unique(values: list, key: str) -> None:
    """A list whose entries must differ (a seed twice would count one run as two: n = 2, std 0)."""
    repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
    if repeated:
        raise ConfigError(f"{key} lists {', '.join(map(str, repeated))} more than once: {values}")


def resolve_training(settings: TrainSettings, dataset_defaults: dict[str, Any] | None = None) -> TrainSettings:
    """A copy of ``settings`` whose unset ``epochs``/``batch_size``/``lr`` take the dataset's recommended
    values, else :data:`DEFAULT_TRAINING`."""
    recommended = {**DEFAULT_TRAINING, **(dataset_defaults or {})}
    filled = {k: recommended[k] for k in DEFAULT_TRAINING if getattr(settings, k) is None}
    return dataclasses.replace(settings, **filled) if filled else settings


def from_mapping(cls: type, values: dict[str, Any], source: str = "config") -> Any:
    """Build dataclass ``cls`` from ``values``; unknown keys and wrong types raise :class:`ConfigError`."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    values = {key: check_value(key, value, hints[key]) for key, value in values.items()}
    return cls(**values)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; missing or malformed files raise :class:`ConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return data


GROUPING_METHODS = ("pairs", "tag")


@dataclass
class GroupConfig(TrainSettings):
    """Task grouping (``polytask group``): which networks to train under an inference ``budget`` (in
    networks); ``methods``: ``pairs`` (Standley et al. 2020) and/or ``tag`` (Fifty et al. 2021). ``arch``
    None: the dataset's recommended architecture."""

    dataset: str = "task_groups"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    tasks: list[str] | None = None
    arch: str | None = None
    arch_options: dict[str, Any] = field(default_factory=dict)
    budget: float = 3.0
    methods: list[str] = field(default_factory=lambda: list(GROUPING_METHODS))
    seeds: list[int] = field(default_factory=lambda: [0])
    tag_every: int = 10
    tag_lookahead: str = "adam"
    tag_singletons: bool = True
    margin: float = 0.0  # δ of the ground-truth check on the pair-vs-single table (known groupings only)
    repeats: int = 1  # initialisations averaged per measured network (Standley et al. average several)
    out: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [m for m in self.methods if m not in GROUPING_METHODS]
        if unknown or not self.methods:
            raise ConfigError(f"grouping methods must be among {GROUPING_METHODS}, got {self.methods}")
        if self.budget < 1:
            raise ConfigError(f"budget is a number of networks >= 1, got {self.budget}")
        if self.tag_every < 1 or self.tag_lookahead not in ("adam", "sgd"):
            raise ConfigError("tag_every must be >= 1 and tag_lookahead 'adam' or 'sgd'")
        if not self.seeds:
            raise ConfigError("seeds must name at least one seed")
        check_unique(self.seeds, "seeds")
        if self.repeats < 1:
            raise ConfigError(f"repeats must be >= 1, got {self.repeats}")
