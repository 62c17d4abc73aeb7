"""Resume and run files (issue 19): a torn log line does not block resume (item 8)."""

import json

import polytask as pt


def _trainer(data, out, epochs):
    pt.seed_everything(0)
    model = pt.models.create("hps_mlp", tasks=data.tasks, input_shape=data.input_shape)
    balancer = pt.balancing.create("ew", tasks=[t.name for t in data.tasks])
    return pt.Trainer(
        model,
        data.tasks,
        balancer,
        data.train,
        data.val,
        data.test,
        epochs=epochs,
        batch_size=32,
        lr=1e-3,
        out_dir=out,
        progress=False,
        seed=0,
    )


def test_a_torn_last_log_line_does_not_block_resume(tiny_data, tmp_path):
    full = _trainer(tiny_data, tmp_path / "full", 3).fit()
    _trainer(tiny_data, tmp_path / "part", 2).fit()
    log = tmp_path / "part" / "log.jsonl"
    with log.open("a") as f:  # a kill or a full disk during an append
        f.write('{"epoch": 3, "train_loss": {"left": 0.5')
    assert pt.training.logs.EpochLogger(tmp_path / "part").read()[-1]["epoch"] == 2  # the torn line left out
    resumed = _trainer(tiny_data, tmp_path / "part", 3).fit(resume=True)
    assert resumed.test_scores == full.test_scores
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    csv_rows = (tmp_path / "part" / "log.csv").read_text().splitlines()
    assert len(csv_rows) == 4 and csv_rows[0].startswith("epoch,")
