"""What the gold-oracle benches share: the task options (built-in tasks, or the user's own with
`--task custom --prompts FILE --gold-reward MODULE:FUNCTION [--model M]`), the seeds, the task's
training settings with the command line's overrides, and the reward-against-KL frontier plot."""

from __future__ import annotations

import argparse

import numpy as np

from frugalign.bench.results import ci95
from frugalign.tasks import TASKS, Task, load_task


def add_task_arguments(parser: argparse.ArgumentParser, default: str, default_seeds: str = "0 1 2; quick: 0") -> None:
    parser.add_argument("--task", choices=TASKS, default=default,
                        help="gold-oracle task: arith, sentiment (tiny toy policies, fast); review, smol (the embedded "
                             "SmolLM2, where claims are tested); custom (your --prompts and --gold-reward)")
    parser.add_argument("--model", default=None, help="review, smol, custom: the base policy (hub id or local "
                                                      "checkpoint; default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--prompts", default=None, help="custom: a file with a `prompt` column (JSONL, JSON, CSV, Parquet)")
    parser.add_argument("--gold-reward", default=None, metavar="MODULE:FUNCTION",
                        help="custom: FUNCTION(prompt, response) -> float, from an importable module or a .py file")
    parser.add_argument("--quick", action="store_true", help="one seed, small sizes: a smoke test, not evidence")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help=f"seeds (default: {default_seeds})")


def seeds_of(args: argparse.Namespace) -> list[int]:
    return args.seeds or ([0] if args.quick else [0, 1, 2])


def bench_task(args: argparse.Namespace, seed: int) -> Task:
    """The task of this seed (a custom task's file and function are checked before any model loads)."""
    return load_task(args.task, seed=seed, quick=args.quick, model=args.model, prompts=args.prompts,
                     gold=args.gold_reward)


def task_settings(task: Task, args: argparse.Namespace, quick_epochs: int) -> dict:
    """The task's DPO settings with the command line's overrides; a quick run caps the epochs."""
    settings = dict(task.settings)
    if "learning_rate" in args and args.learning_rate is not None:  # benches without these options keep the task's
        settings["learning_rate"] = args.learning_rate
    if "num_epochs" in args and args.num_epochs is not None:
        settings["num_epochs"] = args.num_epochs
    if args.quick:
        settings["num_epochs"] = min(settings["num_epochs"], quick_epochs)
    return settings


def frontier(runs: list[dict], label) -> dict[str, dict]:
    """Per method (`label(run)`), the seed mean of the final gold reward and KL with their t intervals."""
    out: dict[str, dict] = {}
    for name in dict.fromkeys(label(r) for r in runs):
        mine = [r for r in runs if label(r) == name and r.get("kl") is not None]
        if mine:
            gold, kl = [r["gold_reward"] for r in mine], [r["kl"] for r in mine]
            out[name] = {"gold_reward": float(np.mean(gold)), "gold_reward_ci95": ci95(gold),
                         "kl": float(np.mean(kl)), "kl_ci95": ci95(kl)}
    return out


def plot_frontier(ax, runs: list[dict], label) -> None:
    """Gold reward against KL to the base policy: one point per method (mean over seeds, t intervals on
    both axes), as in the DPO paper's sentiment figure. Better methods sit up and to the left."""
    for name, point in frontier(runs, label).items():
        ax.errorbar(point["kl"], point["gold_reward"], xerr=point["kl_ci95"], yerr=point["gold_reward_ci95"], fmt="o",
                    capsize=3, label=name)
    ax.set_xlabel("KL to the base policy (nats)")
    ax.set_ylabel("gold reward (held-out prompts)")
    ax.set_title("reward against KL (mean over seeds, 95% t intervals)")
    ax.legend(fontsize=7)
