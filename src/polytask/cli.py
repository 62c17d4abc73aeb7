"""The ``polytask`` command: ``compare`` (the main job), ``train``, ``group``, ``list``, ``report``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from polytask import balancing, data, models
from polytask.config import DEFAULT_METHODS, CompareConfig, GroupConfig, RunConfig, from_mapping, load_yaml
from polytask.errors import PolytaskError
from polytask.utils import launched_processes


def _csv(text: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return items


def _seeds(text: str) -> list[int]:
    """``3`` -> seeds 0, 1, 2; ``0,5,7`` -> those seeds."""
    try:
        if "," in text:
            return [int(s) for s in _csv(text)]
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count (3) or a list (0,5,7), got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"--seeds must be >= 1, got {n}")
    return list(range(n))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polytask", description="Multi-task learning: compare, train, group, list.")
    sub = parser.add_subparsers(dest="command", required=True)

    cmp = sub.add_parser("compare", help="single-task baselines, then methods x archs x seeds; leaderboard + report")
    cmp.add_argument("--config", help="YAML file with CompareConfig keys (options below override it)")
    cmp.add_argument("--dataset", help="dataset name (default multidigits)")
    cmp.add_argument("--archs", type=_csv, help="comma list of architectures, or 'all' (default hps_cnn)")
    cmp.add_argument(
        "--methods",
        type=_csv,
        help="comma list of balancing methods, or 'all' (default: "
        + ",".join(DEFAULT_METHODS)
        + " for one architecture, ew when comparing several)",
    )
    cmp.add_argument("--seeds", type=_seeds, help="number of seeds (3 = 0,1,2) or a comma list (default 3)")
    cmp.add_argument("--epochs", type=int, help="default: the dataset's recommendation (scenes 12), else 20")
    cmp.add_argument("--batch-size", type=int, dest="batch_size", help="default 64")
    cmp.add_argument("--lr", type=float, help="Adam learning rate (default 2e-3)")
    cmp.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    cmp.add_argument("--out", help="output directory (default runs/<timestamp>)")
    cmp.add_argument(
        "--no-cache",
        action="store_false",
        dest="cache",
        default=None,
        help="retrain single-task baselines even when cached",
    )
    cmp.add_argument(
        "--delta",
        choices=("p", "m"),
        help="ΔMTL that sorts and heads the leaderboard: p (per task, positive = better; default) or m "
        "(per metric, lower = better, as Nash-MTL/CAGrad/FAMO); both are stored",
    )
    cmp.add_argument(
        "--search-budget",
        choices=("extra", "included"),
        dest="search_budget",
        help="searched designs: their search on top of --epochs (extra; default, the papers' protocol) or the "
        "search epochs whose weights stay in the model counted in --epochs (included: a budget-matched run)",
    )
    cmp.add_argument("--quiet", action="store_true", help="no progress bars")

    tr = sub.add_parser("train", help="one training run from a YAML config")
    tr.add_argument("--config", required=True, help="YAML file with RunConfig keys")
    tr.add_argument("--out", help="output directory (overrides the config's 'out')")
    tr.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoint.pt (same config; epochs may grow)"
    )
    tr.add_argument("--overwrite", action="store_true", help="replace an earlier run's files in OUT")
    tr.add_argument("--quiet", action="store_true")

    grp = sub.add_parser("group", help="which tasks to train together under a budget (Standley et al.; TAG)")
    grp.add_argument("--config", help="YAML file with GroupConfig keys (options below override it)")
    grp.add_argument("--dataset", help="dataset name (default task_groups)")
    grp.add_argument("--budget", type=float, help="inference budget in networks (default 3)")
    grp.add_argument("--methods", type=_csv, help="pairs, tag or both (default pairs,tag)")
    grp.add_argument("--arch", help="architecture (default: the dataset's recommendation)")
    grp.add_argument("--seeds", type=_seeds, help="number of seeds or a comma list (default 1)")
    grp.add_argument("--repeats", type=int, help="initialisations averaged per measured network (default 1)")
    grp.add_argument("--epochs", type=int)
    grp.add_argument("--lr", type=float)
    grp.add_argument("--device", help="auto (default), cpu, cuda")
    grp.add_argument("--out", help="output directory (default runs/group)")
    grp.add_argument("--quiet", action="store_true")

    lst = sub.add_parser("list", help="datasets, architectures and methods, one line each; or one entry in full")
    lst.add_argument("names", nargs="*", help="show these entries' descriptions and options with defaults")

    rep = sub.add_parser("report", help="rebuild leaderboard.md and report.html from a results.json")
    rep.add_argument("path", help="results.json or the directory holding it")
    return parser


def _overrides(args: argparse.Namespace, keys: Sequence[str]) -> dict:
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def cmd_compare(args: argparse.Namespace) -> int:
    _single_process("compare")
    from polytask.compare import Comparison
    from polytask.report import leaderboard_markdown

    values = load_yaml(args.config) if args.config else {}
    values.update(
        _overrides(
            args,
            (
                "dataset",
                "archs",
                "methods",
                "seeds",
                "epochs",
                "batch_size",
                "lr",
                "device",
                "out",
                "cache",
                "delta",
                "search_budget",
            ),
        )
    )
    config = from_mapping(CompareConfig, values, args.config or "command line")
    comparison = Comparison(config, progress=not args.quiet)
    start = time.perf_counter()
    results = comparison.run()
    print(leaderboard_markdown(results))
    print(
        f"wall time {time.perf_counter() - start:.1f} s; wrote {comparison.out / 'results.json'}, "
        f"{comparison.out / 'leaderboard.md'}, {comparison.out / 'report.html'}"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from polytask.runs import run_from_config

    values = load_yaml(args.config)
    if args.out:
        values["out"] = args.out
    config = from_mapping(RunConfig, values, args.config)
    if args.resume and not config.out:
        raise PolytaskError("--resume needs an output directory (--out or 'out' in the config)")
    with _process_group(config.device):
        result = run_from_config(config, resume=args.resume, progress=not args.quiet, overwrite=args.overwrite)
    if launched_processes() > 1 and int(os.environ.get("RANK", "0")) != 0:
        return 0  # process 0 reports
    print(f"best epoch {result.best_epoch}; test scores:")
    for task, scores in (result.test_scores or {}).items():
        print(f"  {task}: " + ", ".join(f"{m}={v:.4f}" for m, v in scores.items()))
    if config.out:
        print(f"logs, checkpoint and result.json in {config.out}")
    return 0


@contextlib.contextmanager
def _process_group(device: str):
    """Under torchrun (WORLD_SIZE > 1): the process group (nccl on GPUs, gloo on the CPU) for the run."""
    if launched_processes() <= 1 or dist.is_initialized():
        yield
        return
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def _single_process(command: str) -> None:
    if launched_processes() > 1:
        raise PolytaskError(
            f"polytask {command} runs in one process (it trains many short runs); under torchrun use "
            "polytask train, or launch polytask compare without torchrun"
        )


def cmd_group(args: argparse.Namespace) -> int:
    _single_process("group")
    from polytask.grouping import run_grouping

    values = load_yaml(args.config) if args.config else {}
    keys = ("dataset", "budget", "methods", "arch", "seeds", "repeats", "epochs", "lr", "device", "out")
    values.update(_overrides(args, keys))
    if "budget" in values:
        values["budget"] = float(values["budget"])
    config = from_mapping(GroupConfig, values, args.config or "command line")
    start = time.perf_counter()
    result = run_grouping(config, progress=not args.quiet)
    print(result["summary"])
    print(
        f"wall time {time.perf_counter() - start:.1f} s; wrote {result['out']}/grouping.json, grouping.md and heat-maps"
    )
    return 0


# per registry: the arguments its factories get from the library rather than from options, and the
# config-file key that sets the options
_PASSED = {"dataset": (), "architecture": ("tasks", "input_shape", "spec"), "method": ("tasks",)}
_CONFIG_KEY = {"dataset": "dataset_options", "architecture": "arch_options", "method": "method_options"}


# options every entry of a registry takes besides its own
_EVERY = {
    "dataset": "  labelled = None    ({task: fraction}: keep that task's training labels on a random fraction of\n"
    "                      the samples only; validation and test keep theirs)\n"
    "  label_seed = 0     (the seed of that draw)\n"
}


def cmd_list(args: argparse.Namespace) -> int:
    registries = (("datasets", data.DATASETS), ("architectures", models.MODELS), ("methods", balancing.BALANCERS))
    if args.names:
        for name in args.names:
            found = [r for _, r in registries if name in r]
            if not found:
                raise PolytaskError(
                    f"unknown name {name!r}: not a dataset, architecture or method (polytask list shows them all)"
                )
            for registry in found:
                print(registry.documentation(name, _PASSED[registry.kind], _CONFIG_KEY[registry.kind]))
                print(_EVERY.get(registry.kind, ""))
        return 0
    for title, registry in registries:
        print(f"{title}:")
        for name, desc in registry.describe().items():
            print(f"  {name:<14} {desc}")
    print("\n(polytask list NAME: one entry's description and options with defaults)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from polytask.report import leaderboard_markdown, load_results, write_report
    from polytask.report.summary import recompute

    stored = load_results(args.path)
    results = recompute(stored)  # validated; ΔMTL and the summary from the runs themselves
    if stored.get("summary") != results["summary"]:
        print("note: the stored summary does not follow from the runs (edited?); the report uses the runs")
    out = Path(args.path)
    out = out if out.is_dir() else out.parent
    paths = write_report(results, out)
    print(leaderboard_markdown(results))
    print(f"wrote {paths['leaderboard']} and {paths['report']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {
        "compare": cmd_compare,
        "train": cmd_train,
        "group": cmd_group,
        "list": cmd_list,
        "report": cmd_report,
    }[args.command]
    try:
        return handler(args)
    except PolytaskError as exc:
        print(f"polytask {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"polytask {args.command}: interrupted; finished runs and per-epoch checkpoints are kept", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
