"""The README's Python examples run as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_ten_line_gradient_method_loop_runs_and_learns():
    block = next(b for b in python_blocks() if '"upgrad"' in b)
    assert len([line for line in block.strip().splitlines() if line and not line.startswith(("import", "from"))]) <= 11
    scope: dict = {"__name__": "readme"}
    torch.manual_seed(0)
    exec(compile(block, "README.md", "exec"), scope)
    z = scope["encoder"](scope["x"])
    final = [((h(z)[:, 0] - scope["y"][:, k]) ** 2).mean().item() for k, h in enumerate(scope["heads"])]
    assert all(f < 0.95 * scope["y"][:, k].pow(2).mean().item() for k, f in enumerate(final))  # both tasks learnt
    assert torch.isfinite(scope["weights"]).all()


def test_plain_loop_example_runs_and_learns():
    block = next(b for b in python_blocks() if '"famo"' in b and "balancer.backward" in b)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["weights"].shape == (3,) and torch.isfinite(scope["weights"]).all()
    assert not torch.allclose(scope["balancer"].logits, torch.zeros(3))  # FAMO's logits were updated


def test_trainer_example_runs(tmp_path, monkeypatch):
    block = next(b for b in python_blocks() if "pt.Trainer" in b)
    block = block.replace(
        'pt.data.create("multidigits")', 'pt.data.create("multidigits", n_train=128, n_val=64, n_test=64)'
    )
    block = block.replace("epochs=20", "epochs=1, progress=False")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["result"].best_epoch == 1 and (tmp_path / "runs" / "famo" / "checkpoint.pt").exists()
