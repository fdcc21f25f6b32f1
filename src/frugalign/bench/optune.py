"""`frugalign bench optune`: online DPO that regenerates only part of the prompts (OPTune) against
regenerating all of them, with selection rules (OPTune's lowest reward, the smallest reward gap, the
oldest pairs, lowest reward with a random share) against random selection at the same rho, and wDPO
against DPO. The gold reward is the scorer, and gold reward on held-out prompts is measured after every
iteration, against responses generated and against time. The summary gives, per setting, the time to
reach the lower end of rho=1's final interval, the difference to random selection at the same rho
(paired by seed), and OPTune's Fig. 2 split (the share of the reward gain from the bottom half of the
prompts), whose comparable figure is rho=1's: with a selection rule, only the regenerated prompts can gain."""

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
    plot_frontier,
    seeds_of,
    task_settings,
)
from frugalign.config import load_config
from frugalign.console import console, summary_table
from frugalign.evaluate.gold import gold_eval
from frugalign.results import machine_info
from frugalign.stats import ci95

SELECTIONS = ("optune", "gap", "stale", "mixed", "random")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_arguments(parser, default="arith")
    parser.add_argument("--rhos", type=float, nargs="+", default=None, help="default: 0.3 0.5 0.7 1.0 (quick: 0.5 1.0)")
    parser.add_argument("--selections", nargs="+", choices=SELECTIONS, default=["optune", "random"],
                        help="selection rules run at every rho below 1 (frugalign online --selection)")
    parser.add_argument("--random-share", type=float, default=0.5, help="selection mixed: share drawn at random")
    parser.add_argument("--iterations", type=int, default=None, help="online iterations (default 3; quick 2)")
    parser.add_argument("--losses", nargs="+", choices=["dpo", "wdpo"], default=None, help="default: dpo wdpo (quick: wdpo)")
    parser.add_argument("--train-prompts", type=int, default=None,
                        help="use the first N of the task's train prompts (default: all of them; quick 16)")
    parser.add_argument("--learning-rate", type=float, default=None, help="override the task's default")
    parser.add_argument("--optimizer", choices=["adamw", "rmsprop"], default="adamw",
                        help="the policy's optimizer (the OPTune paper used RMSprop)")
    parser.add_argument("--trainable-layers", type=int, default=0,
                        help="train only the last N transformer blocks (0: every weight)")
    parser.add_argument("--generation-backend", choices=["hf", "vllm"], default="hf",
                        help="hf: Hugging Face generate; vllm: vLLM in this process (its CPU or GPU build)")
    parser.add_argument("--samples-per-prompt", type=int, default=2, help="responses per regenerated prompt (best vs worst)")
    parser.add_argument("--generation-batch-size", type=int, default=64, help="prompts per generate call")
    parser.add_argument("--train-pairs", choices=["all", "regenerated"], default="all",
                        help="pairs trained on per iteration (frugalign online --train-pairs)")
    parser.add_argument("--out", type=str, default="bench-optune.json", help="result JSON (a PNG is written beside it)")


def settings_grid(rhos: list[float], losses: list[str], selections: list[str]) -> list[dict]:
    grid = []
    for loss in losses:
        for rho in rhos:
            for selection in (["all"] if rho >= 1.0 else selections):
                grid.append({"rho": rho, "selection": selection, "loss": loss})
    return grid


def run_setting(args: argparse.Namespace, seed: int, setting: dict, iterations: int, workdir: Path) -> tuple[dict, dict]:
    """One setting's run of one seed, and the task's training settings it used."""
    from frugalign.recipes.online import OnlineConfig, run_online  # here, not above: `--help` must not load torch (cli.py)

    task = bench_task(args, seed)
    policy = copy.deepcopy(task.model)  # a trainable copy; task.model stays the base (reference, KL)
    base = task_settings(task, args, quick_epochs=1)  # the task's, with --learning-rate
    config = load_config(OnlineConfig,
                         output_dir=str(workdir / f"{setting['selection']}-{setting['rho']}-{setting['loss']}-s{seed}"),
                         seed=seed, iterations=iterations, rho=setting["rho"], selection=setting["selection"],
                         random_share=args.random_share, loss=setting["loss"], learning_rate=base["learning_rate"],
                         beta=base["beta"], batch_size=base["batch_size"], optimizer=args.optimizer,
                         trainable_layers=args.trainable_layers, max_new_tokens=task.max_new_tokens, temperature=1.0,
                         top_p=0.9, samples_per_prompt=args.samples_per_prompt,
                         generation_batch_size=args.generation_batch_size, train_pairs=args.train_pairs,
                         generation_backend=args.generation_backend, logging_steps=50)
    limit = args.train_prompts or (16 if args.quick else None)  # quick: one optimizer step an iteration, under 5 min
    prompts = task.train_prompts[:limit] if limit else task.train_prompts
    began = time.perf_counter()
    curve: list[dict] = []
    generated = 0

    def evaluate(t, model) -> dict:
        ev = gold_eval(task, model, task.eval_prompts, ref_model=task.model, samples_per_prompt=task.eval_samples,
                       seed=seed, progress=False)
        return {"gold_reward": ev.mean, "gold_reward_ci95": ev.ci95, "kl": ev.kl}

    _, records = run_online(config, policy, task.tokenizer, prompts, task.gold_rewards, evaluate)
    elapsed = 0.0
    for r in records:
        generated += r["generated"]
        elapsed += sum(r["time_s"].values())
        curve.append({"iteration": r["iteration"], "generations": generated, "time_s": elapsed,
                      "gold_reward": r["gold_reward"], "kl": r.get("kl"), "share_bottom_half": r.get("share_bottom_half")})
    time_split = {k: sum(r["time_s"][k] for r in records) for k in ("generation", "scoring", "training")}
    last = records[-1]
    return {"method": "online", "seed": seed, "params": dict(setting), "gold_reward": last["gold_reward"],
            "gold_reward_ci95": last["gold_reward_ci95"], "kl": last["kl"], "queries": 0, "generations": generated,
            "time_s": {"total": sum(time_split.values()), **time_split, "wall": time.perf_counter() - began},
            "curve": curve}, {"learning_rate": base["learning_rate"], "beta": base["beta"],
                              "batch_size": base["batch_size"], "train_prompts": len(prompts)}


def key(params: dict) -> str:
    return f"{params['selection']}/rho={params['rho']}/{params['loss']}"


def summarise(runs: list[dict]) -> dict:
    """Per setting: final gold reward (mean, t interval over seeds), generations, time, the share of time spent
    generating, Fig. 2's bottom-half share of the reward gain (iterations after the first, mean over seeds),
    and, against rho=1 with the same loss, the seconds until the seed-mean curve reaches the lower end of
    rho=1's final interval and rho=1's end-to-end time over that; below rho=1, the difference to random
    selection at the same rho and loss (paired by seed, with its t interval)."""
    summary: dict = {}
    for k in dict.fromkeys(key(r["params"]) for r in runs):
        mine = [r for r in runs if key(r["params"]) == k]
        shares = [p["share_bottom_half"] for r in mine for p in r["curve"][1:] if p.get("share_bottom_half") is not None]
        summary[k] = {**gold_over_seeds(mine),
                      "kl": float(np.mean([r["kl"] for r in mine])) if all(r.get("kl") is not None for r in mine) else None,
                      "generations": float(np.mean([r["generations"] for r in mine])),
                      "time_s": float(np.mean([r["time_s"]["total"] for r in mine])),
                      "generation_share": float(np.mean([r["time_s"]["generation"] / r["time_s"]["total"] for r in mine])),
                      "share_of_gain_from_bottom_half": float(np.mean(shares)) if shares else None}
    for k, row in list(summary.items()):
        params = next(r["params"] for r in runs if key(r["params"]) == k)
        full_key = f"all/rho=1.0/{params['loss']}"
        full = summary.get(full_key)
        if full:
            target = full["gold_reward"] - full["gold_reward_ci95"]
            reached = time_to_reach([r for r in runs if key(r["params"]) == k], target)
            row["seconds_to_reach_rho1_interval"] = reached
            row["speedup_to_reach_rho1_interval"] = full["time_s"] / reached if reached else None
        if params["rho"] < 1.0 and params["selection"] != "random":
            rnd = f"random/rho={params['rho']}/{params['loss']}"
            paired = paired_difference([r for r in runs if key(r["params"]) == k],
                                       [o for o in runs if key(o["params"]) == rnd])
            if paired:
                row["minus_random"], row["minus_random_ci95"] = paired["mean"], paired["ci95"]  # one seed: no interval
    return summary


def time_to_reach(runs: list[dict], target: float) -> float | None:
    """Seconds (mean over seeds, per iteration) until the seed-mean gold reward is at least `target`;
    None if it never is. `runs` are one setting's."""
    (curve,) = mean_curves(runs).values()
    return next((p["time_s"] for p in curve["points"] if p["gold_reward"] >= target), None)


def mean_curves(runs: list[dict]) -> dict[str, dict]:
    """Per setting, the curve averaged over seeds at each iteration: mean responses generated, mean seconds,
    mean gold reward and its 95% t interval (every run of a setting has the same iterations)."""
    out = {}
    for k in dict.fromkeys(key(r["params"]) for r in runs):
        mine = [r for r in runs if key(r["params"]) == k]
        points = min(len(r["curve"]) for r in mine)
        out[k] = {"params": mine[0]["params"], "points": [
            {"generations": float(np.mean([r["curve"][i]["generations"] for r in mine])),
             "time_s": float(np.mean([r["curve"][i]["time_s"] for r in mine])),
             "gold_reward": float(np.mean([r["curve"][i]["gold_reward"] for r in mine])),
             "gold_reward_ci95": ci95([r["curve"][i]["gold_reward"] for r in mine]) if len(mine) > 1 else 0.0}
            for i in range(points)]}
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = mean_curves(result["runs"])
    losses = list(dict.fromkeys(c["params"]["loss"] for c in curves.values()))
    rhos = sorted({c["params"]["rho"] for c in curves.values()})
    # one colour per rho, one line style and marker per selection rule: a reader matches lines across panels
    colors = {rho: ("black" if rho >= 1.0 else plt.get_cmap("tab10")(i)) for i, rho in enumerate(rhos)}
    styles = {"optune": "-", "gap": "-.", "stale": ":", "mixed": (0, (6, 2, 1, 2, 1, 2)), "random": "--", "all": "-"}
    markers = {"optune": "o", "gap": "s", "stale": "^", "mixed": "D", "random": "v", "all": "o"}
    fig, axes = plt.subplots(len(losses), 3, figsize=(16, 4.2 * len(losses)), squeeze=False)
    for row, loss in zip(axes, losses):
        for k, curve in curves.items():
            params = curve["params"]
            if params["loss"] != loss:
                continue
            ys = np.array([p["gold_reward"] for p in curve["points"]])
            ci = np.array([p["gold_reward_ci95"] for p in curve["points"]])
            for ax, x in ((row[0], "generations"), (row[1], "time_s")):
                xs = [p[x] for p in curve["points"]]
                ax.plot(xs, ys, linestyle=styles[params["selection"]], marker=markers[params["selection"]],
                        color=colors[params["rho"]], label=k)
                ax.fill_between(xs, ys - ci, ys + ci, color=colors[params["rho"]], alpha=0.08)
        row[0].set_xlabel("responses generated")
        row[1].set_xlabel("seconds (generation + scoring + training)")
        for ax in row[:2]:
            ax.set_ylabel("gold reward (held-out prompts)")
            ax.set_title(f"{loss}: mean over {len(result['seeds'])} seeds, 95% t interval")
        row[0].legend(fontsize=7, title="a colour per rho, a line style and marker per selection rule", title_fontsize=7)
        plot_frontier(row[2], [r for r in result["runs"] if r["params"]["loss"] == loss], lambda r: key(r["params"]))
    fig.suptitle(f"{result['task']}: online DPO, regenerating a share rho of the prompts each iteration")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    seeds = seeds_of(args)
    rhos = args.rhos or ([0.5, 1.0] if args.quick else [0.3, 0.5, 0.7, 1.0])
    grid = settings_grid(rhos, args.losses or (["wdpo"] if args.quick else ["dpo", "wdpo"]), args.selections)
    iterations = args.iterations if args.iterations is not None else (2 if args.quick else 3)
    done = BenchRuns("optune", args)
    with tempfile.TemporaryDirectory(prefix="frugalign-bench-") as tmp:
        for seed in seeds:
            for setting in grid:
                if done.find(seed=seed, **setting):
                    continue
                run, settings = run_setting(args, seed, setting, iterations, Path(tmp))
                # what the runs really used: one DPO epoch per iteration, whatever the task's DPO settings say
                done.add(run, {"rhos": rhos, "selections": args.selections, "random_share": args.random_share,
                               "iterations": iterations, "epochs_per_iteration": 1, "optimizer": args.optimizer,
                               "trainable_layers": args.trainable_layers, "samples_per_prompt": args.samples_per_prompt,
                               "generation_batch_size": args.generation_batch_size, "train_pairs": args.train_pairs,
                               "generation_backend": args.generation_backend, **settings, "model": args.model,
                               "prompts": args.prompts, "gold_reward": args.gold_reward})
                console.print(f"seed {seed} · {key(setting)}: gold {run['gold_reward']:.3f}, "
                              f"{run['generations']} generations, {run['time_s']['total']:.1f} s")
    runs = [done.find(seed=seed, **setting) for seed in seeds for setting in grid]
    result = {"bench": "optune", "task": args.task, "mode": "quick" if args.quick else "full", "seeds": seeds,
              "config": done.config, "bench_seconds": done.seconds(), "machine": machine_info(), "runs": runs,
              "summary": summarise(runs)}
    out = done.finish(result)
    plot(result, out.with_suffix(".png"))
    rows = {k: describe(v) for k, v in result["summary"].items()}
    console.print(summary_table(f"bench optune · {args.task} · seeds {seeds}", {**rows, "results": str(out)}))
    return 0


def describe(row: dict) -> str:
    """One summary row as the closing table shows it."""
    text = (f"gold {row['gold_reward']:.3f} ± {row['gold_reward_ci95']:.3f}, {row['generations']:.0f} generations, "
            f"{row['time_s']:.0f} s ({row['generation_share']:.0%} generating)")
    if row.get("speedup_to_reach_rho1_interval"):
        text += f", reaches rho=1's interval {row['speedup_to_reach_rho1_interval']:.2f}x sooner than rho=1 ends"
    if "minus_random" in row:
        spread = f" ± {row['minus_random_ci95']:.3f}" if row["minus_random_ci95"] is not None else " (one seed)"
        text += f", {row['minus_random']:+.3f}{spread} vs random"
    if row.get("share_of_gain_from_bottom_half") is not None:
        text += f", {row['share_of_gain_from_bottom_half']:.0%} of the gain from the bottom half"
    return text
