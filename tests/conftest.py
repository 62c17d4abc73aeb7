import atexit
import os
import shutil
import tempfile

import pytest
import torch

# every test run gets its own cache (datasets, single-task baselines), never the user's
os.environ["POLYTASK_CACHE"] = tempfile.mkdtemp(prefix="polytask-test-cache-")
atexit.register(shutil.rmtree, os.environ["POLYTASK_CACHE"], ignore_errors=True)  # not left behind in /tmp
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_data():
    """A small multidigits instance shared by the training tests."""
    import polytask as pt

    return pt.data.create("multidigits", n_train=192, n_val=96, n_test=96)


@pytest.fixture
def build_trainer():
    """``build_trainer(data, method="ew", arch="hps_mlp", epochs=1, out_dir=None, **trainer_options)``: a
    seeded Trainer (batch 32, lr 1e-3) for the tests of runs, resume and non-finite values."""
    import polytask as pt

    def build(data, method="ew", arch="hps_mlp", epochs=1, out_dir=None, **options):
        pt.seed_everything(0)
        model = pt.models.create(arch, tasks=data.tasks, input_shape=data.input_shape)
        balancer = pt.balancing.create(method, tasks=[t.name for t in data.tasks])
        settings = {"epochs": epochs, "batch_size": 32, "lr": 1e-3, "progress": False, "seed": 0, **options}
        return pt.Trainer(model, data.tasks, balancer, data.train, data.val, data.test, out_dir=out_dir, **settings)

    return build
