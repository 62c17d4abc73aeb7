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
