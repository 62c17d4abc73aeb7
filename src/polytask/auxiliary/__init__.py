"""Auxiliary learning: MAXL (generated auxiliary labels, Liu et al. 2019) and Auto-λ (meta-learned task
weights, Liu et al. 2022)."""

from polytask.auxiliary.auto_lambda import AutoLambda
from polytask.auxiliary.maxl import MAXL, LabelGenerator, entropy_regulariser, focal_loss, masked_log_softmax

__all__ = ["MAXL", "AutoLambda", "LabelGenerator", "entropy_regulariser", "focal_loss", "masked_log_softmax"]
