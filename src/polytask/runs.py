"""One training run from names and options: the glue the CLI uses (``polytask train`` and ``compare``)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any

from polytask import balancing, models
from polytask.config import CompareConfig, RunConfig, TrainSettings, resolve_training
from polytask.data import MultiTaskData
from polytask.data import check_options as check_dataset_options
from polytask.data import create as create_dataset
from polytask.errors import CheckpointError, ConfigError
from polytask.training import Trainer, TrainResult
from polytask.training.cost import ms_per_input
from polytask.training.pairing import check_pairing
from polytask.utils import check_writable, directory_lock, process_group, resolve_device, seed_everything, write_json


def train_run(
    data: MultiTaskData,
    arch: str,
    method: str,
    seed: int,
    settings: TrainSettings,
    arch_options: dict[str, Any] | None = None,
    method_options: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    baseline_val_scores: dict | None = None,
    progress: bool = True,
    resume: bool = False,
) -> TrainResult:
    """Seed, build the model and the balancer for ``data.tasks``, train, return the result."""
    settings = resolve_training(settings, data.info.get("train_defaults"))
    seed_everything(seed)
    model = models.create(arch, tasks=data.tasks, input_shape=data.input_shape, **(arch_options or {}))
    balancer = balancing.create(method, tasks=[t.name for t in data.tasks], **(method_options or {}))
    check_pairing(model, balancer, data.tasks)  # before a search, not after it
    if hasattr(model, "search") and process_group() is not None:
        raise ConfigError(
            f"architecture {arch!r} is searched before training, which runs in one process: train it without torchrun"
        )
    epochs, search = settings.epochs, {}
    if hasattr(model, "search"):  # architectures searched before training (AdaShare, MTL-NAS, ...)
        device = resolve_device(settings.device)
        model.to(device).search(data.train, settings.batch_size, settings.lr, seed, progress, device)
        epochs, search = searched_budget(model, settings)
    trainer = Trainer(
        model,
        data.tasks,
        balancer,
        data.train,
        data.val,
        data.test,
        epochs=epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        device=settings.device,
        amp=settings.amp,
        on_nonfinite=settings.on_nonfinite,
        patience=settings.patience,
        out_dir=out_dir,
        baseline_val_scores=baseline_val_scores,
        progress=progress,
        seed=seed,
    )
    result = trainer.fit(resume=resume)
    result.extra["ms_per_image"] = ms_per_input(model, (data.test or data.val).inputs, trainer.device)
    result.extra.update(search)
    if out_dir is not None:
        write_json(Path(out_dir) / "result.json", result.to_dict())
    return result


def searched_budget(model: Any, settings: TrainSettings) -> tuple[int, dict[str, Any]]:
    """The training epochs of a design just searched, and what its search cost, in passes over the whole
    training set: ``search_passes`` of weight updates, ``carried_search_passes`` of them whose weights
    stay in the final model. With ``search_budget: included`` the carried passes count in ``epochs``."""
    passes = float(getattr(model, "search_passes", 0.0))
    carried = float(getattr(model, "carried_search_passes", 0.0))
    epochs = settings.epochs
    if settings.search_budget == "included":
        epochs = max(1, settings.epochs - round(carried))
    return epochs, {
        "search_passes": passes,
        "carried_search_passes": carried,
        "search_budget": settings.search_budget,
        "train_epochs": epochs,
    }


def check_config_options(config: Any) -> Any:
    """``config`` (a RunConfig, CompareConfig or GroupConfig) with its ``dataset_options``,
    ``arch_options`` and ``method_options`` checked against the factories they go to: unknown options and
    values of the wrong type are :class:`ConfigError` naming the key path (``method_options.famo.gamma``),
    before any data is built or trained."""
    changes: dict[str, Any] = {"dataset_options": check_dataset_options(config.dataset, config.dataset_options)}
    if isinstance(config, CompareConfig):
        changes["arch_options"] = {
            a: models.MODELS.check_option_types(a, o, f"arch_options.{a}") for a, o in config.arch_options.items()
        }
        changes["method_options"] = {
            m: balancing.BALANCERS.check_option_types(m, o, f"method_options.{m}")
            for m, o in config.method_options.items()
        }
    else:
        if config.arch is not None:
            changes["arch_options"] = models.MODELS.check_option_types(config.arch, config.arch_options, "arch_options")
        if hasattr(config, "method_options"):
            changes["method_options"] = balancing.BALANCERS.check_option_types(
                config.method, config.method_options, "method_options"
            )
    return dataclasses.replace(config, **changes)


#: RunConfig keys that may differ between a run and its resumption: where it runs and writes, and a larger
#: ``epochs`` (continuing the training; a smaller one is refused, see :func:`check_resumable`)
RESUMABLE_CHANGES = frozenset({"epochs", "device", "out"})
#: files of an earlier run in an output directory, which a fresh run would overwrite
RUN_FILES = ("checkpoint.pt", "result.json", "log.jsonl", "log.csv", "config.json")


def check_resumable(out: Path, config: dict[str, Any]) -> None:
    """Refuse ``--resume`` into ``out`` with a config that differs from the one the checkpoint was made
    with (its ``config.json``), listing the differing keys; raising ``epochs`` continues the training."""
    path = out / "config.json"
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"--resume: {path} does not exist, so the checkpoint's config is unknown; train into a new --out"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"--resume: {path} is unreadable ({type(exc).__name__})") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"--resume: {path} is not a JSON object")
    changed = [
        k for k in sorted(set(saved) | set(config)) if k not in RESUMABLE_CHANGES and saved.get(k) != config.get(k)
    ]
    if changed:
        what = "; ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in changed)
        raise ConfigError(
            f"--resume with a config that differs from the checkpoint's ({what}); the resumed run would mix "
            "the two. Resume with the same config (only a larger 'epochs', 'device' or 'out' may change), or "
            "train into a new --out"
        )
    before, now = saved.get("epochs"), config.get("epochs")
    if isinstance(before, int) and isinstance(now, int) and now < before:
        raise ConfigError(
            f"--resume with epochs {now} < the {before} the run was started with: its checkpoint may hold more "
            "epochs than that, whose result would be returned; raise epochs to continue, or train into a new --out"
        )


def check_fresh(out: Path) -> None:
    """Refuse a fresh run into an output directory that holds an earlier run's files."""
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found:
        raise ConfigError(
            f"{out} already holds a run ({', '.join(found)}); a new run would overwrite it. Pass --resume to "
            "continue it, --overwrite to replace it, or choose another --out"
        )


def run_from_config(
    config: RunConfig, resume: bool = False, progress: bool = True, overwrite: bool = False
) -> TrainResult:
    """``polytask train``: one run described by a :class:`RunConfig`. With ``out``: ``resume`` continues the
    run there (same config but a larger ``epochs``), otherwise a directory holding a run is refused unless
    ``overwrite``."""
    # validate every name and option before building anything, so a typo fails in milliseconds
    models.MODELS.get(config.arch)
    balancing.BALANCERS.get(config.method)
    config = check_config_options(config)
    data = create_dataset(config.dataset, **config.dataset_options)
    if config.tasks:
        data = data.select(config.tasks)
    config = resolve_training(config, data.info.get("train_defaults"))
    out = Path(config.out) if config.out else None
    resolved = json.loads(json.dumps(config.__dict__))
    writer = (process_group() or (0, 1))[0] == 0  # under torchrun, process 0 writes
    if out is not None:
        out = check_writable(out, "the output directory (out / --out)")
    lock = directory_lock(out, "polytask train") if out is not None and writer else contextlib.nullcontext()
    with lock:  # one run writes into an output directory at a time
        if out is not None and resume:
            check_resumable(out, resolved)
        elif out is not None and not overwrite:
            check_fresh(out)
        if out is not None and writer:
            write_json(out / "config.json", resolved)
        return train_run(
            data,
            config.arch,
            config.method,
            config.seed,
            config,
            config.arch_options,
            config.method_options,
            out,
            progress=progress,
            resume=resume,
        )
