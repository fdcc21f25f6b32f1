"""`frugalign bench dpo`: the base policy against DPO trained on the whole labelled pool of a
gold-oracle task; gold reward on held-out prompts, KL to the base, and gold reward against the
number of labelled pairs consumed."""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np

from frugalign.bench.common import (
    BenchRuns,
    add_task_arguments,
    bench_task,
    gold_over_seeds,
    plot_frontier,
    seeds_of,
    task_settings,
)
from frugalign.bench.results import machine_info
from frugalign.config import load_config
from frugalign.console import console, summary_table
from frugalign.data import PreferenceExample, tokenize_preferences
from frugalign.evaluate.gold import gold_eval


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_arguments(parser, default="arith")
    parser.add_argument("--tau", type=float, default=0.0, help="annotator temperature (0: noiseless)")
    parser.add_argument("--loss", choices=["dpo", "ipo", "simpo", "orpo"], default="dpo",
                        help="pairwise loss (simpo, orpo: no reference model)")
    parser.add_argument("--beta", type=float, default=None, help="override the task's beta (simpo: its reward scale, "
                                                                 "e.g. 2; orpo: lambda, e.g. 0.1)")
    parser.add_argument("--simpo-gamma", type=float, default=0.5, help="simpo: the target reward margin")
    parser.add_argument("--learning-rate", type=float, default=None, help="override the task's default")
    parser.add_argument("--num-epochs", type=int, default=None, help="override the task's default")
    parser.add_argument("--curve-points", type=int, default=4, help="gold evaluations during training")
    parser.add_argument("--out", type=str, default="bench-dpo.json", help="result JSON (a PNG is written beside it)")


def tokenize_pool(task, pool: list[dict]) -> list[dict]:
    examples = [PreferenceExample(p["prompt"], p["chosen"], p["rejected"]) for p in pool]
    rows, _ = tokenize_preferences(examples, task.tokenizer, 512, 512, f"{task.name} pool", "error")
    return rows


def run_seed(args, seed: int, workdir: Path) -> tuple[list[dict], dict]:
    """Base and DPO runs of one seed, in the run schema of docs/benchmarks.md, and the settings they used."""
    task = bench_task(args, seed)
    settings = task_settings(task, args, quick_epochs=1)
    from frugalign.recipes.configs import DPOConfig  # here, not above: `--help` must not load torch (cli.py)
    from frugalign.training.dpo import train_dpo

    t0 = time.perf_counter()
    base = gold_eval(task, task.model, task.eval_prompts, samples_per_prompt=task.eval_samples, seed=seed)
    base_run = {
        "method": "base", "seed": seed, "params": {}, "gold_reward": base.mean, "gold_reward_ci95": base.ci95,
        "kl": 0.0, "queries": 0, "generations": 0,
        "time_s": {"total": time.perf_counter() - t0, "generation": 0.0, "scoring": 0.0, "training": 0.0}, "curve": [],
    }

    pool, ties = task.labelled_pool(tau=args.tau, seed=seed)
    rows = tokenize_pool(task, pool)
    config = load_config(DPOConfig, output_dir=str(workdir / f"{args.loss}-seed{seed}"), seed=seed, loss=args.loss,
                         simpo_gamma=args.simpo_gamma, logging_steps=10, **settings)
    steps = config.epochs.num_epochs * -(-len(rows) // config.train.batch_size)
    config.eval.eval_steps = max(1, steps // max(1, args.curve_points))
    reference = task.model
    policy = copy.deepcopy(task.model)  # a trainable copy; task.model stays the base (reference, KL)
    curve: list[dict] = []
    began = time.perf_counter()

    def gold_curve(model) -> dict[str, float]:
        # the engine calls this every eval_steps steps and once at the end
        step = min(steps, (len(curve) + 1) * config.eval.eval_steps)
        ev = gold_eval(task, model, task.eval_prompts, ref_model=reference, samples_per_prompt=task.eval_samples,
                       seed=seed, progress=False)
        # every label is bought before training: the queries are the pool; the x axis is pairs trained on
        curve.append({"queries": len(pool), "pairs_seen": step * config.train.batch_size, "generations": 0,
                      "time_s": time.perf_counter() - began, "gold_reward": ev.mean, "gold_reward_ci95": ev.ci95,
                      "kl": ev.kl})
        return {"gold_reward": ev.mean, "kl": ev.kl}

    _, result = train_dpo(config, policy, task.tokenizer, rows, eval_fn=gold_curve)
    final = curve[-1]
    dpo_run = {
        "method": args.loss, "seed": seed, "params": {"tau": args.tau, "ties_dropped": ties},
        "gold_reward": final["gold_reward"], "gold_reward_ci95": final["gold_reward_ci95"], "kl": final["kl"],
        "queries": len(pool), "generations": 0,
        "time_s": {"total": time.perf_counter() - began, "generation": 0.0, "scoring": 0.0, "training": result.seconds},
        "curve": curve,
    }
    return [base_run, dpo_run], settings


def summarise(runs: list[dict]) -> dict:
    summary: dict = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        mine = [r for r in runs if r["method"] == method]
        summary[method] = {**gold_over_seeds(mine), "kl": float(np.mean([r["kl"] for r in mine]))}
    methods = list(summary)
    if len(methods) == 2:
        base, trained = (summary[m] for m in methods)
        summary["improvement"] = trained["gold_reward"] - base["gold_reward"]
    return summary


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right, frontier_ax) = plt.subplots(1, 3, figsize=(15, 4))
    methods = [m for m in result["summary"] if m != "improvement"]
    means = [result["summary"][m]["gold_reward"] for m in methods]
    errors = [result["summary"][m]["gold_reward_ci95"] for m in methods]
    left.bar(methods, means, yerr=errors, capsize=6, color=["#999999", "#1f77b4"][: len(methods)])
    left.set_ylabel("gold reward (held-out prompts)")
    left.set_title(f"{result['task']}: base vs {methods[-1]} ({len(result['seeds'])} seed(s))")
    for run in result["runs"]:
        if run["curve"]:
            pairs = [0] + [p["pairs_seen"] for p in run["curve"]]
            base = next(r["gold_reward"] for r in result["runs"] if r["method"] == "base" and r["seed"] == run["seed"])
            right.plot(pairs, [base] + [p["gold_reward"] for p in run["curve"]], marker="o", label=f"seed {run['seed']}")
    right.set_xlabel("labelled pairs trained on (epochs revisit the pool)")
    right.set_ylabel("gold reward")
    right.set_title("gold reward during training")
    right.legend()
    plot_frontier(frontier_ax, result["runs"], lambda r: r["method"])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    seeds = seeds_of(args)
    done = BenchRuns("dpo", args)
    with tempfile.TemporaryDirectory(prefix="frugalign-bench-") as tmp:
        for seed in seeds:
            if done.find(seed=seed, method=args.loss):
                continue
            seed_runs, settings = run_seed(args, seed, Path(tmp))
            for run in seed_runs:
                done.add(run, {"tau": args.tau, "loss": args.loss, **settings, "simpo_gamma": args.simpo_gamma,
                               "curve_points": args.curve_points,
                               "model": args.model, "prompts": args.prompts, "gold_reward": args.gold_reward})
    runs = [done.find(seed=seed, method=method) for seed in seeds for method in ("base", args.loss)]
    result = {
        "bench": "dpo", "task": args.task, "mode": "quick" if args.quick else "full", "seeds": seeds,
        "config": done.config, "bench_seconds": done.seconds(),
        "machine": machine_info(), "runs": runs, "summary": summarise(runs),
    }
    out = done.finish(result)
    png = out.with_suffix(".png")
    plot(result, png)
    table = {f"{m} gold reward": f"{v['gold_reward']:.3f} ± {v['gold_reward_ci95']:.3f} (KL {v['kl']:.2f})"
             for m, v in result["summary"].items() if m != "improvement"}
    console.print(summary_table(f"bench dpo · {args.task} · seeds {seeds}", {**table, "results": str(out), "plot": str(png)}))
    return 0
