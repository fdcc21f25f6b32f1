"""`frugalign bench adpo`: how many labels does alignment need? On a gold-oracle task's unlabelled
pair pool, with a simulated annotator behind the real ledger. The default modes walk the pool once each,
the same steps, so they differ only in the pairs they ask about:
- `dpo`: asks about every pair;
- `adpo`: asks only when |beta * (u(a) - u(b))| <= gamma, pseudo-labels the rest;
- `adpo-nopl`: the same queries, confident pairs skipped;
- `random-onepass`: ADPO's number of labels, a uniformly random subset asked in the same pass (ADPO's
  like-for-like baseline).
APL's comparison, on request (`--modes ... random apl`: it trains after every round, so it takes several
times as long):
- `apl`: ADPO's budget bought in rounds by APL's rule (high-entropy prompts, then the most certain
  pairs), DPO on all labels so far after each round; evaluated at the end of each round;
- `random`: the same budget and rounds, each round's pairs drawn uniformly (APL's like-for-like baseline);
- `random@F` (with --random-budgets): `random` with the fraction F of DPO's labels, so that uniform
  sampling's final gold reward is known at several budgets (its label-efficiency curve);
- `apl@F` (with --apl-budgets): `apl` with the fraction F of DPO's labels, beside `random@F`.
Gold reward on held-out prompts against the number of queries spent; each mode minus its uniform rival at
the same budget (`random-onepass` for ADPO's modes where it ran, `random` for APL), paired by seed; and
which modes meet the target: DPO's final interval reached with at most 30% of its labels, above the upper
end of that rival's interval at that budget."""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np

from frugalign.active.annotators import GoldOracle
from frugalign.active.ledger import LabelLedger, fingerprint, pair_id
from frugalign.bench.common import (
    BenchRuns,
    add_task_arguments,
    bench_task,
    gold_over_seeds,
    paired_curves,
    paired_difference,
    paired_text,
    plot_frontier,
    seeds_of,
    task_settings,
)
from frugalign.config import load_config
from frugalign.console import console, summary_table
from frugalign.data import UnlabelledPair
from frugalign.errors import UserError
from frugalign.evaluate.gold import gold_eval
from frugalign.results import machine_info
from frugalign.stats import ci95, wilson_interval

MODES = ("dpo", "adpo", "adpo-nopl", "random-onepass", "random", "apl")
DEFAULT_MODES = ("dpo", "adpo", "adpo-nopl", "random-onepass")  # one pass each, the same steps: like for like
ROUNDS = ("random", "apl")  # buy in rounds, train after each
BUDGETED = ("random-onepass", *ROUNDS)  # the modes that get ADPO's number of labels
TARGET_SHARE = 0.3  # the label-efficiency target: DPO's final interval with at most this share of DPO's labels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_arguments(parser, default="arith")
    parser.add_argument("--modes", nargs="*", choices=MODES, default=list(DEFAULT_MODES),
                        help="the modes to run (default: the one-pass modes; add random apl for APL's comparison; "
                             "random-onepass, random and apl get adpo's budget, so they need adpo; none: only the "
                             "runs of --random-budgets and --apl-budgets)")
    parser.add_argument("--tau", type=float, default=0.0, help="annotator temperature (0: noiseless)")
    parser.add_argument("--gamma", type=float, default=0.5, help="ADPO's confidence threshold")
    parser.add_argument("--audit-rate", type=float, default=0.1,
                        help="ADPO: share of confident pairs asked once trusted (0: the paper's rule, no audits)")
    parser.add_argument("--audit-window", type=int, default=30,
                        help="ADPO: latest audits that decide trust, and the early audits asked before trust")
    parser.add_argument("--min-agreement", type=float, default=0.75,
                        help="ADPO: lower 95%% Wilson bound of the audit agreement needed to pseudo-label")
    parser.add_argument("--trust-by-confidence", action="store_true",
                        help="ADPO: trust per level of confidence: pseudo-label only above the lowest |m| whose audits "
                             "reach --min-agreement")
    parser.add_argument("--query-warmup", type=int, default=0, help="labels before pseudo-labelling starts")
    parser.add_argument("--acquisition-batch-size", type=int, default=32, help="APL and random: labels bought per round")
    parser.add_argument("--apl-epochs-per-round", type=int, default=1,
                        help="APL and random: epochs on all labels so far after each round but the last (that one: the task's)")
    parser.add_argument("--random-budgets", type=float, nargs="*", default=[], metavar="FRACTION",
                        help="also random at these fractions of DPO's labels (e.g. 0.25 0.5): uniform sampling's final "
                             "gold reward against its budget")
    parser.add_argument("--apl-budgets", type=float, nargs="*", default=[], metavar="FRACTION",
                        help="also apl at these fractions of DPO's labels, each beside random at the same fraction")
    parser.add_argument("--learning-rate", type=float, default=None, help="override the task's default")
    parser.add_argument("--num-epochs", type=int, default=None, help="override the task's default")
    parser.add_argument("--curve-points", type=int, default=4, help="gold evaluations during training")
    parser.add_argument("--out", type=str, default="bench-adpo.json", help="result JSON (a PNG is written beside it)")


def run_mode(task, mode: str, seed: int, args, settings: dict, workdir: Path, budget: int) -> dict:
    # here, not above: `--help` must not load torch (cli.py)
    from frugalign.recipes.adpo import ADPOConfig, train_adpo, unlabelled_rows

    pairs = [UnlabelledPair(p["prompt"], p["response_a"], p["response_b"]) for p in task.pair_pool]
    config = load_config(ADPOConfig, output_dir=str(workdir / f"{mode}-seed{seed}"), seed=seed, mode=mode, gamma=args.gamma,
                         query_warmup=args.query_warmup if "adpo" in mode else 0, audit_rate=args.audit_rate,
                         audit_window=args.audit_window, min_agreement=args.min_agreement,
                         trust_by_confidence=args.trust_by_confidence, max_queries=budget if mode in BUDGETED else -1,
                         acquisition_batch_size=args.acquisition_batch_size,
                         apl_epochs_per_round=args.apl_epochs_per_round, logging_steps=10, **settings)
    rows = unlabelled_rows(pairs, task.tokenizer, config, f"{task.name} pool")
    ledger = LabelLedger(Path(config.train.output_dir) / "labels.sqlite", fingerprint(pairs))
    oracle = GoldOracle(task.gold_reward, tau=args.tau, seed=seed)
    truth = GoldOracle(task.gold_reward, tau=0.0, seed=seed)  # for pseudo-label agreement only, never trained on
    steps = config.epochs.num_epochs * -(-len(rows) // config.train.batch_size)
    # apl, random: the gold evaluation after each round (their own curve points), none within one
    eval_steps = 0 if mode in ROUNDS else max(1, steps // max(1, args.curve_points))
    policy = copy.deepcopy(task.model)  # a trainable copy; task.model stays the base (reference, KL)
    curve: list[dict] = []
    # each pair once, as the ledger asks it once: a pool may hold a pair twice
    distinct = list({pair_id(p.prompt, p.response_a, p.response_b): p for p in pairs}.values())
    gold_rewards: dict[int, tuple[float, float]] = {}  # index in distinct -> both responses' gold rewards, once each
    began = time.perf_counter()

    def gold_curve(model) -> dict[str, float]:
        ev = gold_eval(task, model, task.eval_prompts, ref_model=task.model, samples_per_prompt=task.eval_samples,
                       seed=seed, progress=False)
        elapsed = time.perf_counter() - began  # the label check below is the bench's, not the method's
        labels = ledger.labels(distinct)
        for i in (i for i, label in enumerate(labels) if label is not None and i not in gold_rewards):
            gold_rewards[i] = (task.gold_reward(distinct[i].prompt, distinct[i].response_a),
                               task.gold_reward(distinct[i].prompt, distinct[i].response_b))
        curve.append({"queries": ledger.counts()["queried"], "generations": 0, "time_s": elapsed,
                      "gold_reward": ev.mean, "gold_reward_ci95": ev.ci95, "kl": ev.kl,
                      **label_quality(labels, [gold_rewards.get(i) for i in range(len(distinct))])})
        return {"gold_reward": ev.mean}

    _, result, stats = train_adpo(config, policy, task.tokenizer, rows, oracle, truth=lambda p: truth.answer([p])[0],
                                  eval_fn=gold_curve, ledger=ledger, eval_steps=eval_steps)
    final = curve[-1]
    ledger.close()
    params = {"tau": args.tau, "gamma": args.gamma if "adpo" in mode else None}
    if mode in ROUNDS:
        params.update(acquisition_batch_size=args.acquisition_batch_size, apl_epochs_per_round=args.apl_epochs_per_round)
    return {"method": mode, "seed": seed, "params": params,
            "gold_reward": final["gold_reward"], "gold_reward_ci95": final["gold_reward_ci95"], "kl": final["kl"],
            "queries": stats.asked, "generations": 0, "pseudo_labelled": stats.pseudo,
            "pseudo_label_agreement": stats.pseudo_agree / stats.pseudo_checked if stats.pseudo_checked else None,
            "audits": stats.audited, "audit_agreement": stats.audit_agree / stats.audited if stats.audited else None,
            # whether the policy is right more often where it is surer: each audit's |m| and agreement
            "audit_record": [[round(level, 4), agreed] for level, agreed in stats.audit_record],
            "label_agreement": final["label_agreement"], "label_gold_gap": final["label_gold_gap"], "pool": len(rows),
            "time_s": {"total": time.perf_counter() - began, "generation": 0.0, "scoring": 0.0, "training": result.seconds},
            "curve": curve}


def label_quality(labels: list[int | None], gold: list[tuple[float, float] | None]) -> dict[str, float | None]:
    """The labels bought so far against the gold reward, pair by pair (label +1: response_a won; gold: both
    responses' gold rewards): `label_agreement`, the share of labelled pairs with a gold difference whose
    label names the response of higher gold reward, and `label_gold_gap`, the mean |gold difference| of the
    labelled pairs. What a curve cannot tell: whether a mode buys wrong labels, or right ones that teach less."""
    bought = [(label, g[0] - g[1]) for label, g in zip(labels, gold) if label is not None]
    decided = [label == np.sign(gap) for label, gap in bought if gap != 0]
    return {"label_agreement": float(np.mean(decided)) if decided else None,
            "label_gold_gap": float(np.mean([abs(gap) for _, gap in bought])) if bought else None}


def pool_size(task) -> int:
    """The labels DPO buys on this task's pool: one per distinct pair (the ledger asks a pair once ever)."""
    return len({pair_id(p["prompt"], p["response_a"], p["response_b"]) for p in task.pair_pool})


def methods_of(runs: list[dict]) -> list[str]:
    """The methods of these runs, in the order they ran."""
    return list(dict.fromkeys(r["method"] for r in runs))


def mean_curve(runs: list[dict], mode: str) -> list[dict]:
    """A mode's label-efficiency curve over seeds: at each evaluation (the k-th of every seed's run), the mean
    queries bought so far and the mean gold reward with its t interval over seeds."""
    curves = [r["curve"] for r in runs if r["method"] == mode and r["curve"]]
    if not curves:
        return []
    points = min(len(c) for c in curves)
    return [{"queries": float(np.mean([c[k]["queries"] for c in curves])),
             "gold_reward": float(np.mean([c[k]["gold_reward"] for c in curves])),
             "gold_reward_ci95": (ci95([c[k]["gold_reward"] for c in curves]) if len(curves) > 1
                                  else curves[0][k]["gold_reward_ci95"]),
             "label_agreement": mean_of([c[k].get("label_agreement") for c in curves])}
            for k in range(points)]


def mean_of(values: list[float | None]) -> float | None:
    """The mean over seeds, or None unless every seed has the value (results written before a measure existed
    lack it; a mean over some of the seeds would pass for one over all)."""
    return None if not values or any(v is None for v in values) else float(np.mean(values))


def labels_to_reach(curve: list[dict], level: float) -> float | None:
    """Queries at which the mean curve first reaches `level` (linear between evaluations), or None."""
    previous = None
    for point in curve:
        if point["gold_reward"] >= level:
            if previous is None or previous["gold_reward"] >= level:
                return point["queries"]
            share = (level - previous["gold_reward"]) / (point["gold_reward"] - previous["gold_reward"])
            return previous["queries"] + share * (point["queries"] - previous["queries"])
        previous = point
    return None


def area_under(curve: list[dict], budget: float) -> float | None:
    """Mean gold reward over the labels 0..budget: the curve held at its first value before its first
    evaluation and at its last after its last one, integrated by trapezoids and divided by the budget."""
    if not curve or budget <= 0:
        return None
    xs = [0.0] + [min(p["queries"], budget) for p in curve] + [budget]
    ys = [curve[0]["gold_reward"]] + [p["gold_reward"] for p in curve] + [curve[-1]["gold_reward"]]
    area = sum((x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:]))
    return float(area / budget)


def summarise(runs: list[dict]) -> dict:
    summary: dict = {}
    for mode in methods_of(runs):
        mine = [r for r in runs if r["method"] == mode]
        if not mine:
            continue
        summary[mode] = {**gold_over_seeds(mine), "queries": float(np.mean([r["queries"] for r in mine])),
                         "pseudo_labelled": float(np.mean([r["pseudo_labelled"] for r in mine])),
                         "label_agreement": mean_of([r.get("label_agreement") for r in mine])}
    dpo, adpo = summary.get("dpo"), summary.get("adpo")
    if dpo and adpo:
        summary["adpo_query_fraction"] = adpo["queries"] / dpo["queries"]
        summary["adpo_within_or_above_dpo_interval"] = adpo["gold_reward"] >= dpo["gold_reward"] - dpo["gold_reward_ci95"]
    if adpo and "apl" in summary:  # the two opposite bets at the same budget, paired by seed
        summary["apl"]["minus_adpo"] = paired_difference([r for r in runs if r["method"] == "apl"],
                                                         [r for r in runs if r["method"] == "adpo"])
    for mode in methods_of(runs):
        rival = budget_rival(mode, set(summary))
        if mode in summary and rival in summary:
            mine, theirs = [r for r in runs if r["method"] == mode], [r for r in runs if r["method"] == rival]
            summary[mode]["minus_random"] = paired_difference(mine, theirs)
            summary[mode]["minus_random_curve"] = paired_curves(mine, theirs)
    for mode in methods_of(runs):
        curve = mean_curve(runs, mode)
        if mode in summary and curve:
            summary[mode]["curve"] = curve
    if dpo:
        # the level every mode is asked to reach: the lower end of DPO's final interval over seeds
        level = dpo["gold_reward"] - dpo["gold_reward_ci95"]
        summary["dpo_interval_low"] = level
        for mode in methods_of(runs):
            if "curve" in summary.get(mode, {}):
                summary[mode]["labels_to_reach_dpo_interval"] = labels_to_reach(summary[mode]["curve"], level)
                summary[mode]["area_under_curve"] = area_under(summary[mode]["curve"], dpo["queries"])
        summary["target"] = meets_target(summary)
    return summary


def budget_rival(mode: str, modes: set[str]) -> str | None:
    """The uniform-sampling run a mode is compared with at the same budget (ADPO's, or apl@F's F), trained
    as the mode is: random-onepass for ADPO's one-pass modes (random, in rounds, where a result has no
    random-onepass), random for APL's rounds."""
    if mode.startswith("apl@"):
        return "random@" + mode.removeprefix("apl@")
    if mode in ("adpo", "adpo-nopl"):
        return "random-onepass" if "random-onepass" in modes else "random"
    return "random" if mode == "apl" else None


def meets_target(summary: dict) -> list[str]:
    """The modes that reach the lower end of DPO's final interval, over seeds, with at most TARGET_SHARE of
    DPO's labels, and whose final gold reward is above the upper end of random's interval at their budget."""
    dpo, level = summary["dpo"], summary["dpo_interval_low"]
    out = []
    for mode, row in summary.items():
        rival = summary.get(budget_rival(mode, set(summary))) if isinstance(row, dict) and mode != "dpo" else None
        if (rival and row["queries"] <= TARGET_SHARE * dpo["queries"] and row["gold_reward"] >= level
                and row["gold_reward"] > rival["gold_reward"] + rival["gold_reward_ci95"]):
            out.append(mode)
    return out


def agreement_by_confidence(runs: list[dict], parts: int = 4) -> list[tuple[int, int]]:
    """(agreeing, audits) in each of `parts` slices of every run's audits ranked by |m|, the most confident
    slice first, added over runs: whether the policy is right more often where it is surer."""
    totals = [[0, 0] for _ in range(parts)]
    for run in runs:
        ranked = sorted(run.get("audit_record", []), key=lambda audit: -audit[0])
        for i, (_, agreed) in enumerate(ranked):
            part = totals[parts * i // len(ranked)]
            part[0] += agreed
            part[1] += 1
    return [(agreed, n) for agreed, n in totals]


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    audited = [r for r in result["runs"] if r.get("audit_record")]
    fig, axes = plt.subplots(1, 3 if audited else 2, figsize=(19.5 if audited else 13, 4.5))
    ax, frontier_ax = axes[:2]
    colors = {"dpo": "#d62728", "adpo": "#1f77b4", "adpo-nopl": "#2ca02c", "random-onepass": "#8c564b",
              "random": "#7f7f7f", "apl": "#9467bd"}
    s = result["summary"]
    for mode in methods_of(result["runs"]):  # a budget's runs (random@F, apl@F) dashed, in their mode's colour
        curve = mean_curve(result["runs"], mode)
        if curve:
            xs = [p["queries"] for p in curve]
            ys = np.array([p["gold_reward"] for p in curve])
            ci = np.array([p["gold_reward_ci95"] for p in curve])
            colour = colors[mode.split("@")[0]]
            ax.plot(xs, ys, marker="o", color=colour, ls="--" if "@" in mode else "-", label=mode)
            ax.fill_between(xs, ys - ci, ys + ci, color=colour, alpha=0.12)
    budgets = sorted((s[m]["queries"], s[m]["gold_reward"], s[m]["gold_reward_ci95"]) for m in s
                     if m.startswith("random@") or m == "random")
    if len(budgets) > 1:  # uniform sampling's final gold reward at each budget
        xs, ys, ci = (np.array(v) for v in zip(*budgets))
        ax.errorbar(xs, ys, yerr=ci, color="black", ls="--", marker="s", capsize=3, label="random, final, by budget")
    apl_budgets = sorted((s[m]["queries"], s[m]["gold_reward"], s[m]["gold_reward_ci95"]) for m in s
                         if m.startswith("apl@"))
    if len(apl_budgets) > 1:
        xs, ys, ci = (np.array(v) for v in zip(*apl_budgets))
        ax.errorbar(xs, ys, yerr=ci, color=colors["apl"], ls="--", marker="D", capsize=3, label="apl, final, by budget")
    low = s.get("dpo_interval_low")
    if low is not None:
        ax.axhline(low, color=colors["dpo"], ls=":", lw=1, label="DPO's final interval, lower end")
    ax.set_xlabel("labels bought (queries to the annotator)")
    ax.set_ylabel("gold reward (held-out prompts)")
    ax.set_title(f"{result['task']}, tau={result['config']['tau']}: mean over {len(result['seeds'])} seed(s), "
                 "95% t interval")
    ax.legend()
    plot_frontier(frontier_ax, result["runs"], lambda r: r["method"], colour=lambda mode: colors[mode.split("@")[0]])
    if audited:
        parts = agreement_by_confidence(audited)
        shares = [agreed / n if n else 0.0 for agreed, n in parts]
        bounds = [wilson_interval(agreed, n) if n else (0.0, 0.0) for agreed, n in parts]
        yerr = np.array([[share - low for share, (low, _) in zip(shares, bounds)],
                         [high - share for share, (_, high) in zip(shares, bounds)]])
        labels = [f"{i + 1}\n({n} audits)" for i, (_, n) in enumerate(parts)]
        axes[2].bar(labels, shares, yerr=yerr, capsize=4, color=colors["adpo"])
        axes[2].axhline(result["config"].get("min_agreement", 0.75), color="black", ls=":", lw=1,
                        label="agreement trust needs (lower bound)")
        axes[2].set_ylim(0, 1)
        axes[2].set_xlabel("quarter of each run's audits by confidence |m|, most confident first")
        axes[2].set_ylabel("audits agreeing with the policy's guess")
        axes[2].set_title(f"is the policy right more often where it is surer? ({len(audited)} run(s), Wilson 95%)")
        axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    for option, fractions in (("--random-budgets", args.random_budgets), ("--apl-budgets", args.apl_budgets)):
        if not all(0 < f <= 1 for f in fractions):
            raise UserError(f"{option}: fractions of DPO's labels, in (0, 1]; got {fractions}")
    if any(m in BUDGETED for m in args.modes) and "adpo" not in args.modes:
        raise UserError(f"--modes {' '.join(args.modes)}: random-onepass, random and apl get adpo's budget, so adpo "
                        "must run too")
    budgets = dict.fromkeys([*args.random_budgets, *args.apl_budgets])  # apl@F is always beside random@F
    names = [*(m for m in MODES if m in args.modes), *(f"random@{f:g}" for f in budgets),
             *(f"apl@{f:g}" for f in args.apl_budgets)]
    seeds = seeds_of(args)
    done = BenchRuns("adpo", args)
    with tempfile.TemporaryDirectory(prefix="frugalign-bench-") as tmp:
        for seed in seeds:
            task = config = None
            by_mode = {}
            for mode in names:
                by_mode[mode] = done.find(seed=seed, method=mode)
                if by_mode[mode] is not None:
                    continue
                if task is None:
                    task = bench_task(args, seed)
                    settings = task_settings(task, args, quick_epochs=1)
                    config = {"tau": args.tau, "gamma": args.gamma, "query_warmup": args.query_warmup,
                              "audit_rate": args.audit_rate, "audit_window": args.audit_window,
                              "min_agreement": args.min_agreement, "trust_by_confidence": args.trust_by_confidence,
                              "acquisition_batch_size": args.acquisition_batch_size,
                              "apl_epochs_per_round": args.apl_epochs_per_round,
                              "random_budgets": args.random_budgets, "apl_budgets": args.apl_budgets,
                              "modes": args.modes, **settings, "model": args.model,
                              "prompts": args.prompts, "gold_reward": args.gold_reward}
                if "@" in mode:
                    base, fraction = mode.split("@")[0], float(mode.split("@")[1])
                    budget = max(1, round(fraction * pool_size(task)))
                    by_mode[mode] = run_mode(task, base, seed, args, settings, Path(tmp) / mode, budget=budget)
                    by_mode[mode].update(method=mode, params={**by_mode[mode]["params"], "budget_fraction": fraction})
                else:
                    # random-onepass, random and apl get ADPO's budget: the same number of labels, drawn uniformly
                    # or by APL's rule
                    budget = max(1, by_mode["adpo"]["queries"]) if mode in BUDGETED else -1
                    by_mode[mode] = run_mode(task, mode, seed, args, settings, Path(tmp), budget=budget)
                done.add(by_mode[mode], config)
            console.print(f"seed {seed}: " + " · ".join(f"{m}: gold {r['gold_reward']:.3f}, {r['queries']} queries"
                                                        for m, r in by_mode.items()))
    runs = [done.find(seed=seed, method=mode) for seed in seeds for mode in names]
    result = {"bench": "adpo", "task": args.task, "mode": "quick" if args.quick else "full", "seeds": seeds,
              "config": done.config, "bench_seconds": done.seconds(), "machine": machine_info(),
              "runs": runs, "summary": summarise(runs)}
    out = done.finish(result)
    plot(result, out.with_suffix(".png"))
    s = result["summary"]
    table = {}
    for m in (m for m in names if m in s):
        reach = s[m].get("labels_to_reach_dpo_interval")
        paired = s[m].get("minus_random")
        parts = [f"gold {s[m]['gold_reward']:.3f} ± {s[m]['gold_reward_ci95']:.3f}", f"{s[m]['queries']:.0f} queries"]
        if s[m]["label_agreement"] is not None:
            parts.append(f"{s[m]['label_agreement']:.0%} of its labels agree with the gold reward")
        if "dpo_interval_low" in s:  # no dpo run: no interval to reach
            parts.append(f"DPO's interval at {reach:.0f} labels" if reach is not None else "never reaches DPO's interval")
        if paired:
            parts.append(f"{paired_text(paired)} vs {budget_rival(m, set(s))} (paired by seed)")
        # the difference at each round, not only the last; a number of labels only one seed reached (a
        # one-pass mode's own final count) is that seed's difference, not a comparison over seeds
        shared = [p for p in s[m].get("minus_random_curve", []) if p["seeds"] > 1]
        if len(shared) > 1:
            parts.append("by labels: " + "; ".join(f"{p['queries']}: {paired_text(p)}" for p in shared))
        table[m] = ", ".join(parts)
    if "adpo_query_fraction" in s:
        table["ADPO queries / DPO queries"] = f"{s['adpo_query_fraction']:.2f}"
    if "target" in s:
        table[f"target (DPO's interval with <= {TARGET_SHARE:.0%} of its labels, above random)"] = (
            ", ".join(s["target"]) or "met by no mode")
    console.print(summary_table(f"bench adpo · {args.task} · tau {args.tau} · seeds {seeds}",
                                {**table, "results": str(out)}))
    return 0
