"""Plumbing shared by the reproduction scripts in ``examples/``: run one training per (setting, seed) on
every local core, and print a budget line and paired verdicts (:mod:`polytask.paired`).

Each job runs with one torch thread, in this process or in a worker, so a seed gives the same numbers
whatever ``workers`` is (the Standards' determinism rule). Jobs are plain functions of picklable
arguments that return picklable results; the order of the results is the order of the jobs.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from polytask.errors import PolytaskError
from polytask.paired import PairedResult, paired
from polytask.utils import write_json


def local_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _one_thread(fn: Callable[..., Any], args: tuple) -> Any:
    torch.set_num_threads(1)
    return fn(*args)


def run_jobs(
    fn: Callable[..., Any], jobs: Sequence[tuple], workers: int | None = None, desc: str = "runs"
) -> list[Any]:
    """``[fn(*job) for job in jobs]``, on ``workers`` processes (default: every local core; 1 runs them
    here), with a progress bar. A failed job raises its error after the others are cancelled."""
    workers = local_cores() if workers is None else workers
    if workers < 1:
        raise PolytaskError(f"workers must be >= 1, got {workers}")
    jobs = [tuple(job) for job in jobs]
    bar = tqdm(total=len(jobs), desc=desc, unit="run", leave=False, dynamic_ncols=True)
    try:
        if workers == 1 or len(jobs) <= 1:
            threads = torch.get_num_threads()
            try:
                results = []
                for job in jobs:
                    results.append(_one_thread(fn, job))
                    bar.update()
                return results
            finally:
                torch.set_num_threads(threads)
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
            futures = [pool.submit(_one_thread, fn, job) for job in jobs]
            try:
                for future in futures:
                    future.add_done_callback(lambda _: bar.update())
                return [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    finally:
        bar.close()


def check_seeds(parser, seeds: int) -> None:
    """Refuse fewer than 2 seeds up front (a paired interval needs two), before any training."""
    if seeds < 2:
        parser.error(f"--seeds must be at least 2 for paired intervals, got {seeds}")


def mean_std(values: Iterable[float]) -> str:
    """``mean ± std`` over seeds (std 0 for one seed)."""
    values = list(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {std:.4f}"


def budget_line(name: str, runs: Sequence[Mapping[str, Any]]) -> str:
    """What a model's runs were given and used: epochs trained, optimiser steps and the selected epoch
    (min–max over seeds), from TrainResult-like records with ``epochs_trained``, ``steps``, ``best_epoch``."""

    def span(key: str) -> str:
        values = [int(r[key]) for r in runs]
        low, high = min(values), max(values)
        return str(low) if low == high else f"{low}–{high}"

    at_last = sum(int(r["best_epoch"]) == int(r["epochs_trained"]) for r in runs)
    return (
        f"{name}: {span('epochs_trained')} epochs, {span('steps')} optimiser steps, selected epoch "
        f"{span('best_epoch')} (the last epoch in {at_last}/{len(runs)} seeds)"
    )


def verdict(
    claim: str,
    a: str,
    a_values: Sequence[float],
    b: str,
    b_values: Sequence[float],
    higher_is_better: bool,
    margin: float = 0.0,
    equivalent: bool = False,
    digits: int = 4,
) -> PairedResult:
    """Print the paired verdict on ``claim`` (``a`` better than ``b``, or about equal) and return it."""
    result = paired(a_values, b_values, higher_is_better, a, b, margin=margin, equivalent=equivalent)
    print("  " + result.line(claim, digits), flush=True)
    return result


def save_records(out: str | Path, jobs: Sequence[tuple], records: Sequence[Any]) -> Path:
    """Write every job's arguments and result to ``out/records.json`` (to re-analyse without re-training)."""
    path = Path(out).expanduser() / "records.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, [{"job": list(job), "result": record} for job, record in zip(jobs, records)])
    return path


class Stopwatch:
    """Wall time since creation, for the scripts' closing line."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __str__(self) -> str:
        seconds = time.perf_counter() - self.start
        return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"
