"""The reproduction scripts' shared plumbing: jobs on several processes give the numbers of one process,
in job order; errors surface; the budget line reports what each model was given."""

import pytest
import torch

import polytask as pt
from polytask.errors import PolytaskError
from polytask.reproduction import budget_line, mean_std, run_jobs


def tiny_training(seed: int, epochs: int) -> dict:
    data = pt.data.create("mmoe_synthetic", p=0.5, seed=seed, n_train=256, n_val=64, n_test=64)
    pt.seed_everything(seed)
    model = pt.models.create("mmoe", tasks=data.tasks, input_shape=data.input_shape, n_experts=2, experts=(4,))
    balancer = pt.balancing.create("ew", tasks=[t.name for t in data.tasks])
    trainer = pt.Trainer(
        model, data.tasks, balancer, data.train, data.val, data.test,
        epochs=epochs, batch_size=32, device="cpu", progress=False, seed=seed,
    )  # fmt: skip
    result = trainer.fit()
    return {
        "mse": result.test_scores["y1"]["mse"],
        "threads": torch.get_num_threads(),
        "best_epoch": result.best_epoch,
        "epochs_trained": result.extra["epochs_trained"],
        "steps": result.extra["steps"],
    }


def failing(x: int) -> int:
    if x == 2:
        raise ValueError("job 2 is broken")
    return x


def test_workers_give_the_numbers_of_one_process_in_job_order():
    jobs = [(seed, 2) for seed in (3, 1, 2)]
    serial = run_jobs(tiny_training, jobs, workers=1)
    parallel = run_jobs(tiny_training, jobs, workers=2)
    assert serial == parallel  # bit-identical, whatever the executor
    assert len({r["mse"] for r in serial}) == 3  # the seeds differ, so the order is checked too
    assert all(r["threads"] == 1 for r in serial)  # one torch thread per job, here too
    assert serial[0]["steps"] == 2 * 8  # 256 rows / batch 32, two epochs


def test_errors_surface_and_bad_workers_are_refused():
    with pytest.raises(ValueError, match="job 2 is broken"):
        run_jobs(failing, [(1,), (2,), (3,)], workers=2)
    with pytest.raises(PolytaskError, match="workers"):
        run_jobs(failing, [(1,)], workers=0)
    assert run_jobs(failing, [(1,), (3,)], workers=2) == [1, 3]


def test_budget_line_and_mean_std_by_hand():
    runs = [
        {"epochs_trained": 20, "steps": 200, "best_epoch": 20},
        {"epochs_trained": 14, "steps": 140, "best_epoch": 8},
    ]
    assert budget_line("base", runs) == (
        "base: 14–20 epochs, 140–200 optimiser steps, selected epoch 8–20 (the last epoch in 1/2 seeds)"
    )
    assert mean_std([1.0, 3.0]) == "2.0000 ± 1.4142"
    assert mean_std([0.5]) == "0.5000 ± 0.0000"


def test_scripts_refuse_fewer_than_two_seeds():
    import subprocess
    import sys
    from pathlib import Path

    for script in sorted((Path(__file__).resolve().parents[1] / "examples").glob("reproduce_*.py")):
        run = subprocess.run([sys.executable, str(script), "--seeds", "1"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and "--seeds must be at least 2" in run.stderr, script.name
