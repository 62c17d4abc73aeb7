"""Task grouping: which tasks to train together under an inference budget (Standley et al. 2020; TAG,
Fifty et al. 2021). ``polytask group`` runs :func:`run_grouping`."""

from polytask.grouping.run import run_grouping, run_seed, tag_affinities, train_group
from polytask.grouping.search import (
    Candidate,
    affinity_candidates,
    best_networks,
    brute_force,
    higher_order_estimates,
    score,
    served_partition,
)
from polytask.grouping.tag import lookahead_affinity

__all__ = [
    "Candidate",
    "affinity_candidates",
    "best_networks",
    "brute_force",
    "higher_order_estimates",
    "lookahead_affinity",
    "run_grouping",
    "run_seed",
    "score",
    "served_partition",
    "tag_affinities",
    "train_group",
]
