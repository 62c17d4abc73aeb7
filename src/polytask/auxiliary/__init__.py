"""Auxiliary learning: MAXL (generated auxiliary labels, Liu et al. 2019)."""

from polytask.auxiliary.maxl import MAXL, LabelGenerator, entropy_regulariser, focal_loss, masked_log_softmax

__all__ = ["MAXL", "LabelGenerator", "entropy_regulariser", "focal_loss", "masked_log_softmax"]
