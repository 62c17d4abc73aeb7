"""Training: the Trainer, evaluation, checkpoints and logs."""

from polytask.training.checkpoint import load_checkpoint, save_checkpoint
from polytask.training.evaluation import EvalResult, evaluate
from polytask.training.trainer import Trainer, TrainResult, selection_score

__all__ = ["EvalResult", "TrainResult", "Trainer", "evaluate", "load_checkpoint", "save_checkpoint", "selection_score"]
