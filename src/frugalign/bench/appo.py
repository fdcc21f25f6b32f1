"""`frugalign bench appo`: APPO against the always-query, informative-only and random-at-APPO's-rate
learners in a linear contextual dueling bandit; queries and regret against the horizon T, the dimension
d and the gap Delta, log-log fits of queries against d^2/Delta^2 and regret against d^2/Delta, and a
sweep of Gamma: regret against queries for each scale, where the rule's saving is measured against the
learner that asks every informative duel (always-query also pays for duels of an action with itself,
which no rule is needed to skip).

Gamma, APPO's query threshold, is scale * Delta / sqrt(d): a comparison stops being worth a query once
its uncertainty, scaled by a confidence radius that grows like sqrt(d), is below the gap. This
instance-dependent choice is ours (the paper's constants were not available); --gamma-scale is the scale
of the T, d and Delta sweeps, --gamma-scales those of the Gamma sweep.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from frugalign.bandit import make_bandit, simulate
from frugalign.bench.results import ci95, machine_info, write_results
from frugalign.console import console, progress_bar, progress_line, summary_table

LEARNERS = ("appo", "always", "informative", "random")
# the target of the Gamma sweep: APPO asks at most this share of informative's queries ...
QUERY_SHARE, REGRET_RATIO = 0.5, 1.5  # ... at a regret within this factor of informative's


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small sweep, one seed: a smoke test")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0..4 (quick: 0)")
    parser.add_argument("--horizon", type=int, default=None, help="T of the horizon sweep (default 100000; quick 5000)")
    parser.add_argument("--dims", type=int, nargs="+", default=None, help="d sweep (default 4 8 16 32)")
    parser.add_argument("--gaps", type=float, nargs="+", default=None, help="Delta sweep (default 0.1 0.2 0.4)")
    parser.add_argument("--sweep-horizon", type=int, default=None, help="T of the d and Delta sweeps (default 20000)")
    parser.add_argument("--gamma-scale", type=float, default=0.2,
                        help="Gamma = scale * Delta / sqrt(d) in the T, d and Delta sweeps")
    parser.add_argument("--gamma-scales", type=float, nargs="+", default=None,
                        help="scales of the Gamma sweep at d=8, Delta=0.2, T=--horizon (default 0.2 0.5 0.7 0.85 1 1.25 2 3 4; "
                             "quick 0.2 2)")
    parser.add_argument("--eta", type=float, default=0.002, help="proximal step size of the policy update")
    parser.add_argument("--out", default="bench-appo.json", help="result JSON (PNGs are written beside it)")


def fit_power(x, y) -> tuple[float, float]:
    """Slope and R^2 of log y against log x."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    slope, intercept = np.polyfit(lx, ly, 1)
    residual = ly - (slope * lx + intercept)
    r2 = 1.0 - residual.var() / ly.var() if ly.var() > 0 else 1.0
    return float(slope), float(r2)


def run_point(d: int, gap: float, horizon: int, seed: int, args, curve_points: list[int] | None = None,
              scale: float | None = None, learners: tuple[str, ...] = LEARNERS) -> list[dict]:
    env = make_bandit(d, gap, seed=seed)
    scale = args.gamma_scale if scale is None else scale
    gamma = scale * gap / math.sqrt(d)
    runs = []
    appo_rate = None
    for learner in learners:
        began = time.perf_counter()
        result = simulate(env, learner, horizon, gamma=gamma, query_rate=appo_rate or 1.0, eta=args.eta, seed=seed)
        if learner == "appo":
            appo_rate = max(result.queries[-1], 1) / horizon
        uses_gamma = learner in ("appo", "random")  # random's budget is APPO's at this Gamma
        run = {"method": learner, "seed": seed,
               "params": {"T": horizon, "d": d, "gap": gap, "gamma": gamma if uses_gamma else None,
                          "gamma_scale": scale if uses_gamma else None},
               "queries": int(result.queries[-1]), "regret": float(result.regret[-1]), "generations": 0,
               "time_s": {"total": time.perf_counter() - began}}
        if curve_points:
            run["curve"] = [{"T": t, "queries": int(result.queries[t - 1]), "regret": float(result.regret[t - 1])}
                            for t in curve_points]
        runs.append(run)
    return runs


def gamma_sweep(runs: list[dict], horizon: int, base_d: int, base_gap: float, scales: list[float]) -> dict:
    """Per Gamma scale at the base setting: APPO's and random's (at APPO's budget) queries and regret, as
    means over seeds with t intervals, and APPO's share of informative's queries and ratio to its regret."""
    def stats(method, key, scale):
        vals = [r[key] for r in runs if r["method"] == method and r["params"]["T"] == horizon
                and r["params"]["d"] == base_d and r["params"]["gap"] == base_gap and r["params"]["gamma_scale"] == scale]
        return {"mean": float(np.mean(vals)), "ci95": ci95(vals), "seeds": len(vals)}

    informative = {key: stats("informative", key, None) for key in ("queries", "regret")}
    out: dict = {"informative": informative, "scales": {}}
    for scale in scales:
        row = {f"{m}_{key}": stats(m, key, scale) for m in ("appo", "random") for key in ("queries", "regret")}
        row["query_share_of_informative"] = row["appo_queries"]["mean"] / informative["queries"]["mean"]
        row["regret_over_informative"] = row["appo_regret"]["mean"] / informative["regret"]["mean"]
        row["meets_target"] = (row["query_share_of_informative"] <= QUERY_SHARE
                               and row["regret_over_informative"] <= REGRET_RATIO)
        out["scales"][str(scale)] = row
    out["target"] = (f"APPO queries <= {QUERY_SHARE} x informative's at regret <= {REGRET_RATIO} x informative's "
                     "(means over seeds)")
    out["scales_meeting_target"] = [float(k) for k, v in out["scales"].items() if v["meets_target"]]
    return out


def summarise(runs: list[dict], horizon: int, sweep_horizon: int, base_d: int, base_gap: float,
              scale: float, scales: list[float]) -> dict:
    def mean(method, key, **params):
        vals = [r[key] for r in runs if r["method"] == method and all(r["params"][k] == v for k, v in params.items())]
        return float(np.mean(vals)), ci95(vals)

    summary: dict = {"gamma_sweep": gamma_sweep(runs, horizon, base_d, base_gap, scales)}
    # queries against T over the last decade of the horizon sweep
    for method in LEARNERS:
        curves = [r["curve"] for r in runs if r["method"] == method and "curve" in r]
        if curves:
            points = [p["T"] for p in curves[0] if p["T"] >= horizon / 10]
            q = [np.mean([next(p["queries"] for p in c if p["T"] == t) for c in curves]) for t in points]
            summary[f"{method}_queries_vs_T_exponent_last_decade"] = fit_power(points, np.maximum(q, 1))[0]
    appo_reg, _ = mean("appo", "regret", T=horizon, d=base_d, gap=base_gap, gamma_scale=scale)
    always_reg, _ = mean("always", "regret", T=horizon, d=base_d, gap=base_gap)
    summary["appo_over_always_regret"] = appo_reg / always_reg if always_reg > 0 else None
    summary["appo_queries"], summary["appo_queries_ci95"] = mean("appo", "queries", T=horizon, d=base_d, gap=base_gap,
                                                                 gamma_scale=scale)
    summary["always_queries"], _ = mean("always", "queries", T=horizon, d=base_d, gap=base_gap)
    summary["informative_queries"], _ = mean("informative", "queries", T=horizon, d=base_d, gap=base_gap)
    sweep = [r for r in runs if r["method"] == "appo" and r["params"]["T"] == sweep_horizon]
    keys = sorted({(r["params"]["d"], r["params"]["gap"]) for r in sweep})
    if len(keys) > 2:
        q = [np.mean([r["queries"] for r in sweep if (r["params"]["d"], r["params"]["gap"]) == k]) for k in keys]
        reg = [np.mean([r["regret"] for r in sweep if (r["params"]["d"], r["params"]["gap"]) == k]) for k in keys]
        summary["queries_vs_d2_over_gap2"] = dict(zip(("exponent", "r2"), fit_power([d * d / g / g for d, g in keys], q)))
        summary["regret_vs_d2_over_gap"] = dict(zip(("exponent", "r2"), fit_power([d * d / g for d, g in keys], reg)))
        dims = sorted({d for d, _ in keys})
        gaps = sorted({g for _, g in keys})
        summary["queries_vs_d_exponent"] = fit_power(dims, [np.mean([r["queries"] for r in sweep if r["params"]["d"] == d
                                                                     and r["params"]["gap"] == base_gap]) for d in dims])[0]
        summary["queries_vs_gap_exponent"] = fit_power(gaps, [np.mean([r["queries"] for r in sweep if r["params"]["gap"] == g
                                                                       and r["params"]["d"] == base_d]) for g in gaps])[0]
        summary["regret_vs_d_exponent"] = fit_power(dims, [np.mean([r["regret"] for r in sweep if r["params"]["d"] == d
                                                                    and r["params"]["gap"] == base_gap]) for d in dims])[0]
        summary["regret_vs_gap_exponent"] = fit_power(gaps, [np.mean([r["regret"] for r in sweep if r["params"]["gap"] == g
                                                                      and r["params"]["d"] == base_d]) for g in gaps])[0]
    return summary


def plot(result: dict, stem) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for method, color in zip(LEARNERS, ("#1f77b4", "#d62728", "#2ca02c", "#7f7f7f")):
        curves = [r["curve"] for r in result["runs"] if r["method"] == method and "curve" in r]
        ts = [p["T"] for p in curves[0]]
        left.plot(ts, np.mean([[p["queries"] for p in c] for c in curves], axis=0), label=method, color=color)
        right.plot(ts, np.mean([[p["regret"] for p in c] for c in curves], axis=0), label=method, color=color)
    for ax, what in ((left, "cumulative queries"), (right, "cumulative regret")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("round T")
        ax.set_ylabel(what)
        ax.legend()
    c = result["config"]
    fig.suptitle(f"APPO vs always-query, informative and random (d={c['base_d']}, Delta={c['base_gap']}, "
                 f"Gamma scale {c['gamma_scale']}, {len(result['seeds'])} seeds)")
    fig.tight_layout()
    first = f"{stem}.png"
    fig.savefig(first, dpi=120)
    plt.close(fig)

    sweep = [r for r in result["runs"] if r["method"] == "appo" and r["params"]["T"] == c["sweep_horizon"]]
    keys = sorted({(r["params"]["d"], r["params"]["gap"]) for r in sweep})
    q = [np.mean([r["queries"] for r in sweep if (r["params"]["d"], r["params"]["gap"]) == k]) for k in keys]
    reg = [np.mean([r["regret"] for r in sweep if (r["params"]["d"], r["params"]["gap"]) == k]) for k in keys]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, xs, ys, what, bound in ((left, [d * d / g / g for d, g in keys], q, "queries", "d^2 / Delta^2"),
                                    (right, [d * d / g for d, g in keys], reg, "regret", "d^2 / Delta")):
        ax.loglog(xs, ys, "o", label="APPO (mean over seeds)")
        lx, ly = np.log(xs), np.log(ys)
        slope, intercept = np.polyfit(lx, ly, 1)
        grid = np.linspace(lx.min(), lx.max(), 50)
        ax.plot(np.exp(grid), np.exp(intercept + slope * grid), color="#1f77b4", label=f"fitted: slope {slope:.2f}")
        # the bound predicts growth proportional to its argument (slope 1), up to log factors
        ax.plot(np.exp(grid), np.exp(ly.mean() + grid - lx.mean()), ":", color="black",
                label=f"the bound O~({bound}): slope 1")
        ax.set_xlabel(bound)
        ax.set_ylabel(f"APPO {what} at T={c['sweep_horizon']}")
        ax.legend(fontsize=8)
    fig.suptitle("APPO against its bounds, each point one (d, Delta)")
    fig.tight_layout()
    second = f"{stem}-scaling.png"
    fig.savefig(second, dpi=120)
    plt.close(fig)

    sweep = result["summary"]["gamma_sweep"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, color in (("appo", "#1f77b4"), ("random", "#7f7f7f")):
        for i, (scale, row) in enumerate(sweep["scales"].items()):
            q, reg = row[f"{method}_queries"], row[f"{method}_regret"]
            ax.errorbar(q["mean"], reg["mean"], xerr=q["ci95"], yerr=reg["ci95"], fmt="o", color=color, capsize=3,
                        label=f"{method} (APPO's budget)" if method == "random" and i == 0 else
                        (method if i == 0 else None))
            if method == "appo":
                ax.annotate(f"{scale}", (q["mean"], reg["mean"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    inf = sweep["informative"]
    ax.errorbar(inf["queries"]["mean"], inf["regret"]["mean"], xerr=inf["queries"]["ci95"], yerr=inf["regret"]["ci95"],
                fmt="s", color="#2ca02c", capsize=3, label="informative (every duel of two actions)")
    ax.axvline(QUERY_SHARE * inf["queries"]["mean"], color="#2ca02c", ls=":", lw=1)
    ax.axhline(REGRET_RATIO * inf["regret"]["mean"], color="#2ca02c", ls=":", lw=1, label="target bounds")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"queries at T={c['horizon']}")
    ax.set_ylabel("cumulative regret")
    ax.set_title("Gamma sweep: regret against queries (labels: Gamma scale; mean, 95% t intervals)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    third = f"{stem}-gamma.png"
    fig.savefig(third, dpi=120)
    plt.close(fig)
    return [first, second, third]


def run(args: argparse.Namespace) -> int:
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2, 3, 4])
    horizon = args.horizon or (5000 if args.quick else 100_000)
    sweep_horizon = args.sweep_horizon or (2000 if args.quick else 20_000)
    dims = args.dims or ([4, 8] if args.quick else [4, 8, 16, 32])
    gaps = args.gaps or ([0.2, 0.4] if args.quick else [0.1, 0.2, 0.4])
    scales = args.gamma_scales or ([0.2, 2.0] if args.quick else [0.2, 0.5, 0.7, 0.85, 1.0, 1.25, 2.0, 3.0, 4.0])
    base_d, base_gap = 8, 0.2
    points = sorted({int(round(10 ** e)) for e in np.arange(2, math.log10(horizon) + 1e-9, 0.25)} | {horizon})
    jobs = [(base_d, base_gap, horizon, s, points, args.gamma_scale, LEARNERS) for s in seeds]
    jobs += [(d, base_gap, sweep_horizon, s, None, args.gamma_scale, LEARNERS) for d in dims for s in seeds]
    jobs += [(base_d, g, sweep_horizon, s, None, args.gamma_scale, LEARNERS) for g in gaps if g != base_gap for s in seeds]
    # the Gamma sweep: the base setting's runs above already hold the --gamma-scale point
    jobs += [(base_d, base_gap, horizon, s, None, sc, ("appo", "random")) for sc in scales if sc != args.gamma_scale
             for s in seeds]
    began = time.perf_counter()
    runs: list[dict] = []
    with progress_bar() as progress:
        task = progress.add_task("bandit runs", total=len(jobs))
        for i, (d, gap, T, seed, curve, scale, learners) in enumerate(jobs, start=1):
            runs += run_point(d, gap, T, seed, args, curve, scale, learners)
            progress.advance(task)
            progress_line("bandit runs", i, len(jobs), time.perf_counter() - began)
    result = {"bench": "appo", "task": "linear-dueling-bandit", "mode": "quick" if args.quick else "full", "seeds": seeds,
              "config": {"horizon": horizon, "sweep_horizon": sweep_horizon, "dims": dims, "gaps": gaps,
                         "base_d": base_d, "base_gap": base_gap, "gamma": "gamma_scale * Delta / sqrt(d)",
                         "gamma_scale": args.gamma_scale, "gamma_scales": scales, "eta": args.eta, "lambda": 1.0,
                         "contexts": 16, "actions": 8},
              "machine": machine_info(), "runs": runs,
              "summary": summarise(runs, horizon, sweep_horizon, base_d, base_gap, args.gamma_scale,
                                   sorted(set(scales) | {args.gamma_scale}))}
    result["summary"]["seconds"] = time.perf_counter() - began
    out = write_results(args.out, result)
    pngs = plot(result, str(out.with_suffix("")))
    s = result["summary"]
    appo_exp = s.get("appo_queries_vs_T_exponent_last_decade", float("nan"))
    always_exp = s.get("always_queries_vs_T_exponent_last_decade", float("nan"))
    rows = {
        f"APPO queries at T={horizon}":
            f"{s['appo_queries']:.0f} ± {s['appo_queries_ci95']:.0f} (always-query: {s['always_queries']:.0f})",
        "queries vs T exponent, last decade": f"appo {appo_exp:.3f} · always {always_exp:.3f}",
        "regret APPO / always-query": f"{s['appo_over_always_regret']:.2f}",
        "informative's queries": f"{s['informative_queries']:.0f}",
    }
    for scale, row in s["gamma_sweep"]["scales"].items():
        met = " (target met)" if row["meets_target"] else ""
        rows[f"Gamma scale {scale}"] = (f"{row['query_share_of_informative']:.2f} of informative's queries, regret "
                                        f"{row['regret_over_informative']:.2f}x{met}")
    if "queries_vs_d2_over_gap2" in s:
        q, reg = s["queries_vs_d2_over_gap2"], s["regret_vs_d2_over_gap"]
        rows["queries vs d^2/Delta^2 exponent"] = f"{q['exponent']:.2f} (R^2 {q['r2']:.2f})"
        rows["regret vs d^2/Delta exponent"] = f"{reg['exponent']:.2f} (R^2 {reg['r2']:.2f})"
    rows.update({"seconds": f"{s['seconds']:.0f}", "results": str(out), "plots": ", ".join(pngs)})
    console.print(summary_table(f"bench appo · {len(seeds)} seed(s)", rows))
    return 0
