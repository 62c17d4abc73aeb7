"""Task grouping: Standley's budgeted search and higher-order estimates against brute force and values
worked out by hand, TAG's lookahead affinity by hand, and the ``polytask group`` command."""

import itertools
import json
import random

import pytest
import torch
from torch import nn

import polytask as pt
from polytask.cli import main
from polytask.data.task_groups import pair_margin
from polytask.grouping import (
    Candidate,
    affinity_candidates,
    best_networks,
    brute_force,
    higher_order_estimates,
    lookahead_affinity,
    served_partition,
)
from polytask.tasks import Task

SINGLES = {"a": 1.0, "b": 1.0, "c": 1.0}
PAIRS = {
    frozenset("ab"): {"a": 0.5, "b": 0.6},
    frozenset("ac"): {"a": 0.9, "c": 1.2},
    frozenset("bc"): {"b": 0.9, "c": 0.8},
}


def test_higher_order_estimate_and_budgeted_search_by_hand():
    candidates = higher_order_estimates(SINGLES, PAIRS, ["a", "b", "c"])
    abc = next(c for c in candidates if c.tasks == frozenset("abc"))
    assert abc.losses == pytest.approx({"a": 0.7, "b": 0.75, "c": 1.0})  # pair averages
    chosen, total = best_networks(candidates, "abc", budget=1)
    assert [c.tasks for c in chosen] == [frozenset("abc")] and total == pytest.approx(2.45)
    chosen, total = best_networks(candidates, "abc", budget=2)
    assert {c.tasks for c in chosen} == {frozenset("ab"), frozenset("bc")} and total == pytest.approx(0.5 + 0.6 + 0.8)
    # a and b are served by {a, b}; c by {b, c}
    assert served_partition(chosen, "abc") == [["a", "b"], ["c"]]
    with pytest.raises(pt.PolytaskError, match="no set of networks"):
        best_networks([Candidate(frozenset("ab"), {"a": 1, "b": 1}, cost=2.0)], "ab", budget=1)


@pytest.mark.parametrize("seed", range(4))
def test_search_matches_brute_force_on_random_tables(seed):
    rng = random.Random(seed)
    tasks = ["t0", "t1", "t2", "t3"]
    singles = {t: rng.uniform(0.5, 1.5) for t in tasks}
    pairs = {frozenset(p): {t: singles[t] * rng.uniform(0.6, 1.4) for t in p} for p in itertools.combinations(tasks, 2)}
    candidates = higher_order_estimates(singles, pairs, tasks)
    candidates += [Candidate(frozenset([t]), {t: singles[t] * 1.1}, cost=0.5) for t in tasks]  # half-size singles
    for budget in (1, 1.5, 2, 3, 4):
        _, total = best_networks(candidates, tasks, budget)
        assert total == pytest.approx(brute_force(candidates, tasks, budget))


def test_tag_groups_from_affinities():
    tasks = ["a", "b", "c", "d"]
    z = {(i, j): 0.0 for i in tasks for j in tasks}
    z.update({("a", "b"): 0.3, ("b", "a"): 0.2, ("c", "d"): 0.4, ("d", "c"): 0.1})
    z.update({("a", "c"): -0.5, ("c", "a"): -0.4, ("b", "d"): -0.2, ("d", "b"): -0.3})
    chosen, total = best_networks(affinity_candidates(z, tasks), tasks, budget=2)
    assert sorted(sorted(c.tasks) for c in chosen) == [["a", "b"], ["c", "d"]]
    assert -total == pytest.approx(0.3 + 0.2 + 0.4 + 0.1)
    with pytest.raises(pt.PolytaskError):  # without singletons a lone task cannot be served by itself
        best_networks(affinity_candidates(z, ["a"], allow_singletons=False), ["a"], budget=1)


class TwoTaskLinear(pt.models.MultiTaskModel):
    """pred_k = h_k · w · x with a shared scalar w."""

    def __init__(self):
        super().__init__()
        self.tasks = ["t1", "t2"]
        self.w = nn.Parameter(torch.tensor(1.0))
        self.h = nn.ParameterDict({"t1": nn.Parameter(torch.tensor(1.0)), "t2": nn.Parameter(torch.tensor(1.0))})

    def forward(self, x):
        return {t: self.h[t] * self.w * x for t in self.tasks}

    def shared_parameters(self):
        return iter([self.w])

    def task_parameters(self, task):
        return iter([self.h[task]])


def test_tag_lookahead_affinity_by_hand():
    """x = 1, y1 = 3, y2 = 0, w = h1 = h2 = 1, η = 0.1: L1 = 4, L2 = 1; ∂L1/∂w = −4 -> w' = 1.4:
    L1' = 2.56, L2' = 1.96; ∂L2/∂w = 2 -> w' = 0.8: L1' = 4.84, L2' = 0.64."""
    tasks = [Task("t1", "regression"), Task("t2", "regression")]
    model = TwoTaskLinear()
    x, y = torch.tensor([1.0]), {"t1": torch.tensor([3.0]), "t2": torch.tensor([0.0])}
    z = lookahead_affinity(model, tasks, x, y, 0.1, [model.w])
    expected = torch.tensor([[1 - 2.56 / 4, 1 - 1.96 / 1], [1 - 4.84 / 4, 1 - 0.64 / 1]], dtype=torch.float64)
    assert torch.allclose(z, expected)
    # an Adam-matched step divides each gradient by √v̂ + ε: a divisor of 2 is the SGD step at η / 2
    halved = lookahead_affinity(model, tasks, x, y, 0.1, [model.w], scale={id(model.w): torch.tensor(2.0)})
    assert torch.allclose(halved, lookahead_affinity(model, tasks, x, y, 0.05, [model.w]))


def test_task_groups_data_and_margin_check():
    data = pt.data.create("task_groups", seed=3)
    assert data.info["groups"] == [["g0_0", "g0_1"], ["g1_0", "g1_1"], ["g2_0", "g2_1"], ["noise"]]
    assert [t.name for t in data.tasks] == ["g0_0", "g0_1", "g1_0", "g1_1", "g2_0", "g2_1", "noise"]
    groups = [["a", "b"], ["c", "d"]]
    single = dict.fromkeys("abcd", 1.0)
    good = {
        frozenset("ab"): {"a": 0.8, "b": 0.7},
        frozenset("cd"): {"c": 0.8, "d": 0.8},
        frozenset("ac"): {"a": 1.5, "c": 0.9},
        frozenset("ad"): {"a": 1.3, "d": 1.3},
        frozenset("bc"): {"b": 2.0, "c": 1.0},
        frozenset("bd"): {"b": 1.0, "d": 1.4},
    }
    assert pair_margin(single, good, groups, delta=0.1)
    assert not pair_margin(single, {**good, frozenset("ab"): {"a": 0.95, "b": 0.7}}, groups, delta=0.1)
    assert not pair_margin(single, {**good, frozenset("ac"): {"a": 1.05, "c": 0.9}}, groups, delta=0.1)
    # a singleton group (the noise task) is checked like any other: pairing it must hurt someone
    with_noise = [*groups, ["n"]]
    noise_pairs = {frozenset(t + "n"): {t: 1.3, "n": 1.2} for t in "abcd"}
    assert pair_margin({**single, "n": 1.0}, {**good, **noise_pairs}, with_noise, delta=0.1)
    harmless = {**noise_pairs, frozenset("an"): {"a": 1.0, "n": 0.8}}
    assert not pair_margin({**single, "n": 1.0}, {**good, **harmless}, with_noise, delta=0.1)


def test_noise_task_hurts_its_partner_and_itself():
    """The distractor competes for the one feature of the recommended network (issue 20): both lose."""
    data = pt.data.create("task_groups", seed=0)
    arch = data.info["recommended_arch"]["hps_mlp"]

    def test_mse(names):
        tasks = [data.task(n) for n in names]
        pt.seed_everything(0)
        model = pt.models.create("hps_mlp", tasks=tasks, input_shape=data.input_shape, **arch)
        balancer = pt.balancing.create("ew", tasks=names)
        result = pt.Trainer(
            model, tasks, balancer, data.train, data.val, data.test,
            epochs=300, batch_size=60, lr=1e-2, device="cpu", progress=False, seed=0,
        ).fit()  # fmt: skip
        return {n: result.test_scores[n]["mse"] for n in names}

    alone = {**test_mse(["g0_0"]), **test_mse(["noise"])}
    pair = test_mse(["g0_0", "noise"])
    assert pair["g0_0"] > 1.3 * alone["g0_0"] and pair["noise"] > 1.3 * alone["noise"]


def test_group_command_writes_groups_and_heatmaps(tmp_path, capsys):
    config = tmp_path / "group.yaml"
    config.write_text(
        "dataset: task_groups\ndataset_options: {groups: 2, per_group: 2, noise_task: false}\nepochs: 4\n"
    )
    code = main(["group", "--config", str(config), "--budget", "2", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| 0 | pairs |" in printed and "| 0 | tag |" in printed and "True grouping recovered" in printed
    record = json.loads((tmp_path / "grouping.json").read_text())["seeds"][0]
    for method in ("pairs", "tag"):
        assert sorted(t for g in record[method]["groups"] for t in g) == sorted(record["tasks"])
        assert record[method]["measured_test_loss"] > 0 and record[method]["seconds"] > 0
    assert (tmp_path / "pair_gains.png").exists() and (tmp_path / "tag_affinity.png").exists()
    assert isinstance(record["truth_margin_ok"], bool) and "margin check" in printed
    assert main(["group", "--methods", "pairs,clusters", "--out", str(tmp_path)]) == 2  # a clear config error


@pytest.mark.slow
def test_pairwise_grouping_recovers_the_true_groups_in_most_seeds():
    """The acceptance check of ``polytask group --dataset task_groups --budget 4 --seeds 5``: the pairwise
    method (Standley) finds the true grouping in at least 4 of 5 seeds."""
    from polytask.config import GroupConfig
    from polytask.grouping.run import _with_recommendations, run_seed

    config = _with_recommendations(GroupConfig(budget=4, methods=["pairs"]), pt.data.create("task_groups"))
    recovered = [run_seed(config, seed, progress=False)["pairs"]["recovered"] for seed in range(5)]
    assert sum(recovered) >= 4, recovered


def test_group_config_errors():
    from polytask.config import GroupConfig
    from polytask.errors import ConfigError

    for bad in ({"repeats": 0}, {"budget": 0.5}, {"methods": ["pairs", "tga"]}, {"tag_lookahead": "rmsprop"}):
        with pytest.raises(ConfigError):
            GroupConfig(**bad)
