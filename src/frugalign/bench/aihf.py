"""`frugalign bench aihf`: demonstrations and preferences, alone and together, on a gold-oracle task.

The same base policy, the same demonstrations (the task's correct answers) and the same preference
pairs (the task's pool, labelled by the simulated annotator) feed SFT, DPO, IPO, SPIN, RLHF (a reward
model trained on the preferences, then RLOO) and AIHF's three forms, in three regimes:
  balanced:               N demonstrations, N preference pairs;
  scarce-preferences:     N demonstrations, N/8 pairs;
  scarce-demonstrations:  N/8 demonstrations, N pairs.
The scarce sets are subsets of the balanced ones (`regime_data`), so regimes differ only in what they
lack. Each run ends with the gold reward and the KL to the base policy on held-out prompts. At one iteration
the self-play form is not run: it is then the DPO form's run (`methods_to_run`). The summary says, per
regime, whether the best AIHF form is above every baseline's interval, and its difference from each
baseline paired by seed (the runs of a seed share its data, so the paired interval is the sharper test).
"""

from __future__ import annotations

import argparse
import copy
import random
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
from frugalign.data import Demonstration, PreferenceExample, tokenize_demonstrations, tokenize_preferences
from frugalign.errors import UserError
from frugalign.evaluate.gold import gold_eval
from frugalign.results import machine_info
from frugalign.stats import ci95

METHODS = ("sft", "dpo", "ipo", "spin", "rlhf", "aihf-explicit", "aihf-dpo", "aihf-self-play")
REGIMES = {"balanced": (1, 1), "scarce-preferences": (1, 8), "scarce-demonstrations": (8, 1)}  # divisors of N


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_arguments(parser, default="sentiment")
    parser.add_argument("--regimes", nargs="+", choices=list(REGIMES), default=None, help="default: all three")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=None,
                        help="default: all eight (seven at --iterations 1, where aihf-self-play is aihf-dpo)")
    parser.add_argument("--n", type=int, default=None,
                        help="N: demonstrations and pairs in the balanced regime (default 256; quick 8)")
    parser.add_argument("--tau", type=float, default=0.0, help="annotator temperature (0: noiseless)")
    parser.add_argument("--iterations", type=int, default=None, help="SPIN / AIHF iterations (default 2; quick 1)")
    parser.add_argument("--rloo-samples", type=int, default=None,
                        help="RLHF and explicit AIHF: responses sampled per prompt in an RLOO step, each scored against "
                             "the mean of the others (default 4; quick 2)")
    parser.add_argument("--generation-backend", choices=["hf", "vllm"], default="hf",
                        help="how RLHF, SPIN and AIHF sample: hf (Hugging Face generate) or vllm (vLLM in this process)")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="every method recomputes activations in its backward pass: less memory, more time (on "
                             "the SmolLM2 tasks an RLOO step keeps every layer's activations for all its samples "
                             "without it)")
    parser.add_argument("--out", default="bench-aihf.json", help="result JSON (PNGs are written beside it)")


def reward_model_from(policy):
    """A reward model that starts from the policy's own network (the usual RLHF initialisation)."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(policy.config)
    config.num_labels = 1
    model = AutoModelForSequenceClassification.from_config(config)
    model.load_state_dict(policy.state_dict(), strict=False)  # the backbone; the scalar head starts fresh
    return model


def run_method(method: str, task, demos: list[Demonstration], prefs: list[PreferenceExample], settings: dict,
               seed: int, workdir: Path, iterations: int, rloo_samples: int, backend: str = "hf",
               gradient_checkpointing: bool = False) -> tuple[object, dict]:
    """Train a fresh copy of the base policy with `method`; return it and its costs."""
    # here, not above: `--help` must not load torch (cli.py)
    from frugalign.options import AIHFConfig, DPOConfig, RewardConfig, RLHFConfig, SFTConfig
    from frugalign.training.aihf import train_aihf
    from frugalign.training.dpo import train_dpo
    from frugalign.training.reward import score, train_reward
    from frugalign.training.rlhf import train_rlhf
    from frugalign.training.sft import train_sft

    policy, tok = copy.deepcopy(task.model), task.tokenizer
    common = dict(seed=seed, learning_rate=settings["learning_rate"], batch_size=settings["batch_size"],
                  warmup_ratio=0.1, logging_steps=1000, output_dir=str(workdir / method),
                  gradient_checkpointing=gradient_checkpointing)
    epochs, beta = settings["num_epochs"], settings["beta"]
    costs = {"generations": 0, "preference_pairs": 0, "demonstrations": 0}
    if method == "sft":
        rows, _ = tokenize_demonstrations(demos, tok, 64, 64, "demonstrations")
        policy, _ = train_sft(load_config(SFTConfig, num_epochs=epochs, **common), policy, tok, rows)
        costs["demonstrations"] = len(demos)
    elif method in ("dpo", "ipo"):
        rows, _ = tokenize_preferences(prefs, tok, 64, 64, "preferences")
        policy, _ = train_dpo(load_config(DPOConfig, loss=method, beta=beta, num_epochs=epochs, **common), policy, tok, rows)
        costs["preference_pairs"] = len(prefs)
    elif method == "rlhf":
        rm = reward_model_from(task.model)
        rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "margin": 0.0, "weight": 1.0}
                for p in prefs]
        rc = load_config(RewardConfig, num_epochs=epochs, **{**common, "output_dir": str(workdir / "rm")})
        rm, _ = train_reward(rc, rm, tok, rows)
        prompts = sorted({p.prompt for p in prefs})
        config = load_config(RLHFConfig, num_epochs=epochs, samples_per_prompt=rloo_samples, max_new_tokens=task.max_new_tokens,
                             kl_coef=0.05, generation_backend=backend, **common)
        policy, result = train_rlhf(config, policy, tok, prompts, lambda p, r: score(rm, tok, p, r), reference=task.model)
        costs["preference_pairs"], costs["generations"] = len(prefs), int(result.last_metrics["generations"])
    else:
        variant = {"spin": "self-play", "aihf-explicit": "explicit", "aihf-dpo": "dpo", "aihf-self-play": "self-play"}[method]
        config = load_config(AIHFConfig, variant=variant, iterations=iterations, beta=beta, num_epochs=max(1, epochs // 2),
                             max_new_tokens=task.max_new_tokens, samples_per_prompt=rloo_samples, max_prompt_length=64,
                             max_response_length=64, reward_learning_rate=settings["learning_rate"],
                             generation_backend=backend, **common)
        used = [] if method == "spin" else prefs
        rm = reward_model_from(task.model) if variant == "explicit" else None
        policy, records = train_aihf(config, policy, tok, demos, used, reward_model=rm, reward_tokenizer=tok)
        costs["preference_pairs"], costs["demonstrations"] = len(used), len(demos)
        costs["generations"] = sum(r["generated"] + r["policy_step_generated"] for r in records)  # with RLOO's samples
    return policy, costs


def regime_data(demos: list, prefs: list, n: int, regimes: list[str], seed: int) -> dict[str, tuple[list, list]]:
    """Each regime's demonstrations and pairs. One seeded draw of N of each; a regime takes the first N/divisor
    of it, so a scarce set is a subset of the balanced one, and what a regime sees does not depend on which
    other regimes the command asks for (regimes compare, paired, on the same data)."""
    rng = random.Random(seed)
    demos_drawn = rng.sample(demos, min(len(demos), n))
    prefs_drawn = rng.sample(prefs, min(len(prefs), n))
    return {regime: (demos_drawn[: n // REGIMES[regime][0]], prefs_drawn[: n // REGIMES[regime][1]]) for regime in regimes}


def methods_to_run(methods: list[str], iterations: int) -> list[str]:
    """The methods less aihf-self-play at one iteration when aihf-dpo runs: the two forms differ only in
    the opponent pairs' reference, the previous iterate for self-play and the initial policy for the DPO
    form, and before the first iteration the previous iterate is the initial policy. Running both would
    train and evaluate the same model twice."""
    if iterations == 1 and "aihf-dpo" in methods:
        return [m for m in methods if m != "aihf-self-play"]
    return list(methods)


def run(args: argparse.Namespace) -> int:
    seeds = seeds_of(args)
    regimes = args.regimes or (["balanced"] if args.quick else list(REGIMES))
    n = args.n if args.n is not None else (8 if args.quick else 256)
    iterations = args.iterations if args.iterations is not None else (1 if args.quick else 2)
    asked = args.methods or list(METHODS)
    methods = methods_to_run(asked, iterations)
    if len(methods) < len(asked):
        console.print("aihf-self-play: not run; at one iteration it is aihf-dpo's run (both forms' reference is the "
                      "initial policy)")
    rloo_samples = args.rloo_samples if args.rloo_samples is not None else (2 if args.quick else 4)
    if rloo_samples < 2:  # said before any model trains, not when RLHF's turn comes
        raise UserError(f"--rloo-samples {rloo_samples}: at least 2 (each sample's baseline is the others' mean)")
    if n < 1 or iterations < 1:
        raise UserError(f"--n {n}, --iterations {iterations}: each at least 1")
    done = BenchRuns("aihf", args)
    with tempfile.TemporaryDirectory(prefix="frugalign-bench-aihf-") as tmp:
        for seed in seeds:
            if all(done.find(seed=seed, method=m, regime=r) for m in methods for r in regimes):
                continue
            task = bench_task(args, seed)
            settings = task_settings(task, args, quick_epochs=1)
            config = {"n": n, "tau": args.tau, "iterations": iterations, "rloo_samples": rloo_samples, "regimes": regimes,
                      "generation_backend": args.generation_backend,
                      "gradient_checkpointing": args.gradient_checkpointing, **settings, "model": args.model,
                      "prompts": args.prompts, "gold_reward": args.gold_reward}
            if not done.find(seed=seed, method="base"):
                base = gold_eval(task, task.model, task.eval_prompts, ref_model=task.model,
                                 samples_per_prompt=task.eval_samples, seed=seed, progress=False)
                done.add({"method": "base", "seed": seed, "params": {}, "gold_reward": base.mean,
                          "gold_reward_ci95": base.ci95, "kl": base.kl, "queries": 0, "generations": 0,
                          "time_s": {"total": 0.0}}, config)
            all_demos = [Demonstration(d["prompt"], d["completion"]) for d in task.demonstrations]
            pool, _ = task.labelled_pool(args.tau, seed)
            all_prefs = [PreferenceExample(r["prompt"], r["chosen"], r["rejected"]) for r in pool]
            for regime, (demos, prefs) in regime_data(all_demos, all_prefs, n, regimes, seed).items():
                for method in methods:
                    if done.find(seed=seed, method=method, regime=regime):
                        continue
                    started = time.perf_counter()
                    policy, costs = run_method(method, task, demos, prefs, settings, seed, Path(tmp) / f"{seed}-{regime}",
                                               iterations, rloo_samples, args.generation_backend,
                                               args.gradient_checkpointing)
                    ev = gold_eval(task, policy, task.eval_prompts, ref_model=task.model,
                                   samples_per_prompt=task.eval_samples, seed=seed, progress=False)
                    done.add({"method": method, "seed": seed, "params": {"regime": regime, "demonstrations": len(demos),
                                                                         "preferences": len(prefs), "tau": args.tau},
                              "gold_reward": ev.mean, "gold_reward_ci95": ev.ci95, "kl": ev.kl,
                              "queries": costs["preference_pairs"], "generations": costs["generations"],
                              "time_s": {"total": time.perf_counter() - started}}, config)
                    console.print(f"seed {seed} · {regime} · {method}: gold {ev.mean:.3f}, KL {ev.kl:.2f}")
    runs = [done.find(seed=seed, method="base") for seed in seeds]
    runs += [done.find(seed=seed, method=m, regime=r) for seed in seeds for r in regimes for m in methods]
    result = {"bench": "aihf", "task": args.task, "mode": "quick" if args.quick else "full", "seeds": seeds,
              "methods": methods, "config": done.config, "bench_seconds": done.seconds(), "machine": machine_info(),
              "runs": runs, "summary": summarise(runs, regimes, methods)}
    out = done.finish(result)
    plot(result, out.with_suffix(".png"))
    table = {f"{regime} · best": result["summary"][regime]["best"] for regime in regimes}
    table.update({f"{regime} · {m}": f"{v['gold_reward']:.3f} ± {v['gold_reward_ci95']:.3f} (KL {v['kl']:.2f})"
                  for regime in regimes for m, v in result["summary"][regime]["methods"].items()})
    table.update({f"{regime} · {result['summary'][regime]['best_aihf']} − {m}": f"{paired_text(d)} (paired by seed)"
                  for regime in regimes for m, d in result["summary"][regime]["best_aihf_minus"].items() if d})
    console.print(summary_table(f"bench aihf · {args.task} · seeds {seeds}", {**table, "results": str(out)}))
    return 0


def summarise(runs: list[dict], regimes: list[str], methods: list[str]) -> dict:
    base = [r["gold_reward"] for r in runs if r["method"] == "base"]
    summary: dict = {"base": {"gold_reward": float(np.mean(base)), "gold_reward_ci95": ci95(base)}}
    for regime in regimes:
        by = {}
        for method in methods:
            mine = runs_of(runs, method, regime)
            by[method] = {**gold_over_seeds(mine), "kl": float(np.mean([r["kl"] for r in mine]))}
        best = max(by, key=lambda m: by[m]["gold_reward"])
        aihf = [m for m in by if m.startswith("aihf")]
        best_aihf = max(aihf, key=lambda m: by[m]["gold_reward"]) if aihf else None
        baselines_upper = max((v["gold_reward"] + v["gold_reward_ci95"] for m, v in by.items() if m not in aihf),
                              default=None)
        # two tests of "AIHF beats the baselines": the best AIHF form above every baseline's 95% interval, and,
        # sharper, its paired difference from each baseline (the same seeds' data) above zero over the seeds
        minus = {} if best_aihf is None else {
            m: paired_difference(runs_of(runs, best_aihf, regime), runs_of(runs, m, regime)) for m in by if m not in aihf}
        summary[regime] = {"methods": by, "best": best, "best_aihf": best_aihf,
                           "best_aihf_above_baselines_intervals": None if best_aihf is None or baselines_upper is None
                           else by[best_aihf]["gold_reward"] - by[best_aihf]["gold_reward_ci95"] > baselines_upper,
                           "best_aihf_minus": minus,
                           "best_aihf_above_every_baseline_paired": None if not minus or any(
                               d is None or d["ci95"] is None for d in minus.values())
                           else all(d["mean"] - d["ci95"] > 0 for d in minus.values())}
    return summary


def runs_of(runs: list[dict], method: str, regime: str) -> list[dict]:
    return [r for r in runs if r["method"] == method and r["params"].get("regime") == regime]


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = result["config"]["regimes"]
    fig, axes = plt.subplots(1, len(regimes) + 1, figsize=(5 * (len(regimes) + 1), 4.2))
    for ax, regime in zip(axes, regimes):
        by = result["summary"][regime]["methods"]
        ax.bar(list(by), [v["gold_reward"] for v in by.values()], yerr=[v["gold_reward_ci95"] for v in by.values()],
               capsize=4, color=["#1f77b4" if m.startswith("aihf") else "#999999" for m in by])
        ax.axhline(result["summary"]["base"]["gold_reward"], color="k", linestyle="--", linewidth=1, label="base")
        ax.set_title(regime)
        ax.set_ylabel("gold reward")
        ax.tick_params(axis="x", rotation=60)
        ax.legend()
    plot_frontier(axes[-1], [r for r in result["runs"] if r["method"] != "base"],
                  lambda r: f"{r['method']} ({r['params']['regime']})")
    fig.suptitle(f"bench aihf · {result['task']} · {len(result['seeds'])} seed(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
