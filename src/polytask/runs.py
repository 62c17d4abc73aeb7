"""One training run from names and options: the glue the CLI uses (``polytask train`` and ``compare``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from polytask import balancing, models
from polytask.config import RunConfig, TrainSettings, resolve_training
from polytask.data import MultiTaskData
from polytask.data import create as create_dataset
from polytask.errors import ConfigError
from polytask.training import Trainer, TrainResult
from polytask.training.cost import ms_per_input
from polytask.training.pairing import check_pairing
from polytask.utils import process_group, resolve_device, seed_everything, write_json


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
            f"architecture {arch!r} is searched before training, which runs in one process: train it without "
            "torchrun"
        )
    if hasattr(model, "search"):  # architectures searched before training (AdaShare, MTL-NAS, ...)
        device = resolve_device(settings.device)
        model.to(device).search(data.train, settings.batch_size, settings.lr, seed, progress, device)
    trainer = Trainer(
        model,
        data.tasks,
        balancer,
        data.train,
        data.val,
        data.test,
        epochs=settings.epochs,
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
    if out_dir is not None:
        write_json(Path(out_dir) / "result.json", result.to_dict())
    return result


def run_from_config(config: RunConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """``polytask train``: one run described by a :class:`RunConfig`."""
    # validate every name before building anything, so a typo fails in milliseconds
    models.MODELS.get(config.arch)
    balancing.BALANCERS.get(config.method)
    data = create_dataset(config.dataset, **config.dataset_options)
    if config.tasks:
        data = data.select(config.tasks)
    config = resolve_training(config, data.info.get("train_defaults"))
    out = Path(config.out) if config.out else None
    if out is not None and (process_group() or (0, 1))[0] == 0:  # under torchrun, process 0 writes
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config.__dict__, indent=2))
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
