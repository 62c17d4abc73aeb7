"""polytask: multi-task learning in PyTorch.

import polytask as pt
data = pt.data.create("multidigits")
model = pt.models.create("hps_cnn", tasks=data.tasks, input_shape=data.input_shape)
balancer = pt.balancing.create("dwa", tasks=[t.name for t in data.tasks])
result = pt.Trainer(model, data.tasks, balancer, data.train, data.val, data.test, epochs=5).fit()
"""

from polytask import balancing, data, features, metrics, models
from polytask.errors import (
    CheckpointError,
    ConfigError,
    EmptyShareError,
    NonFiniteGradientError,
    NonFiniteLossError,
    NoTaskPresentError,
    PolytaskError,
    SolverError,
    TaskMismatchError,
    UnknownNameError,
)
from polytask.tasks import Task, compute_losses
from polytask.training import Trainer, TrainResult, evaluate
from polytask.utils import seed_everything

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "EmptyShareError",
    "NoTaskPresentError",
    "NonFiniteGradientError",
    "NonFiniteLossError",
    "PolytaskError",
    "SolverError",
    "Task",
    "TaskMismatchError",
    "TrainResult",
    "Trainer",
    "UnknownNameError",
    "__version__",
    "balancing",
    "compute_losses",
    "data",
    "evaluate",
    "features",
    "metrics",
    "models",
    "seed_everything",
]
