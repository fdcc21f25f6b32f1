"""`frugalign bench dpo`: the base policy against preference losses trained on the whole labelled pool of a
gold-oracle task (DPO by default; IPO, SimPO, ORPO and KTO beside it with `--loss`); gold reward on held-out
prompts, KL to the base, and gold reward against the number of labelled pairs consumed."""

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
    paired_difference,
    paired_text,
    plot_frontier,
    seeds_of,
    task_settings,
)
from frugalign.config import load_config
from frugalign.console import console, summary_table
from frugalign.data import LabelledCompletion, PreferenceExample, tokenize_labelled, tokenize_preferences
from frugalign.errors import UserError
from frugalign.evaluate.gold import gold_eval
from frugalign.results import machine_info
from frugalign.stats import ci95

LOSSES = ("dpo", "ipo", "simpo", "orpo", "kto")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_arguments(parser, default="arith")
    parser.add_argument("--tau", type=float, default=0.0, help="annotator temperature (0: noiseless)")
    parser.add_argument("--loss", nargs="+", choices=LOSSES, default=["dpo"],
                        help="the losses to train, each from the base policy on the same labelled pool: dpo, ipo, kto "
                             "(a frozen reference), simpo, orpo (none); kto learns from each pair split into a "
                             "desirable and an undesirable completion")
    parser.add_argument("--beta", type=float, default=None, help="override the task's beta (the KL strength) of dpo, "
                                                                 "ipo and kto")
    parser.add_argument("--simpo-beta", type=float, default=2.0, help="simpo: the reward scale (its paper: 2 to 2.5)")
    parser.add_argument("--simpo-gamma", type=float, default=1.0, help="simpo: the target reward margin (its paper: "
                                                                       "about half of --simpo-beta)")
    parser.add_argument("--orpo-lambda", type=float, default=0.1, help="orpo: the weight of the odds-ratio term")
    parser.add_argument("--learning-rate", type=float, default=None, help="override the task's default")
    parser.add_argument("--num-epochs", type=int, default=None, help="override the task's default")
    parser.add_argument("--curve-points", type=int, default=4, help="gold evaluations during training")
    parser.add_argument("--out", type=str, default="bench-dpo.json", help="result JSON (a PNG is written beside it)")


def tokenize_pool(task, pool: list[dict]) -> list[dict]:
    examples = [PreferenceExample(p["prompt"], p["chosen"], p["rejected"]) for p in pool]
    rows, _ = tokenize_preferences(examples, task.tokenizer, 512, 512, f"{task.name} pool", "error")
    return rows


def tokenize_unpaired(task, pool: list[dict]) -> list[dict]:
    """KTO's rows from the labelled pool: each pair's chosen completion desirable, its rejected one not (how
    TRL turns preference data into KTO's), so KTO sees the same labels as the pairwise losses."""
    examples = [LabelledCompletion(p["prompt"], completion, desirable)
                for p in pool for completion, desirable in ((p["chosen"], True), (p["rejected"], False))]
    rows, _ = tokenize_labelled(examples, task.tokenizer, 512, 512, f"{task.name} pool", "error")
    return rows


def base_run(task, seed: int) -> dict:
    """The base policy's gold reward on the held-out prompts (its KL to itself is 0)."""
    t0 = time.perf_counter()
    base = gold_eval(task, task.model, task.eval_prompts, samples_per_prompt=task.eval_samples, seed=seed)
    return {
        "method": "base", "seed": seed, "params": {}, "gold_reward": base.mean, "gold_reward_ci95": base.ci95,
        "kl": 0.0, "queries": 0, "generations": 0,
        "time_s": {"total": time.perf_counter() - t0, "generation": 0.0, "scoring": 0.0, "training": 0.0}, "curve": [],
    }


def loss_run(args, task, seed: int, loss: str, pool: list[dict], ties: int, settings: dict, workdir: Path) -> dict:
    """Train a copy of the base policy with `loss` on the whole labelled pool; gold reward and KL to the base
    at `--curve-points` points of training, in the run schema of docs/benchmarks.md."""
    # here, not above: `--help` must not load torch (cli.py)
    from frugalign.engine import micro_batch_size
    from frugalign.options import DPOConfig, KTOConfig
    from frugalign.recipes.kto import train_kto
    from frugalign.training.dpo import train_dpo

    output_dir = str(workdir / f"{loss}-seed{seed}")
    if loss == "kto":
        rows = tokenize_unpaired(task, pool)
        # twice the rows per step: a step is the same pairs (and sequences) as the pairwise losses' step, so every
        # loss gets the same number of optimizer steps and the same schedule
        config = load_config(KTOConfig, output_dir=output_dir, seed=seed, logging_steps=10,
                             **{**settings, "batch_size": 2 * settings["batch_size"]})
        pairs_per_row = 0.5  # a pair is two of KTO's rows
    else:
        rows = tokenize_pool(task, pool)
        beta = {"simpo": args.simpo_beta, "orpo": args.orpo_lambda}.get(loss, settings["beta"])
        config = load_config(DPOConfig, output_dir=output_dir, seed=seed, loss=loss, simpo_gamma=args.simpo_gamma,
                             logging_steps=10, **{**settings, "beta": beta})
        pairs_per_row = 1.0
    step_rows = micro_batch_size(config.train, len(rows)) * config.train.gradient_accumulation_steps  # one process
    steps = config.epochs.num_epochs * -(-len(rows) // step_rows)
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
        curve.append({"queries": len(pool), "pairs_seen": round(step * step_rows * pairs_per_row),
                      "generations": 0, "time_s": time.perf_counter() - began, "gold_reward": ev.mean,
                      "gold_reward_ci95": ev.ci95, "kl": ev.kl})
        return {"gold_reward": ev.mean, "kl": ev.kl}

    train = train_kto if loss == "kto" else train_dpo
    _, result = train(config, policy, task.tokenizer, rows, eval_fn=gold_curve)
    final = curve[-1]
    return {
        "method": loss, "seed": seed, "params": {"tau": args.tau, "ties_dropped": ties, "beta": config.loss.beta},
        "gold_reward": final["gold_reward"], "gold_reward_ci95": final["gold_reward_ci95"], "kl": final["kl"],
        "queries": len(pool), "generations": 0,
        "time_s": {"total": time.perf_counter() - began, "generation": 0.0, "scoring": 0.0, "training": result.seconds},
        "curve": curve,
    }


def summarise(runs: list[dict]) -> dict:
    """Per method, the final gold reward over seeds and the mean KL; per trained method also its gain over the
    base policy, paired by seed (`minus_base`)."""
    summary: dict = {}
    base = [r for r in runs if r["method"] == "base"]
    for method in dict.fromkeys(r["method"] for r in runs):
        mine = [r for r in runs if r["method"] == method]
        summary[method] = {**gold_over_seeds(mine), "kl": float(np.mean([r["kl"] for r in mine]))}
        if method != "base":
            summary[method]["minus_base"] = paired_difference(mine, base)
    return summary


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, middle, frontier_ax) = plt.subplots(1, 3, figsize=(15, 4))
    methods = [m for m, row in result["summary"].items() if isinstance(row, dict)]  # older results: a float `improvement` too
    means = [result["summary"][m]["gold_reward"] for m in methods]
    errors = [result["summary"][m]["gold_reward_ci95"] for m in methods]
    colours = [f"C{i}" for i in range(len(methods))]
    left.bar(methods, means, yerr=errors, capsize=6, color=colours)
    left.set_ylabel("gold reward (held-out prompts)")
    left.set_title(f"{result['task']}: {len(result['seeds'])} seed(s), 95% t intervals")
    # one line per method: the mean over seeds of the gold reward at each point of training (95% t band),
    # from the base's
    base = np.mean([r["gold_reward"] for r in result["runs"] if r["method"] == "base"])
    for method, colour in zip(methods, colours):
        curves = [r["curve"] for r in result["runs"] if r["method"] == method and r["curve"]]
        if curves:
            points = min(len(c) for c in curves)
            pairs = [0] + [curves[0][i]["pairs_seen"] for i in range(points)]
            per_seed = [[c[i]["gold_reward"] for c in curves] for i in range(points)]
            gold = np.array([base] + [np.mean(v) for v in per_seed])
            spread = np.array([0.0] + [ci95(v) for v in per_seed])
            middle.plot(pairs, gold, marker="o", color=colour, label=method)
            middle.fill_between(pairs, gold - spread, gold + spread, color=colour, alpha=0.15)
    middle.set_xlabel("labelled pairs trained on (epochs revisit the pool)")
    middle.set_ylabel("gold reward (mean over seeds)")
    middle.set_title("gold reward during training")
    middle.legend()
    plot_frontier(frontier_ax, result["runs"], lambda r: r["method"])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    if args.beta is not None and not {"dpo", "ipo", "kto"} & set(args.loss):
        raise UserError("--beta sets the KL strength of dpo, ipo and kto, and none is in --loss: simpo's scale is "
                        "--simpo-beta, orpo's weight --orpo-lambda")
    seeds = seeds_of(args)
    methods = ["base", *dict.fromkeys(args.loss)]
    done = BenchRuns("dpo", args)
    with tempfile.TemporaryDirectory(prefix="frugalign-bench-") as tmp:
        for seed in seeds:
            missing = [m for m in methods if not done.find(seed=seed, method=m)]
            if not missing:
                continue
            task = bench_task(args, seed)
            settings = task_settings(task, args, quick_epochs=1)
            pool, ties = task.labelled_pool(tau=args.tau, seed=seed)
            config = {"tau": args.tau, "loss": args.loss, **settings, "simpo_beta": args.simpo_beta,
                      "simpo_gamma": args.simpo_gamma, "orpo_lambda": args.orpo_lambda,
                      "curve_points": args.curve_points, "model": args.model, "prompts": args.prompts,
                      "gold_reward": args.gold_reward}
            for method in missing:
                run = (base_run(task, seed) if method == "base"
                       else loss_run(args, task, seed, method, pool, ties, settings, Path(tmp)))
                done.add(run, config)
    runs = [done.find(seed=seed, method=method) for seed in seeds for method in methods]
    result = {
        "bench": "dpo", "task": args.task, "mode": "quick" if args.quick else "full", "seeds": seeds,
        "config": done.config, "bench_seconds": done.seconds(),
        "machine": machine_info(), "runs": runs, "summary": summarise(runs),
    }
    out = done.finish(result)
    png = out.with_suffix(".png")
    plot(result, png)
    table = {}
    for method, row in result["summary"].items():
        gain = row.get("minus_base")
        text = f"{row['gold_reward']:.3f} ± {row['gold_reward_ci95']:.3f} (KL {row['kl']:.2f})"
        if gain:
            text += f", {paired_text(gain)} over base (paired by seed)"
        table[f"{method} gold reward"] = text
    console.print(summary_table(f"bench dpo · {args.task} · seeds {seeds}", {**table, "results": str(out), "plot": str(png)}))
    return 0
