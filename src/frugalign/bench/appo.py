"""`frugalign bench appo`: APPO against the always-query, informative-only and random-at-APPO's-rate
learners in a linear contextual dueling bandit; queries and regret against the horizon T, the dimension
d and the gap Delta, log-log fits of queries against d^2/Delta^2 and regret against d^2/Delta, and a
sweep of Gamma: regret against queries for each scale, where the rule's saving is measured against the
learner that asks every informative duel (always-query also pays for duels of an action with itself,
which no rule is needed to skip).

Gamma, APPO's query threshold, is scale * Delta / sqrt(d): a comparison stops being worth a query once
its uncertainty, scaled by a confidence radius that grows like sqrt(d), is below the gap. This
instance-dependent choice is ours (the paper's constants were not available); --gamma-scale is the scale
of the T, d and Delta sweeps, --gamma-scales those of the Gamma sweep, and --scaling-scales repeats the d
and Delta sweeps for APPO at scales where Gamma binds (at a small scale APPO asks every informative duel,
and its fits describe `informative`). The Gamma sweep also runs the learner's two variants that lock less
(a forced-exploration share, a Gamma that shrinks as queries accumulate) at the scales given for them.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from frugalign.bandit import make_bandit, simulate
from frugalign.console import console, progress_bar, progress_line, summary_table
from frugalign.results import machine_info, write_results
from frugalign.stats import ci95

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
    parser.add_argument("--scaling-scales", type=float, nargs="+", default=None,
                        help="Gamma scales at which APPO's d and Delta sweeps are repeated, where Gamma binds "
                             "(default 0.85 1; quick 1)")
    parser.add_argument("--explore-shares", type=float, nargs="+", default=None,
                        help="APPO's forced-exploration shares tried in the Gamma sweep, each at every "
                             "--explore-scales (default 0.05 0.1; quick 0.05)")
    parser.add_argument("--explore-scales", type=float, nargs="+", default=None,
                        help="Gamma scales of the forced-exploration runs (default 1 1.1 1.15 1.25: 0.1 at 1.15 met the "
                             "target on held-out seeds; quick 2)")
    parser.add_argument("--shrink-scales", type=float, nargs="+", default=None,
                        help="Gamma scales of APPO with a Gamma that shrinks as queries accumulate "
                             "(default 2.5 3.5; quick 2)")
    parser.add_argument("--eta", type=float, default=0.002, help="proximal step size of the policy update")
    parser.add_argument("--out", default="bench-appo.json", help="result JSON (PNGs are written beside it)")


def fit_power(x, y) -> dict:
    """The least-squares line of log y against log x: its slope (the exponent), intercept and R^2."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    slope, intercept = np.polyfit(lx, ly, 1)
    residual = ly - (slope * lx + intercept)
    r2 = 1.0 - residual.var() / ly.var() if ly.var() > 0 else 1.0
    return {"exponent": float(slope), "intercept": float(intercept), "r2": float(r2)}


def values(runs: list[dict], method: str, key: str, **params) -> list:
    """`key` of every run of `method` whose params have the given values."""
    return [r[key] for r in runs if r["method"] == method and all(r["params"].get(k) == v for k, v in params.items())]


PLAIN = {"explore": 0.0, "gamma_shrinks": False}  # APPO's own rule, neither variant


def run_point(d: int, gap: float, horizon: int, seed: int, args, curve_points: list[int] | None = None,
              scale: float | None = None, learners: tuple[str, ...] = LEARNERS, explore: float = 0.0,
              gamma_shrinks: bool = False) -> list[dict]:
    env = make_bandit(d, gap, seed=seed)
    scale = args.gamma_scale if scale is None else scale
    gamma = scale * gap / math.sqrt(d)
    runs = []
    appo_rate = None
    for learner in learners:
        began = time.perf_counter()
        result = simulate(env, learner, horizon, gamma=gamma, query_rate=appo_rate or 1.0, eta=args.eta, seed=seed,
                          explore=explore, gamma_shrinks=gamma_shrinks)
        if learner == "appo":
            appo_rate = max(result.queries[-1], 1) / horizon
        uses_gamma = learner in ("appo", "random")  # random's budget is APPO's at this Gamma
        run = {"method": learner, "seed": seed,
               "params": {"T": horizon, "d": d, "gap": gap, "gamma": gamma if uses_gamma else None,
                          "gamma_scale": scale if uses_gamma else None,
                          "explore": explore if learner == "appo" else None,
                          "gamma_shrinks": gamma_shrinks if learner == "appo" else None},
               "queries": int(result.queries[-1]), "regret": float(result.regret[-1]), "generations": 0,
               "time_s": {"total": time.perf_counter() - began}}
        if curve_points:
            run["curve"] = [{"T": t, "queries": int(result.queries[t - 1]), "regret": float(result.regret[t - 1])}
                            for t in curve_points]
        runs.append(run)
    return runs


def gamma_sweep(runs: list[dict], horizon: int, base_d: int, base_gap: float, scales: list[float],
                variants: list[tuple[float, float, bool]]) -> dict:
    """Per Gamma scale at the base setting: APPO's and random's (at APPO's budget) queries and regret, as
    means over seeds with t intervals, and APPO's share of informative's queries and ratio to its regret;
    the same for APPO's variants, one row per (scale, explore, gamma_shrinks)."""
    def stats(method, key, **params):
        vals = values(runs, method, key, T=horizon, d=base_d, gap=base_gap, **params)
        return {"mean": float(np.mean(vals)), "ci95": ci95(vals), "seeds": len(vals)}

    informative = {key: stats("informative", key) for key in ("queries", "regret")}

    def against_informative(row: dict, **params) -> dict:
        # in the order of `seeds`: the jobs run them innermost
        row["appo_regret_by_seed"] = values(runs, "appo", "regret", T=horizon, d=base_d, gap=base_gap, **params)
        row["query_share_of_informative"] = row["appo_queries"]["mean"] / informative["queries"]["mean"]
        row["regret_over_informative"] = row["appo_regret"]["mean"] / informative["regret"]["mean"]
        row["meets_target"] = (row["query_share_of_informative"] <= QUERY_SHARE
                               and row["regret_over_informative"] <= REGRET_RATIO)
        return row

    out: dict = {"informative": informative, "scales": {}, "variants": []}
    for scale in scales:
        row = {f"{m}_{key}": stats(m, key, gamma_scale=scale, **(PLAIN if m == "appo" else {}))
               for m in ("appo", "random") for key in ("queries", "regret")}
        out["scales"][str(scale)] = against_informative(row, gamma_scale=scale, **PLAIN)
    for scale, explore, shrinks in variants:
        params = {"gamma_scale": scale, "explore": explore, "gamma_shrinks": shrinks}
        row = {f"appo_{key}": stats("appo", key, **params) for key in ("queries", "regret")}
        out["variants"].append({**params, **against_informative(row, **params)})
    out["target"] = (f"APPO queries <= {QUERY_SHARE} x informative's at regret <= {REGRET_RATIO} x informative's "
                     "(means over seeds)")
    out["scales_meeting_target"] = [float(k) for k, v in out["scales"].items() if v["meets_target"]]
    out["variants_meeting_target"] = [{k: v[k] for k in ("gamma_scale", "explore", "gamma_shrinks")}
                                      for v in out["variants"] if v["meets_target"]]
    return out


def scaling(runs: list[dict], sweep_horizon: int, base_d: int, base_gap: float, scale: float) -> dict:
    """APPO at one Gamma scale over the d and Delta sweeps: per (d, Delta) its mean queries and regret beside
    informative's, and log-log fits against the bounds' arguments (all points) and against d (at the base
    Delta) and Delta (at the base d) alone."""
    keys = sorted({(r["params"]["d"], r["params"]["gap"]) for r in runs
                   if r["method"] == "informative" and r["params"]["T"] == sweep_horizon})
    points = []
    for d, gap in keys:
        q = float(np.mean(values(runs, "appo", "queries", T=sweep_horizon, d=d, gap=gap, gamma_scale=scale, **PLAIN)))
        reg = float(np.mean(values(runs, "appo", "regret", T=sweep_horizon, d=d, gap=gap, gamma_scale=scale, **PLAIN)))
        inf_q = float(np.mean(values(runs, "informative", "queries", T=sweep_horizon, d=d, gap=gap)))
        inf_reg = float(np.mean(values(runs, "informative", "regret", T=sweep_horizon, d=d, gap=gap)))
        points.append({"d": d, "gap": gap, "appo_queries": q, "appo_regret": reg, "informative_queries": inf_q,
                       "informative_regret": inf_reg, "query_share_of_informative": q / inf_q,
                       "regret_over_informative": reg / inf_reg})

    if len(points) < 3:  # too few (d, Delta) to fit a line
        return {"points": points}

    def fit(key, x, where=lambda p: True):
        chosen = [p for p in points if where(p)]
        return fit_power([x(p) for p in chosen], [p[key] for p in chosen])

    at_base_gap, at_base_d = (lambda p: p["gap"] == base_gap), (lambda p: p["d"] == base_d)
    return {"points": points,
            "queries_vs_d2_over_gap2": fit("appo_queries", lambda p: p["d"] ** 2 / p["gap"] ** 2),
            "regret_vs_d2_over_gap": fit("appo_regret", lambda p: p["d"] ** 2 / p["gap"]),
            "queries_vs_d": fit("appo_queries", lambda p: p["d"], at_base_gap),
            "queries_vs_gap": fit("appo_queries", lambda p: p["gap"], at_base_d),
            "regret_vs_d": fit("appo_regret", lambda p: p["d"], at_base_gap),
            "regret_vs_gap": fit("appo_regret", lambda p: p["gap"], at_base_d)}


def summarise(runs: list[dict], horizon: int, sweep_horizon: int, base_d: int, base_gap: float,
              scale: float, scales: list[float], variants: list[tuple[float, float, bool]],
              scaling_scales: list[float]) -> dict:
    def mean(method, key, **params):
        vals = values(runs, method, key, T=horizon, d=base_d, gap=base_gap, **params)
        return float(np.mean(vals)), ci95(vals)

    summary: dict = {"gamma_sweep": gamma_sweep(runs, horizon, base_d, base_gap, scales, variants)}
    # queries against T over the last decade of the horizon sweep
    for method in LEARNERS:
        curves = [r["curve"] for r in runs if r["method"] == method and "curve" in r]
        if curves:
            points = [p["T"] for p in curves[0] if p["T"] >= horizon / 10]
            q = [np.mean([next(p["queries"] for p in c if p["T"] == t) for c in curves]) for t in points]
            summary[f"{method}_queries_vs_T_exponent_last_decade"] = fit_power(points, np.maximum(q, 1))["exponent"]
    appo_reg, _ = mean("appo", "regret", gamma_scale=scale, **PLAIN)
    always_reg, _ = mean("always", "regret")
    summary["appo_over_always_regret"] = appo_reg / always_reg if always_reg > 0 else None
    summary["appo_queries"], summary["appo_queries_ci95"] = mean("appo", "queries", gamma_scale=scale, **PLAIN)
    summary["always_queries"], _ = mean("always", "queries")
    summary["informative_queries"], _ = mean("informative", "queries")
    summary["scaling"] = {str(s): scaling(runs, sweep_horizon, base_d, base_gap, s) for s in scaling_scales}
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

    pngs = [first]
    scaling = result["summary"]["scaling"]
    if any("queries_vs_d2_over_gap2" in sc for sc in scaling.values()):  # one (d, Delta) point fits no slope
        pngs.append(plot_scaling(scaling, c, f"{stem}-scaling.png"))

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
    labelled = set()
    for row in sweep["variants"]:
        variant = "Gamma shrinks" if row["gamma_shrinks"] else "forced exploration"
        color, marker = ("#9467bd", "v") if row["gamma_shrinks"] else ("#ff7f0e", "^")
        q, reg = row["appo_queries"], row["appo_regret"]
        ax.errorbar(q["mean"], reg["mean"], xerr=q["ci95"], yerr=reg["ci95"], fmt=marker, color=color, capsize=3,
                    label=f"APPO, {variant}" if variant not in labelled else None)
        labelled.add(variant)
        note = f"{row['gamma_scale']}" + (f" e{row['explore']}" if row["explore"] else "")
        ax.annotate(note, (q["mean"], reg["mean"]), textcoords="offset points", xytext=(5, -10), fontsize=7, color=color)
    inf = sweep["informative"]
    ax.errorbar(inf["queries"]["mean"], inf["regret"]["mean"], xerr=inf["queries"]["ci95"], yerr=inf["regret"]["ci95"],
                fmt="s", color="#2ca02c", capsize=3, label="informative (every duel of two actions)")
    ax.axvline(QUERY_SHARE * inf["queries"]["mean"], color="#2ca02c", ls=":", lw=1)
    ax.axhline(REGRET_RATIO * inf["regret"]["mean"], color="#2ca02c", ls=":", lw=1, label="target bounds")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"queries at T={c['horizon']}")
    ax.set_ylabel("cumulative regret")
    ax.set_title("Gamma sweep: regret against queries\n(labels: Gamma scale, e: explore share; mean, 95% t intervals)",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    third = f"{stem}-gamma.png"
    fig.savefig(third, dpi=120)
    plt.close(fig)
    return pngs + [third]


def plot_scaling(scaling: dict, config: dict, path: str) -> str:
    """APPO's queries and regret against the bounds' d^2/Delta^2 and d^2/Delta, a line per fitted Gamma scale."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    colors = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")
    for ax, key, fit_key, x, bound in (
            (left, "appo_queries", "queries_vs_d2_over_gap2", lambda p: p["d"] ** 2 / p["gap"] ** 2, "d^2 / Delta^2"),
            (right, "appo_regret", "regret_vs_d2_over_gap", lambda p: p["d"] ** 2 / p["gap"], "d^2 / Delta")):
        for (scale, sc), color in zip(scaling.items(), colors):
            if fit_key not in sc:
                continue
            xs, ys = [x(p) for p in sc["points"]], [p[key] for p in sc["points"]]
            f = sc[fit_key]
            ax.loglog(xs, ys, "o", color=color)
            grid = np.linspace(np.log(min(xs)), np.log(max(xs)), 50)
            ax.plot(np.exp(grid), np.exp(f["intercept"] + f["exponent"] * grid), color=color,
                    label=f"Gamma scale {scale}: slope {f['exponent']:.2f} (R^2 {f['r2']:.2f})")
        # the bound predicts growth proportional to its argument (slope 1), up to log factors
        ax.plot(np.exp(grid), np.exp(np.log(ys).mean() + grid - np.log(xs).mean()), ":", color="black",
                label=f"the bound O~({bound}): slope 1")
        ax.set_xlabel(bound)
        ax.set_ylabel(f"APPO {key.split('_')[1]} at T={config['sweep_horizon']}")
        ax.legend(fontsize=7)
    fig.suptitle("APPO against its bounds, each point one (d, Delta), mean over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2, 3, 4])
    horizon = args.horizon or (5000 if args.quick else 100_000)
    sweep_horizon = args.sweep_horizon or (2000 if args.quick else 20_000)
    dims = args.dims or ([4, 8] if args.quick else [4, 8, 16, 32])
    gaps = args.gaps or ([0.2, 0.4] if args.quick else [0.1, 0.2, 0.4])
    scales = args.gamma_scales or ([0.2, 2.0] if args.quick else [0.2, 0.5, 0.7, 0.85, 1.0, 1.25, 2.0, 3.0, 4.0])
    scaling_scales = args.scaling_scales or ([1.0] if args.quick else [0.85, 1.0])
    explore_shares = args.explore_shares or ([0.05] if args.quick else [0.05, 0.1])
    explore_scales = args.explore_scales or ([2.0] if args.quick else [1.0, 1.1, 1.15, 1.25])
    shrink_scales = args.shrink_scales or ([2.0] if args.quick else [2.5, 3.5])
    variants = ([(sc, share, False) for share in explore_shares for sc in explore_scales]
                + [(sc, 0.0, True) for sc in shrink_scales])
    base_d, base_gap = 8, 0.2
    points = sorted({int(round(10 ** e)) for e in np.arange(2, math.log10(horizon) + 1e-9, 0.25)} | {horizon})
    plain = (0.0, False)
    jobs = [(base_d, base_gap, horizon, s, points, args.gamma_scale, LEARNERS, *plain) for s in seeds]
    jobs += [(d, base_gap, sweep_horizon, s, None, args.gamma_scale, LEARNERS, *plain) for d in dims for s in seeds]
    jobs += [(base_d, g, sweep_horizon, s, None, args.gamma_scale, LEARNERS, *plain) for g in gaps if g != base_gap
             for s in seeds]
    # APPO's d and Delta sweeps again where Gamma binds (the runs above hold --gamma-scale's)
    jobs += [(d, g, sweep_horizon, s, None, sc, ("appo",), *plain)
             for sc in scaling_scales if sc != args.gamma_scale
             for d, g in [(d, base_gap) for d in dims] + [(base_d, g) for g in gaps if g != base_gap] for s in seeds]
    # the Gamma sweep: the base setting's runs above already hold the --gamma-scale point
    jobs += [(base_d, base_gap, horizon, s, None, sc, ("appo", "random"), *plain) for sc in scales
             if sc != args.gamma_scale for s in seeds]
    jobs += [(base_d, base_gap, horizon, s, None, sc, ("appo",), explore, shrinks) for sc, explore, shrinks in variants
             for s in seeds]
    began = time.perf_counter()
    runs: list[dict] = []
    with progress_bar() as progress:
        task = progress.add_task("bandit runs", total=len(jobs))
        for i, (d, gap, T, seed, curve, scale, learners, explore, shrinks) in enumerate(jobs, start=1):
            runs += run_point(d, gap, T, seed, args, curve, scale, learners, explore, shrinks)
            progress.advance(task)
            progress_line("bandit runs", i, len(jobs), time.perf_counter() - began)
    result = {"bench": "appo", "task": "linear-dueling-bandit", "mode": "quick" if args.quick else "full", "seeds": seeds,
              "config": {"horizon": horizon, "sweep_horizon": sweep_horizon, "dims": dims, "gaps": gaps,
                         "base_d": base_d, "base_gap": base_gap, "gamma": "gamma_scale * Delta / sqrt(d)",
                         "gamma_scale": args.gamma_scale, "gamma_scales": scales, "scaling_scales": scaling_scales,
                         "explore_shares": explore_shares, "explore_scales": explore_scales,
                         "shrink_scales": shrink_scales, "eta": args.eta, "lambda": 1.0, "contexts": 16, "actions": 8},
              "machine": machine_info(), "runs": runs,
              "summary": summarise(runs, horizon, sweep_horizon, base_d, base_gap, args.gamma_scale,
                                   sorted(set(scales) | {args.gamma_scale}), variants,
                                   sorted(set(scaling_scales) | {args.gamma_scale}))}
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
    for row in s["gamma_sweep"]["variants"]:
        met = " (target met)" if row["meets_target"] else ""
        name = "Gamma shrinks" if row["gamma_shrinks"] else f"explore {row['explore']}"
        rows[f"{name}, scale {row['gamma_scale']}"] = (f"{row['query_share_of_informative']:.2f} of informative's "
                                                       f"queries, regret {row['regret_over_informative']:.2f}x{met}")
    for scale, sc in s["scaling"].items():
        if "queries_vs_d2_over_gap2" not in sc:
            continue
        q, reg = sc["queries_vs_d2_over_gap2"], sc["regret_vs_d2_over_gap"]
        rows[f"scale {scale}: queries vs d^2/Delta^2"] = f"{q['exponent']:.2f} (R^2 {q['r2']:.2f})"
        rows[f"scale {scale}: regret vs d^2/Delta"] = f"{reg['exponent']:.2f} (R^2 {reg['r2']:.2f})"
    rows.update({"seconds": f"{s['seconds']:.0f}", "results": str(out), "plots": ", ".join(pngs)})
    console.print(summary_table(f"bench appo · {len(seeds)} seed(s)", rows))
    return 0
