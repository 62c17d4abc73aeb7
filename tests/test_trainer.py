"""Trainer: resume equals an uninterrupted run, selection on validation, logs, bad input."""

import json

import pytest
import torch

import polytask as pt
from polytask.training.checkpoint import load_checkpoint


def make_trainer(data, method="ew", out_dir=None, epochs=3, arch="hps_mlp", seed=0, **kw):
    pt.seed_everything(seed)
    model = pt.models.create(arch, tasks=data.tasks, input_shape=data.input_shape, dropout=0.1)
    balancer = pt.balancing.create(method, tasks=[t.name for t in data.tasks])
    return pt.Trainer(
        model,
        data.tasks,
        balancer,
        data.train,
        data.val,
        data.test,
        epochs=epochs,
        batch_size=32,
        lr=3e-3,
        out_dir=out_dir,
        progress=False,
        seed=seed,
        **kw,
    )


@pytest.mark.parametrize(
    "method",
    ["ew", "uw", "dwa", "dtp", "lbtw", "rlw", "famo", "gls", "gradnorm", "gradvac", "nash_mtl", "imtl", "pcgrad"],
)
def test_resume_equals_uninterrupted_run(method, tiny_data, tmp_path):
    full = make_trainer(tiny_data, method, tmp_path / "full", epochs=4).fit()
    make_trainer(tiny_data, method, tmp_path / "part", epochs=2).fit()
    # a new process would rebuild everything from scratch: different init seed on purpose
    resumed_trainer = make_trainer(tiny_data, method, tmp_path / "part", epochs=4, seed=0)
    with torch.no_grad():
        for p in resumed_trainer.model.parameters():
            p.normal_()
    resumed = resumed_trainer.fit(resume=True)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    assert [h["weights"] for h in resumed.history] == [h["weights"] for h in full.history]
    assert resumed.test_scores == full.test_scores and resumed.best_epoch == full.best_epoch
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    log = [json.loads(line) for line in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]  # no duplicated epochs after resume


def test_logs_checkpoint_and_result_files(tiny_data, tmp_path):
    result = make_trainer(tiny_data, "dwa", tmp_path, epochs=2).fit()
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    assert set(rows[0]) >= {"epoch", "train_loss", "weights", "val_loss", "val", "selection_score", "ms_per_step"}
    assert set(rows[0]["weights"]) == {"left", "right", "sum"}
    header = (tmp_path / "log.csv").read_text().splitlines()[0].split(",")
    assert "train_loss/sum" in header and "val/left/accuracy" in header and "weights/left" in header
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["best_epoch"] == result.best_epoch and saved["params"] == result.params
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert {"model", "optimizer", "balancer", "rng", "epoch"} <= set(ckpt) and ckpt["epoch"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_model_selection_uses_validation_never_test(tiny_data):
    base = make_trainer(tiny_data, epochs=4).fit()
    # same training, scrambled test labels: selection and validation scores must not move
    test = pt.data.Split(tiny_data.test.inputs, {k: v.flip(0) for k, v in tiny_data.test.targets.items()})
    data = pt.data.MultiTaskData("x", tiny_data.tasks, tiny_data.input_shape, tiny_data.train, tiny_data.val, test)
    other = make_trainer(data, epochs=4).fit()
    assert other.best_epoch == base.best_epoch and other.val_scores == base.val_scores
    assert other.test_scores != base.test_scores
    best = max(base.history, key=lambda h: h["selection_score"])
    assert base.best_epoch == best["epoch"] and base.val_scores == best["val"]


def test_selection_against_single_task_baseline(tiny_data):
    trainer = make_trainer(
        tiny_data,
        epochs=2,
        baseline_val_scores={
            "left": {"accuracy": 0.5, "macro_f1": 0.5},
            "right": {"accuracy": 0.5, "macro_f1": 0.5},
            "sum": {"mae": 2.0, "rmse": 2.5, "rounded_accuracy": 0.2},
        },
    )
    result = trainer.fit()
    h = result.history[0]
    expected = pt.metrics.delta_mtl(h["val"], trainer.baseline_val_scores, trainer.directions)
    assert h["selection_score"] == pytest.approx(expected)


def _nan_split(split, row):
    x = split.inputs.clone()
    x[row] = float("nan")
    return pt.data.Split(x, split.targets)


def test_nan_loss_stops_naming_task_and_step(tiny_data):
    data = pt.data.MultiTaskData(
        "x", tiny_data.tasks, tiny_data.input_shape, _nan_split(tiny_data.train, 0), tiny_data.val, tiny_data.test
    )
    with pytest.raises(pt.NonFiniteLossError, match=r"task\(s\) left, right, sum at epoch 1, step \d+"):
        make_trainer(data, epochs=1).fit()
    result = make_trainer(data, epochs=2, on_nonfinite="skip").fit()
    assert result.skipped_batches == 2  # one poisoned batch per epoch
    assert all(h["skipped_batches"] == 1 for h in result.history)


def test_checkpoint_errors(tiny_data, tmp_path):
    with pytest.raises(pt.CheckpointError, match="does not exist"):
        make_trainer(tiny_data, out_dir=tmp_path).fit(resume=True)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(pt.CheckpointError, match="corrupt or unreadable"):
        make_trainer(tiny_data, out_dir=tmp_path).fit(resume=True)
    with pytest.raises(pt.PolytaskError, match="resume=True needs out_dir"):
        make_trainer(tiny_data).fit(resume=True)


def test_interrupted_checkpoint_write_leaves_the_old_file(tiny_data, tmp_path, monkeypatch):
    make_trainer(tiny_data, out_dir=tmp_path, epochs=1).fit()
    before = (tmp_path / "checkpoint.pt").read_bytes()

    def crash(fd):  # the process dies after the new bytes went to the temporary file, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr("polytask.utils.os.fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tiny_data, out_dir=tmp_path, epochs=1).fit()
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_trainer_rejects_mismatched_setup(tiny_data):
    model = pt.models.create("hps_mlp", tasks=tiny_data.tasks, input_shape=tiny_data.input_shape)
    with pytest.raises(pt.PolytaskError, match="balancer tasks"):
        pt.Trainer(
            model, tiny_data.tasks, pt.balancing.create("ew", tasks=["left", "right"]), tiny_data.train, tiny_data.val
        )
    uw = pt.balancing.create("uw", tasks=[t.name for t in tiny_data.tasks])
    with pytest.raises(pt.PolytaskError, match="optimizer lacks the uw balancer's learnable parameters"):
        pt.Trainer(
            model,
            tiny_data.tasks,
            uw,
            tiny_data.train,
            tiny_data.val,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        )
    with pytest.raises(pt.PolytaskError, match="on_nonfinite"):
        pt.Trainer(
            model,
            tiny_data.tasks,
            pt.balancing.create("ew", tasks=[t.name for t in tiny_data.tasks]),
            tiny_data.train,
            tiny_data.val,
            on_nonfinite="ignore",
        )


def test_uw_log_variances_are_trained_by_the_trainer(tiny_data):
    trainer = make_trainer(tiny_data, "uw", epochs=2)
    trainer.fit()
    assert not torch.allclose(trainer.balancer.log_vars.detach(), torch.zeros(3))


def test_plain_pytorch_loop_without_trainer(tiny_data):
    """The README's plain-loop example: balancer.backward in a user's own loop."""
    torch.manual_seed(0)
    tasks = tiny_data.tasks
    model = pt.models.create("hps_mlp", tasks=tasks, input_shape=tiny_data.input_shape)
    balancer = pt.balancing.create("famo", tasks=[t.name for t in tasks])
    opt = torch.optim.Adam([*model.parameters(), *balancer.parameters()], lr=3e-3)
    first = None
    for _ in range(3):
        for x, y in pt.data.BatchLoader(tiny_data.train, 32, shuffle=True):
            losses = pt.compute_losses(tasks, model(x), y)
            opt.zero_grad()
            balancer.backward(
                losses, shared_params=model.shared_parameters(), task_params=model.task_parameter_groups()
            )
            opt.step()
            with torch.no_grad():
                balancer.post_step(pt.compute_losses(tasks, model(x), y))
            first = first if first is not None else {k: v.item() for k, v in losses.items()}
    assert losses["sum"].item() < first["sum"]
    assert not torch.allclose(balancer.logits, torch.zeros(3))


def test_same_seed_same_numbers(tiny_data):
    a = make_trainer(tiny_data, "rlw", epochs=2, seed=5).fit()
    b = make_trainer(tiny_data, "rlw", epochs=2, seed=5).fit()
    c = make_trainer(tiny_data, "rlw", epochs=2, seed=6).fit()
    assert a.history[-1]["train_loss"] == b.history[-1]["train_loss"] and a.test_scores == b.test_scores
    assert a.history[-1]["train_loss"] != c.history[-1]["train_loss"]


def test_early_stopping_with_patience(tiny_data, tmp_path):
    # lr so small that validation hardly moves: with patience 1 training stops long before 30 epochs
    trainer = make_trainer(tiny_data, "ew", tmp_path / "es", epochs=30, patience=1)
    trainer.optimizer.param_groups[0]["lr"] = 1e-9
    result = trainer.fit()
    trained = result.extra["epochs_trained"]
    assert result.extra["stopped_early"] and trained < 30
    assert trained - result.best_epoch >= 1  # stopped after `patience` epochs without improvement
    assert len(result.history) == trained
    # resuming a stopped run does not train further
    again = make_trainer(tiny_data, "ew", tmp_path / "es", epochs=30, patience=1).fit(resume=True)
    assert again.extra["epochs_trained"] == trained
    with pytest.raises(pt.PolytaskError, match="patience"):
        make_trainer(tiny_data, "ew", tmp_path / "bad", patience=0)


def test_trainer_refuses_a_method_the_model_cannot_take_before_training(tiny_data):
    """Pairings that could only fail at the first step (or the first epoch's end) fail at construction,
    naming the method, the model and the reason."""
    import dataclasses

    names = [t.name for t in tiny_data.tasks]

    def trainer(arch, method, tasks=tiny_data.tasks, **options):
        model = pt.models.create(arch, tasks=tasks, input_shape=tiny_data.input_shape)
        balancer = pt.balancing.create(method, tasks=names, **options)
        return pt.Trainer(model, tasks, balancer, tiny_data.train, tiny_data.val)

    instead = {"mgda_ub": "; use mgda ", "graddrop": "", "pcgrad": "; use rep_grad=False "}
    for method, options in [("mgda_ub", {}), ("graddrop", {}), ("pcgrad", {"rep_grad": True})]:
        with pytest.raises(pt.ConfigError, match=f"method '{method}' cannot train CrossStitch: ") as error:
            trainer("cross_stitch", method, **options)
        assert "one shared representation" in str(error.value)
        assert ("; use" in str(error.value)) == bool(instead[method]) and instead[method] in str(error.value)
    trainer("hps_mlp", "mgda_ub")  # HPS has z

    class Own(pt.models.MultiTaskModel):  # a user's model that does not say: checked at the first step only
        def __init__(self):
            super().__init__()
            self.tasks, self.body = names, torch.nn.Linear(256, 8)
            self.heads = torch.nn.ModuleDict({t: torch.nn.Linear(8, 10 if t != "sum" else 1) for t in names})

        def forward(self, x):
            self.representation = z = self.body(x.flatten(1))
            return {t: h(z) for t, h in self.heads.items()}

        def shared_parameters(self):
            return self.body.parameters()

        def task_parameters(self, task):
            return self.heads[task].parameters()

    mgda_ub = pt.balancing.create("mgda_ub", tasks=names)
    pt.Trainer(Own(), tiny_data.tasks, mgda_ub, tiny_data.train, tiny_data.val, epochs=1, progress=False).fit()
    trainer("cross_stitch", "pcgrad")  # parameter mode: the stitched columns share the stitch units
    with pytest.raises(pt.ConfigError, match=r"'mgda' cannot train SoftSharing: .*has none .*use a loss weighting"):
        trainer("soft_sharing", "mgda")
    with pytest.raises(pt.ConfigError, match=r"'gradnorm' cannot train SoftSharing: .*shared weight matrix"):
        trainer("soft_sharing", "gradnorm")
    with pytest.raises(pt.ConfigError, match=r"layer=7, but the shared parameters have 2 weight matrices"):
        trainer("hps_mlp", "gradnorm", layer=7)
    no_kpi = [dataclasses.replace(t, kpi=None) if t.name == "sum" else t for t in tiny_data.tasks]
    with pytest.raises(pt.ConfigError, match=r"'dtp' cannot train HPS: it needs a KPI .* task\(s\) sum have none"):
        trainer("hps_mlp", "dtp", tasks=no_kpi)


def test_device_errors_name_the_device():
    from polytask.utils import resolve_device

    with pytest.raises(pt.PolytaskError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(pt.PolytaskError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_batches_without_labels_of_a_task_leave_it_absent(tiny_data):
    """A task with no labelled sample in a batch is absent there: the balancer gets None as its loss (the
    method on the present tasks: MGDA still moves the encoder, where a zero loss with a zero gradient gave
    d = 0), the Trainer counts such batches per epoch, and the task's epoch loss is the mean over the
    batches that had its labels."""
    import dataclasses
    import warnings

    targets = dict(tiny_data.train.targets)
    targets["sum"] = torch.full_like(targets["sum"], float("nan"))
    targets["sum"][0] = tiny_data.train.targets["sum"][0]  # one labelled row: 5 of the 6 batches have none
    data = dataclasses.replace(tiny_data, train=pt.data.Split(tiny_data.train.inputs, targets))
    trainer = make_trainer(data, "mgda", epochs=2)
    calls = []
    backward = trainer.balancer.backward

    def spy(losses, **kw):
        w = backward(losses, **kw)
        moved = sum(float(p.grad.abs().sum()) for p in trainer.shared_params if p.grad is not None)
        calls.append((losses["sum"] if isinstance(losses, dict) else losses[2].detach(), w.clone(), moved))
        return w

    trainer.balancer.backward = spy
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = trainer.fit()
    assert [r["unlabelled_batches"] for r in result.history] == [{"sum": 5}, {"sum": 5}]
    absent = [c for c in calls if c[0] is None]
    assert len(absent) == 10 and all(w[2] == 0 and moved > 0 for _, w, moved in absent)
    (labelled_loss,) = [float(c[0]) for c in calls[:6] if c[0] is not None]
    assert result.history[0]["train_loss"]["sum"] == pytest.approx(labelled_loss, rel=1e-6)
    assert "unlabelled_batches" not in make_trainer(tiny_data, "ew", epochs=1).fit().history[0]


def test_batches_without_any_label_are_skipped(tiny_data):
    import dataclasses

    targets = {k: v.clone() for k, v in tiny_data.train.targets.items()}
    for t in targets.values():  # only row 0 is labelled: 5 of the 6 batches carry no label of any task
        t[1:] = -100 if t.dtype == torch.long else float("nan")
    data = dataclasses.replace(tiny_data, train=pt.data.Split(tiny_data.train.inputs, targets))
    result = make_trainer(data, "mgda", epochs=1).fit()
    assert result.history[0]["steps"] == 1
    assert result.history[0]["unlabelled_batches"] == {"left": 5, "right": 5, "sum": 5}
    for t in targets.values():
        t[0] = -100 if t.dtype == torch.long else float("nan")
    with pytest.raises(pt.PolytaskError, match=r"no batch could be trained \(6 without any label"):
        make_trainer(data, "mgda", epochs=1).fit()
