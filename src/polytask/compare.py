"""``polytask compare``: single-task baselines (cached), then every method x architecture x seed, scored
by test metrics and ΔMTL (positive = better than single-task) and written as results.json,
leaderboard.md and report.html.

Baseline convention: for each architecture, the single-task network of the same backbone is trained on
each task alone with the same settings and seeds; the baseline score of a metric is its mean over seeds.
The dense designs (Cross-Stitch, NDDR, MTAN, ...) all share one baseline, the plain residual network
``hps_resnet`` with one task (registered as their ``baseline``), so their ΔMTL values compare directly.
Each multi-task run's ΔMTL is computed on test against that mean, over primary tasks; the leaderboard
shows its mean ± sample standard deviation over seeds. Model selection of every run uses validation data.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from polytask import __version__, balancing, models
from polytask.config import DEFAULT_METHODS, CompareConfig, resolve_training
from polytask.data import MultiTaskData, cache_dir
from polytask.data import create as create_dataset
from polytask.data.base import config_hash
from polytask.errors import CheckpointError, ConfigError
from polytask.metrics.delta import CONVENTIONS, defined_directions, delta_m, delta_mtl
from polytask.report.leaderboard import group_not_run
from polytask.report.summary import SCHEMA, summarize
from polytask.runs import check_config_options, train_run
from polytask.saved_runs import SavedRuns
from polytask.training.pairing import pairing_problem
from polytask.utils import check_writable, directory_lock, files_fingerprint, resolve_device, write_json

STL_METHOD = "ew"


def _resolve(registry, names: list[str]) -> list[str]:
    """Expand ``all`` and check every name (an unknown one raises, listing the valid names)."""
    out: list[str] = []
    for name in names:
        if name.lower() == "all":
            expanded = registry.available()
        else:
            registry.get(name)
            expanded = [name.lower()]
        out += [n for n in expanded if n not in out]
    return out


def resolve_methods(names: list[str]) -> list[str]:
    return _resolve(balancing.BALANCERS, names)


def resolve_archs(names: list[str]) -> list[str]:
    return _resolve(models.MODELS, names)


def default_methods(archs: list[str]) -> list[str]:
    """Without ``--methods``: the default method set for one architecture, equal weighting for several."""
    return list(DEFAULT_METHODS) if len(archs) == 1 else ["ew"]


# the no-option architecture of a dataset: the first of these that can run it
DEFAULT_ARCHS = ("hps_cnn", "hps_resnet", "mmoe", "dupn", "hps_mlp")


def archs_for_data(names: list[str] | None, data: MultiTaskData) -> list[str]:
    """The architectures to run on ``data``: ``all`` means every compatible one; a named architecture
    that cannot run the dataset is an error giving the reason; ``None``: the dataset's default."""
    tasks, shape = data.tasks, data.input_shape
    if names is None:
        for name in DEFAULT_ARCHS:
            if models.incompatibility(name, tasks, shape) is None:
                return [name]
        raise ConfigError(f"no default architecture runs dataset {data.name!r}; pass --archs")
    out: list[str] = []
    for name in names:
        if name.lower() == "all":
            out += [n for n in models.compatible(tasks, shape) if n not in out]
            continue
        models.MODELS.get(name)
        reason = models.incompatibility(name, tasks, shape)
        if reason is not None:
            raise ConfigError(
                f"architecture {name!r} cannot run dataset {data.name!r}: {reason}. "
                f"Architectures for it: {', '.join(models.compatible(tasks, shape))}"
            )
        if name.lower() not in out:
            out.append(name.lower())
    return out


def baseline_arch(arch: str) -> str:
    """The architecture whose one-task networks are ``arch``'s single-task baseline: the one registered as
    its ``baseline`` (the dense designs share the plain residual network, as in Vandenhende et al. 2021,
    so their ΔMTL values are comparable), else ``arch`` itself."""
    return models.MODELS.meta(arch).get("baseline", arch)


def _scores_from_json(result: dict[str, Any]) -> dict[str, Any]:
    """JSON stores NaN metrics (e.g. AUC with one class present) as null; map them back to NaN."""
    for key in ("test_scores", "val_scores"):
        if result.get(key):
            result[key] = {
                t: {m: (float("nan") if v is None else v) for m, v in ms.items()} for t, ms in result[key].items()
            }
    return result


def _mean_scores(results: list[dict]) -> dict[str, dict[str, float]]:
    tasks = results[0]
    return {t: {m: statistics.fmean(r[t][m] for r in results) for m in tasks[t]} for t in tasks}


#: CompareConfig fields a run's result does not depend on: which runs to make (archs, methods, seeds, tasks
#: and auxiliary roles enter each run's key as its own arch, method, seed and task list; arch_options and
#: method_options as that arch's and method's options), where to write, whether to use the cache, and
#: how to sort the leaderboard. Every other field is in the key (tests/test_compare_cache_key.py).
NOT_IN_RUN_KEY = frozenset(
    {"archs", "methods", "seeds", "tasks", "auxiliary", "arch_options", "method_options", "out", "cache", "delta"}
)


class Comparison:
    """Runs a :class:`CompareConfig`; ``run()`` returns the results dictionary (also written to disk)."""

    def __init__(self, config: CompareConfig, progress: bool = True, log: Callable[[str], None] = print):
        self.methods = resolve_methods(config.methods) if config.methods is not None else None
        self.archs = None if config.archs is None else resolve_archs(config.archs)  # names checked now
        self.config = config = check_config_options(config)  # bad options fail before any training
        self.out = Path(config.out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S"))
        self.progress, self.log = progress, log
        self.saved = SavedRuns(log)

    # ------------------------------------------------------------------------------------ plumbing
    def _settings_key(self) -> dict[str, Any]:
        """What every run's result depends on besides its own arch/method/seed/tasks: every field of the
        resolved config except those that only choose which runs to make or how to show them
        (:data:`NOT_IN_RUN_KEY`; a field added later is in the key unless listed there), the device kind
        the numbers come from, and the versions of polytask and torch."""
        c = self.config
        key = {f.name: getattr(c, f.name) for f in dataclasses.fields(c) if f.name not in NOT_IN_RUN_KEY}
        key["device"] = resolve_device(c.device).type  # cuda:0 and cuda:1 give the same numbers
        key["torch"] = torch.__version__
        if isinstance(c.dataset_options.get("path"), str):  # files you download: changed in place, a miss
            key["data_files"] = files_fingerprint(c.dataset_options["path"])
        return key

    def _cached_run(self, key: dict[str, Any], run_dir: Path, cache_file: Path | None, fn) -> dict[str, Any]:
        """Reuse a finished run (same key) from ``cache_file`` or ``run_dir``; resume an interrupted one."""
        digest = config_hash(key)
        use_cache = cache_file is not None and self.config.cache
        for candidate in ([cache_file] if use_cache else []) + [run_dir / "result.json"]:
            saved = self.saved.result(candidate, digest)
            if saved is not None:
                if use_cache and candidate != cache_file and not cache_file.exists():
                    write_json(cache_file, saved)  # killed after the run's result, before its cache entry
                return _scores_from_json(saved)
        resume = (run_dir / "checkpoint.pt").exists() and self.saved.key_matches(run_dir / "key.json", digest)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "key.json", {"key_hash": digest, "key": key})
        try:
            result = fn(run_dir, resume)
        except CheckpointError:
            result = fn(run_dir, False)
        result.extra["key_hash"] = digest
        saved = json.loads(json.dumps(result.to_dict(), default=float))
        write_json(run_dir / "result.json", saved)
        if use_cache:
            write_json(cache_file, saved)
        return _scores_from_json(saved)

    # ------------------------------------------------------------------------------------ the job
    def run(self) -> dict[str, Any]:
        # before any training: an unwritable place would otherwise fail after minutes of it
        self.out = check_writable(self.out, "the output directory (--out)")  # ~ expanded
        if self.config.cache:
            check_writable(cache_dir() / "stl", "the cache directory ($POLYTASK_CACHE; or pass --no-cache)")
        with directory_lock(self.out, "polytask compare"):  # one comparison writes into an --out at a time
            return self._run()

    def _run(self) -> dict[str, Any]:
        start = time.perf_counter()
        data = create_dataset(self.config.dataset, **self.config.dataset_options)
        if self.config.tasks:
            data = data.select(self.config.tasks)
        if self.config.auxiliary:
            data = data.with_auxiliary(self.config.auxiliary)
        self.config = c = resolve_training(self.config, data.info.get("train_defaults"))
        names = [t.name for t in data.tasks]
        self.archs = archs_for_data(c.archs, data)
        if self.methods is None:
            self.methods = default_methods(self.archs)
            if len(self.archs) > 1:
                self.log(f"comparing {len(self.archs)} architectures with equal weighting (pass --methods for others)")
        self.config = c = dataclasses.replace(c, archs=list(self.archs), methods=list(self.methods))  # as run
        for kind, options, chosen in (("method", c.method_options, self.methods), ("arch", c.arch_options, self.archs)):
            unused = [name for name in options if name.lower() not in chosen]
            if unused:
                run = ", ".join(chosen)
                self.log(f"{kind}_options for {', '.join(unused)} not used: not among the {kind}s run ({run})")
        self.pairs, self.not_run = self._runnable_pairs(data)
        stl_archs = list(dict.fromkeys(baseline_arch(a) for a, _ in self.pairs))
        total = len(c.seeds) * (len(stl_archs) * len(names) + len(self.pairs))
        bar = tqdm(total=total, desc="runs", disable=not self.progress, dynamic_ncols=True)
        baselines: dict[str, Any] = {}
        for arch in stl_archs:
            baselines[arch] = self._baseline(data, arch, bar)
        runs: list[dict[str, Any]] = []
        for arch, method in self.pairs:
            for seed in c.seeds:
                bar.set_description(f"{method} / {arch} / seed {seed}")
                runs.append(self._mtl_run(data, arch, method, seed, baselines[baseline_arch(arch)]))
                bar.update()
        bar.close()
        results = self._assemble(data, baselines, runs, time.perf_counter() - start)
        write_json(self.out / "results.json", results)
        from polytask.report import write_report

        write_report(results, self.out)
        return results

    def _runnable_pairs(self, data: MultiTaskData) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
        """The (architecture, method) pairs that can train together, and the others with the reason
        (e.g. MGDA-UB on a model without one shared representation), decided before any training. The
        others are left out and named in the log and the report; none left is an error."""
        c = self.config
        names = [t.name for t in data.tasks]
        pairs: list[tuple[str, str]] = []
        skipped: list[dict[str, str]] = []
        for arch in self.archs:
            model = models.create(arch, data.tasks, data.input_shape, **c.arch_options.get(arch, {}))
            for method in self.methods:
                balancer = balancing.create(method, tasks=names, **c.method_options.get(method, {}))
                problem = pairing_problem(model, balancer, data.tasks)
                if problem is None:
                    pairs.append((arch, method))
                else:
                    skipped.append({"arch": arch, "method": method, "reason": problem})
        if not pairs:
            raise ConfigError(
                "no requested method can train a requested architecture on dataset "
                f"{data.name!r}: " + "; ".join(group_not_run(skipped))
            )
        for line in group_not_run(skipped):
            self.log(f"not run: {line}")
        return pairs, skipped

    def _baseline(self, data: MultiTaskData, arch: str, bar) -> dict[str, Any]:
        c = self.config
        per_task: dict[str, list[dict]] = {}
        for task in data.tasks:
            single = data.select([task.name])
            for seed in c.seeds:
                bar.set_description(f"single-task {task.name} / {arch} / seed {seed}")
                key = {
                    "kind": "stl",
                    "version": __version__,
                    "arch": arch,
                    "arch_options": c.arch_options.get(arch, {}),
                    "task": task.name,
                    "seed": seed,
                    **self._settings_key(),
                }
                run_dir = self.out / "baselines" / arch / task.name / f"seed{seed}"
                cache_file = cache_dir() / "stl" / f"{config_hash(key)}.json"
                res = self._cached_run(
                    key,
                    run_dir,
                    cache_file,
                    lambda d, r, s=single, sd=seed: train_run(
                        s, arch, STL_METHOD, sd, c, c.arch_options.get(arch), None, d, progress=False, resume=r
                    ),
                )
                per_task.setdefault(task.name, []).append({"seed": seed, **res})
                bar.update()
        return {
            "test": {t: _mean_scores([r["test_scores"] for r in rs])[t] for t, rs in per_task.items()},
            "val": {t: _mean_scores([r["val_scores"] for r in rs])[t] for t, rs in per_task.items()},
            "params": sum(rs[0]["params"] for rs in per_task.values()),
            "ms_per_step": sum(statistics.fmean(r["ms_per_step"] for r in rs) for rs in per_task.values()),
            "ms_per_image": sum(
                statistics.fmean(r.get("extra", {}).get("ms_per_image", float("nan")) for r in rs)
                for rs in per_task.values()
            ),
            "runs": {
                t: [
                    {
                        k: r[k]
                        for k in ("seed", "test_scores", "val_scores", "best_epoch", "params", "ms_per_step", "history")
                    }
                    for r in rs
                ]
                for t, rs in per_task.items()
            },
        }

    def _mtl_run(self, data: MultiTaskData, arch: str, method: str, seed: int, baseline: dict) -> dict[str, Any]:
        c = self.config
        key = {
            "kind": "mtl",
            "version": __version__,
            "arch": arch,
            "arch_options": c.arch_options.get(arch, {}),
            "method": method,
            "method_options": c.method_options.get(method, {}),
            "seed": seed,
            "tasks": [t.name for t in data.tasks],
            "auxiliary": [t.name for t in data.tasks if t.role == "auxiliary"],
            "baseline_val": baseline["val"],
            **self._settings_key(),
        }
        run_dir = self.out / "runs" / arch / method / f"seed{seed}"
        res = self._cached_run(
            key,
            run_dir,
            None,
            lambda d, r: train_run(
                data,
                arch,
                method,
                seed,
                c,
                c.arch_options.get(arch),
                c.method_options.get(method),
                d,
                baseline_val_scores=baseline["val"],
                progress=False,
                resume=r,
            ),
        )
        directions = {t.name: t.directions for t in data.tasks if t.role == "primary"}
        directions, undefined = defined_directions(baseline["test"], directions)
        if undefined:
            self.log(f"ΔMTL of {method}/{arch} leaves out {', '.join(undefined)}: the single-task baseline is 0 there")
        return {
            "method": method,
            "arch": arch,
            "seed": seed,
            "delta_mtl": delta_mtl(res["test_scores"], baseline["test"], directions) if directions else float("nan"),
            "delta_m": delta_m(res["test_scores"], baseline["test"], directions) if directions else float("nan"),
            "delta_mtl_excludes": undefined,
            **{
                k: res[k]
                for k in (
                    "test_scores",
                    "val_scores",
                    "best_epoch",
                    "params",
                    "ms_per_step",
                    "skipped_batches",
                    "history",
                )
            },
            "ms_per_image": res.get("extra", {}).get("ms_per_image"),
            "baseline_arch": baseline_arch(arch),
        }

    def _assemble(self, data: MultiTaskData, baselines: dict, runs: list[dict], seconds: float) -> dict[str, Any]:
        results = {
            "schema": SCHEMA,
            "polytask_version": __version__,
            "created": datetime.now().isoformat(timespec="seconds"),
            "wall_seconds": seconds,
            "delta_mtl_convention": {
                "delta_mtl": CONVENTIONS["p"],
                "delta_m": CONVENTIONS["m"],
                "baseline": "the single-task network of the architecture's baseline, mean over seeds",
                "leaderboard": self.config.delta,
            },
            "config": dataclasses.asdict(self.config),
            "dataset": data.name,
            "tasks": [{"name": t.name, "kind": t.kind, "role": t.role, "metrics": t.directions} for t in data.tasks],
            "baselines": baselines,
            "runs": runs,
            "not_run": self.not_run,
        }
        results["summary"] = summarize(results, self.config.delta)
        return results
