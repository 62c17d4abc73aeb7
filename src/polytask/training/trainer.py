"""The Trainer: wires model, tasks, balancer and optimizer; adds devices, progress, validation, model
selection, logs, checkpoints and exact resume. Everything it calls is usable without it."""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from polytask.balancing.base import Balancer
from polytask.balancing.jacobian import all_reduce_mean, average_gradients
from polytask.data.base import BatchLoader, Split
from polytask.errors import NonFiniteGradientError, NonFiniteLossError, NoTaskPresentError, PolytaskError
from polytask.metrics.delta import relative_gains
from polytask.models.base import MultiTaskModel, count_parameters
from polytask.tasks import Task, add_intermediate_losses, complete_tasks, compute_losses, unlabelled_tasks
from polytask.training.checkpoint import load_checkpoint, require_keys, rng_state, save_checkpoint, set_rng_state
from polytask.training.evaluation import EvalResult, evaluate, move_batch
from polytask.training.finite import buffer_snapshot, check_finite_losses, check_finite_model, gradients_finite
from polytask.training.logs import EpochLogger
from polytask.training.pairing import check_pairing
from polytask.utils import launched_processes, process_group, resolve_device, write_json

Scores = dict[str, dict[str, float]]


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns (and writes to ``result.json``)."""

    best_epoch: int
    val_scores: Scores
    test_scores: Scores | None
    history: list[dict[str, Any]]
    params: int
    ms_per_step: float
    skipped_batches: int
    train_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def selection_score(scores: Scores, reference: Scores, directions: Mapping[str, Mapping[str, bool]]) -> float:
    """ΔMTL of ``scores`` against ``reference`` (percent, higher is better); metrics whose reference is
    zero or not finite are left out (they have no relative change)."""
    usable = {
        t: {
            m: d
            for m, d in dirs.items()
            if math.isfinite(reference[t][m]) and reference[t][m] != 0 and math.isfinite(scores[t][m])
        }
        for t, dirs in directions.items()
    }
    usable = {t: d for t, d in usable.items() if d}
    if not usable:
        return float("nan")
    gains = relative_gains(scores, reference, usable)
    return sum(gains.values()) / len(gains)


# the training state a checkpoint carries besides the model, optimizer, balancer and RNG states
RESUMED = (
    "epoch",
    "history",
    "best_epoch",
    "best_score",
    "best_model",
    "reference",
    "steps",
    "train_seconds",
    "skipped",
)


class Trainer:
    """Train ``model`` on ``tasks`` with ``balancer``.

    Args:
        train, val, test: a :class:`~polytask.data.Split` (batched here with ``batch_size``, shuffled per
            epoch from ``seed``) or any iterable of ``(inputs, {task: target})`` batches (a DataLoader;
            ``set_epoch`` is called on it or its sampler when present).
        optimizer: defaults to Adam(lr) over the model's and the balancer's parameters.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ...; ``amp``: bfloat16 autocast on CUDA.
        out_dir: where ``log.jsonl``, ``log.csv``, ``checkpoint.pt`` (every epoch, atomic) and
            ``result.json`` go; ``None`` keeps everything in memory (no resume).
        baseline_val_scores: single-task validation scores; model selection then maximises validation
            ΔMTL against them (else against the first epoch's validation scores). Primary tasks only;
            test data are never used for selection.
        on_nonfinite: ``raise`` (stop, naming task, epoch and step) or ``skip`` (drop the batch, count it).
        patience: early stopping — stop after this many epochs without a better validation score (the best
            epoch is restored either way); ``None`` trains all ``epochs``.
    """

    def __init__(
        self,
        model: MultiTaskModel,
        tasks: Sequence[Task],
        balancer: Balancer,
        train: Split | Iterable,
        val: Split | Iterable,
        test: Split | Iterable | None = None,
        *,
        epochs: int = 20,
        batch_size: int = 64,
        lr: float = 2e-3,
        optimizer: torch.optim.Optimizer | None = None,
        device: str | torch.device = "auto",
        amp: bool = False,
        out_dir: str | Path | None = None,
        baseline_val_scores: Scores | None = None,
        on_nonfinite: Literal["raise", "skip"] = "raise",
        progress: bool = True,
        seed: int = 0,
        eval_batch_size: int = 1024,
        patience: int | None = None,
    ):
        if epochs < 1:
            raise PolytaskError(f"epochs must be >= 1, got {epochs}")
        group = process_group()
        self.rank, self.world = group or (0, launched_processes())
        if self.world > 1:
            if group is None:
                raise PolytaskError(
                    f"this process is one of {self.world} (WORLD_SIZE) but no process group is initialised: call "
                    "torch.distributed.init_process_group() before building the Trainer (polytask train does it)"
                )
            if not isinstance(train, Split):
                raise PolytaskError(
                    "under torch.distributed the Trainer needs the training data as a Split (it gives each process "
                    "an equal share of every batch)"
                )
        if patience is not None and patience < 1:
            raise PolytaskError(f"patience must be >= 1 or None, got {patience}")
        self.patience = patience
        if on_nonfinite not in ("raise", "skip"):
            raise PolytaskError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
        names = [t.name for t in tasks]
        if list(balancer.tasks) != names:
            raise PolytaskError(f"balancer tasks {balancer.tasks} differ from the Trainer's tasks {names}")
        model_tasks = getattr(model, "tasks", names)
        if sorted(model_tasks) != sorted(names):
            raise PolytaskError(f"model tasks {model_tasks} differ from the Trainer's tasks {names}")
        check_pairing(model, balancer, tasks)
        self.device = resolve_device(device)
        if amp and self.device.type != "cuda":
            warnings.warn("amp=True has no effect on CPU; training in float32", stacklevel=2)
        self.amp = amp and self.device.type == "cuda"
        if self.amp and hasattr(balancer, "computed_in"):  # gradient methods cut G's rank at bf16's precision
            balancer.computed_in = torch.bfloat16
        self.model = model.to(self.device)
        self.balancer = balancer.to(self.device)
        self.tasks = list(tasks)
        self.primary = [t for t in self.tasks if t.role == "primary"] or self.tasks
        self.epochs, self.seed, self.progress = epochs, seed, progress and self.rank == 0
        self.on_nonfinite = on_nonfinite
        self.baseline_val_scores = baseline_val_scores
        self.train_batches = self._batches(train, batch_size, shuffle=True, shard=(self.rank, self.world))
        self.val_batches = self._batches(val, eval_batch_size, shuffle=False)
        self.test_batches = None if test is None else self._batches(test, eval_batch_size, shuffle=False)
        groups = model.param_groups(lr) if hasattr(model, "param_groups") else [{"params": list(model.parameters())}]
        balancer_params = list(balancer.parameters())
        self.optimizer = optimizer or torch.optim.Adam(
            groups + ([{"params": balancer_params}] if balancer_params else []), lr=lr
        )
        in_opt = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        if any(id(p) not in in_opt for p in balancer.parameters()):
            raise PolytaskError(
                f"the optimizer lacks the {balancer.name} balancer's learnable parameters; "
                "add balancer.parameters() to it"
            )
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.writes = self.out_dir is not None and self.rank == 0  # one process writes logs and checkpoints
        self.logger = EpochLogger(self.out_dir) if self.writes else None
        self.shared_params = list(model.shared_parameters())
        self.task_params = model.task_parameter_groups()
        self.directions = {t.name: t.directions for t in self.primary}
        # tasks with no missing target anywhere in the training split skip the per-batch check
        self.complete = complete_tasks(self.tasks, train.targets) if isinstance(train, Split) else frozenset()

    def _batches(self, data, batch_size: int, shuffle: bool, shard: tuple[int, int] = (0, 1)):
        if isinstance(data, Split):
            return BatchLoader(data, batch_size, shuffle=shuffle, seed=self.seed, shard=shard)
        return data

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "checkpoint.pt"

    # ------------------------------------------------------------------------------------ public API
    def evaluate(self, batches: Split | Iterable) -> EvalResult:
        """Per-task metrics and losses of the current model on ``batches``."""
        if isinstance(batches, Split):
            batches = BatchLoader(batches, 1024)
        return evaluate(self.model, self.tasks, batches, self.device, self.amp)

    def fit(self, resume: bool = False) -> TrainResult:
        """Train for ``epochs`` (continuing from ``out_dir/checkpoint.pt`` when ``resume``), restore the
        epoch with the best validation score and evaluate it on the test split."""
        state = self._initial_state(resume)
        for epoch in range(state["epoch"], self.epochs):
            if self._patience_exhausted(state):  # checked first, so a resumed run stops where it stopped
                break
            record = self._train_epoch(epoch, state)
            state["history"].append(record)
            state["epoch"] = epoch + 1
            if self.logger is not None:
                self.logger.write(state["history"])
            if self.checkpoint_path is not None:
                if self.writes:
                    self._save(state)
                if self.world > 1:  # the others wait until the checkpoint is on disk
                    dist.barrier()
        return self._finish(state)

    # ------------------------------------------------------------------------------------ internals
    def _patience_exhausted(self, state: dict[str, Any]) -> bool:
        """True when the last ``patience`` finished epochs brought no better validation score."""
        return (
            self.patience is not None
            and state["epoch"] > 0
            and state["epoch"] - 1 - state["best_epoch"] >= self.patience
        )

    def _initial_state(self, resume: bool) -> dict[str, Any]:
        if resume:
            if self.checkpoint_path is None:
                raise PolytaskError("resume=True needs out_dir (where checkpoint.pt lives)")
            ckpt = load_checkpoint(self.checkpoint_path, map_location=self.device)
            require_keys(ckpt, ("model", "optimizer", "balancer", "rng", *RESUMED), self.checkpoint_path)
            try:
                self.model.load_state_dict(ckpt["model"])
                self.optimizer.load_state_dict(ckpt["optimizer"])
                self.balancer.load_state_dict(ckpt["balancer"])
            except (RuntimeError, KeyError, ValueError) as exc:
                raise PolytaskError(
                    f"checkpoint {self.checkpoint_path} does not fit this model/optimizer/balancer: {exc}"
                ) from exc
            set_rng_state(ckpt["rng"])
            state = {k: ckpt[k] for k in RESUMED}
            if ckpt.get("best_is_current"):  # saved without a second copy of the same weights
                state["best_model"] = copy.deepcopy(self.model.state_dict())
            if self.logger is not None:  # the checkpoint's history: a torn or longer log is replaced
                self.logger.write(state["history"])
            return state
        torch.manual_seed(self.seed)
        if self.logger is not None:
            self.logger.reset()
        return {
            "epoch": 0,
            "history": [],
            "best_epoch": -1,
            "best_score": -math.inf,
            "best_model": None,
            "reference": self.baseline_val_scores,
            "steps": 0,
            "train_seconds": 0.0,
            "skipped": 0,
        }

    def _save(self, state: dict[str, Any]) -> None:
        # when the epoch just finished is the best one, its weights are the model's: store them once
        best_is_current = state["best_epoch"] == state["epoch"] - 1
        save_checkpoint(
            self.checkpoint_path,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "balancer": self.balancer.state_dict(),
                "rng": rng_state(),
                **state,
                "best_model": None if best_is_current else state["best_model"],
                "best_is_current": best_is_current,
            },
        )

    def _training_losses(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict:
        """The task losses of one forward pass, with the model's deep-supervision terms added."""
        losses = compute_losses(self.tasks, outputs, targets, self.complete)
        intermediate = self.model.intermediate_outputs() if hasattr(self.model, "intermediate_outputs") else {}
        return add_intermediate_losses(self.tasks, losses, intermediate, targets) if intermediate else losses

    def _train_epoch(self, epoch: int, state: dict[str, Any]) -> dict[str, Any]:
        names = [t.name for t in self.tasks]
        model, balancer, opt = self.model, self.balancer, self.optimizer
        if hasattr(self.train_batches, "set_epoch"):
            self.train_batches.set_epoch(epoch)
        elif hasattr(getattr(self.train_batches, "sampler", None), "set_epoch"):
            self.train_batches.sampler.set_epoch(epoch)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext()
        loss_sum = torch.zeros(len(names), device=self.device)
        weight_sum = torch.zeros(len(names), device=self.device)
        labelled = torch.zeros(len(names), device=self.device)  # per task: batches with its labels here
        weighted = torch.zeros(len(names), device=self.device)  # ... with its labels in any process
        # (batches where every task has them are only counted: full_batches, everywhere)
        kpi_sum, kpi_n = [0.0] * len(names), [0] * len(names)
        unlabelled: dict[str, int] = {}  # batches in which a task had no labelled sample
        check_labels = len(self.complete) < len(self.tasks)
        steps = skipped = no_labels = full_batches = everywhere = 0
        model.train()
        start = time.perf_counter()
        bar = tqdm(
            self.train_batches,
            desc=f"epoch {epoch + 1}/{self.epochs}",
            leave=False,
            disable=not self.progress,
            dynamic_ncols=True,
        )
        trained = [p for group in opt.param_groups for p in group["params"]]
        for step, (x, targets) in enumerate(bar):
            x, targets = move_batch(x, targets, self.device)
            # a skipped batch leaves no trace: its forward would update BatchNorm's running statistics
            restore = buffer_snapshot(model) if self.on_nonfinite == "skip" else None
            with autocast:
                outputs = model(x)
            losses = self._training_losses(outputs, targets)
            stacked = torch.stack([losses[n] for n in names])  # task order checked by compute_losses
            absent = unlabelled_tasks(self.tasks, targets, self.complete) if check_labels else []  # here
            nowhere = absent  # tasks without a label in any process: None to the balancer
            if self.world > 1:  # every process skips or raises alike, and agrees on the absent tasks
                nonfinite, nowhere = self._agree_on_batch(stacked, absent, names)
                if nonfinite:
                    if restore is not None:
                        restore()
                        skipped += 1
                        continue
                    bad = [n for n, ok in zip(names, torch.isfinite(stacked.detach()).tolist()) if not ok]
                    raise NonFiniteLossError(bad or ["(in another process)"], f"epoch {epoch + 1}, step {step + 1}")
            # a task labelled in another process only keeps its zero loss here, still in the graph: this
            # process then joins the per-task backward with a zero share of that task's gradient
            given = {n: None if n in nowhere else losses[n] for n in names} if nowhere else stacked
            opt.zero_grad(set_to_none=True)
            regularization = model.regularization() if hasattr(model, "regularization") else None
            if regularization is not None:  # the architecture's own penalty, outside task balancing
                if not torch.isfinite(regularization):
                    raise NonFiniteLossError(["(architecture regularisation)"], f"epoch {epoch + 1}, step {step + 1}")
                regularization.backward(retain_graph=True)
            try:
                weights = balancer.backward(
                    given,
                    shared_params=self.shared_params,
                    task_params=self.task_params,
                    representation=model.representation if balancer.needs_representation else None,
                )
                if not gradients_finite(trained):  # a finite loss whose gradient is not (any balancer alike)
                    raise NonFiniteGradientError("a gradient holds NaN or inf although every loss is finite")
            except NoTaskPresentError:  # no labelled sample of any task (in any process): nothing to learn
                no_labels += 1
                for name in names:
                    unlabelled[name] = unlabelled.get(name, 0) + 1
                continue
            except (NonFiniteLossError, NonFiniteGradientError) as exc:
                if restore is not None:
                    restore()
                    skipped += 1
                    continue
                if isinstance(exc, NonFiniteGradientError):
                    raise NonFiniteGradientError(f"{exc} (epoch {epoch + 1}, step {step + 1})") from None
                raise NonFiniteLossError(exc.tasks, f"epoch {epoch + 1}, step {step + 1}") from None
            if self.world > 1 and not balancer.averages_over_processes:
                self._average_gradients()
            opt.step()
            if balancer.needs_post_step_losses:
                with torch.no_grad(), autocast:
                    new = self._training_losses(model(x), targets)
                    balancer.post_step({n: None if n in nowhere else new[n] for n in names})
            if absent:
                present = torch.ones(len(names), device=self.device)
                present[[names.index(n) for n in absent]] = 0.0
                loss_sum.add_(stacked.detach() * present)
                labelled.add_(present)
            else:  # the usual case, counted without tensor work
                loss_sum.add_(stacked.detach())
                full_batches += 1
            weight_sum.add_(weights)
            # in any process (the balancer's presence, agreed over processes): weights are the global ones
            if balancer.present is None:
                everywhere += 1
            else:  # a CPU mask: no device sync
                weighted.add_(balancer.present.to(weighted))
                for name, here in zip(names, balancer.present.tolist()):
                    if not here:
                        unlabelled[name] = unlabelled.get(name, 0) + 1
            if balancer.needs_kpis:
                for k, t in enumerate(self.tasks):
                    v = t.kpi_value(outputs[t.name], targets[t.name], targets.get(t.name + "_mask"))
                    if v == v:
                        kpi_sum[k] += v
                        kpi_n[k] += 1
            steps += 1
        seconds = time.perf_counter() - start
        labelled += full_batches
        weighted += everywhere
        if self.world > 1:  # epoch statistics of the global batches
            all_reduce_mean([loss_sum, weight_sum, labelled])
            counts = torch.tensor([kpi_sum, kpi_n], dtype=torch.float64, device=self.device)
            dist.all_reduce(counts)
            kpi_sum, kpi_n = counts[0].tolist(), [int(c) for c in counts[1].tolist()]
        if steps == 0:
            raise PolytaskError(
                f"epoch {epoch + 1}: no batch could be trained ({no_labels} without any label, {skipped} skipped as "
                "non-finite)"
            )
        # epoch means over the batches in which each task had labels (NaN: none this epoch)
        train_loss = dict(zip(names, (loss_sum / labelled).tolist()))
        kpis = {n: (kpi_sum[k] / kpi_n[k] if kpi_n[k] else float("nan")) for k, n in enumerate(names)}
        balancer.epoch_end(losses=train_loss, kpis=kpis if balancer.needs_kpis else None)
        val = self._agreed(evaluate(model, self.tasks, self.val_batches, self.device, self.amp))
        if state["reference"] is None:
            state["reference"] = val.scores
        score = selection_score(val.scores, state["reference"], self.directions)
        improved = state["best_epoch"] < 0 or (score == score and score > state["best_score"])
        if improved:
            state["best_epoch"], state["best_score"] = epoch, score
            state["best_model"] = copy.deepcopy(model.state_dict())
        state["steps"] += steps
        state["train_seconds"] += seconds
        state["skipped"] += skipped
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "weights": dict(zip(names, (weight_sum / weighted).tolist())),  # over the batches it was present in
            "val_loss": val.losses,
            "val": val.scores,
            "selection_score": score,
            "best": improved,
            "steps": steps,
            "skipped_batches": skipped,
            "ms_per_step": 1000 * seconds / steps,
        }
        if balancer.needs_kpis:
            record["kpis"] = kpis
        if check_labels:  # the same keys every epoch (the CSV log's columns)
            record["unlabelled_batches"] = {
                t.name: unlabelled.get(t.name, 0) for t in self.tasks if t.name not in self.complete
            }
        if self.progress:
            tqdm.write(
                f"epoch {epoch + 1}/{self.epochs}  loss "
                + " ".join(f"{n}={v:.4g}" for n, v in train_loss.items())
                + f"  val Δ={score:+.2f}%"
            )
        return record

    def _finish(self, state: dict[str, Any]) -> TrainResult:
        if state["best_model"] is not None:
            self.model.load_state_dict(state["best_model"])
        best = state["history"][state["best_epoch"]]
        check_finite_model(self.model, f"the selected epoch {state['best_epoch'] + 1}")
        check_finite_losses(best["val_loss"], f"validation losses of the selected epoch {state['best_epoch'] + 1}")
        test = None
        if self.test_batches is not None:
            evaluated = self._agreed(evaluate(self.model, self.tasks, self.test_batches, self.device, self.amp))
            check_finite_losses(evaluated.losses, f"test losses of the selected epoch {state['best_epoch'] + 1}")
            test = evaluated.scores
        result = TrainResult(
            best_epoch=state["best_epoch"] + 1,
            val_scores=best["val"],
            test_scores=test,
            history=state["history"],
            params=count_parameters(self.model),
            ms_per_step=1000 * state["train_seconds"] / max(state["steps"], 1),
            skipped_batches=state["skipped"],
            train_seconds=state["train_seconds"],
            extra={
                "epochs_trained": state["epoch"],
                "stopped_early": state["epoch"] < self.epochs,
                "steps": state["steps"],
            },
        )
        if self.writes:
            write_json(self.out_dir / "result.json", result.to_dict())  # type: ignore[operator]
        return result

    # ------------------------------------------------------------------------------------ several processes
    def _agree_on_batch(self, stacked: torch.Tensor, absent: list[str], names: list[str]) -> tuple[bool, list[str]]:
        """One all-reduce: whether any process has a non-finite loss, and the tasks no process has a
        labelled sample of."""
        finite = bool(torch.isfinite(stacked.detach()).all())
        labelled = [0.0 if name in absent else 1.0 for name in names]
        flags = torch.tensor([0.0 if finite else 1.0, *labelled], device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        values = flags.tolist()
        return values[0] > 0, [n for n, labelled in zip(names, values[1:]) if labelled == 0.0]

    def _average_gradients(self) -> None:
        """The mean over processes of every gradient (what DDP does), for balancers whose backward is
        one ordinary backward of this process's losses (loss weightings, GradNorm)."""
        average_gradients([p for g in self.optimizer.param_groups for p in g["params"]])

    def _agreed(self, result: EvalResult) -> EvalResult:
        """Process 0's evaluation, on every process: model selection and early stopping then agree."""
        if self.world == 1:
            return result
        box = [result]
        dist.broadcast_object_list(box, src=0)
        return box[0]
