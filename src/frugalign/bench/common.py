"""What the gold-oracle benches share: the task options (built-in tasks, or the user's own with
`--task custom --prompts FILE --gold-reward MODULE:FUNCTION [--model M]`), the seeds, the task's
training settings with the command line's overrides, the runs written as they finish (so that an
interrupted bench resumes), and the reward-against-KL frontier plot."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from frugalign.errors import UserError
from frugalign.results import write_results
from frugalign.stats import ci95
from frugalign.tasks import TASKS, Task, load_task


def add_task_arguments(parser: argparse.ArgumentParser, default: str, default_seeds: str = "0 1 2; quick: 0",
                       resumable: bool = True) -> None:
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
    if resumable:
        parser.add_argument("--resume", action="store_true",
                            help="go on with an interrupted bench, or add seeds to a finished one: keep the runs --out "
                                 "already holds (it is written after every run) when they were measured with the same "
                                 "options (--seeds aside)")


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
    if "beta" in args and args.beta is not None:
        settings["beta"] = args.beta
    if args.quick:
        settings["num_epochs"] = min(settings["num_epochs"], quick_epochs)
    return settings


def gold_over_seeds(runs: list[dict]) -> dict:
    """One setting's runs: the mean final gold reward, its 95% t interval over seeds, and how many seeds;
    with a single seed, the interval over that run's own held-out samples."""
    values = [r["gold_reward"] for r in runs]
    return {"gold_reward": float(np.mean(values)),
            "gold_reward_ci95": ci95(values) if len(values) > 1 else runs[0]["gold_reward_ci95"], "seeds": len(values)}


def paired_difference(runs: list[dict], others: list[dict]) -> dict | None:
    """`runs` minus `others`, paired by seed (both settings saw the seed's split, pool and evaluation prompts,
    so what the seeds share cancels): the mean difference of final gold rewards, its 95% t interval over the
    seeds both have (None from one seed), and how many; None when no seed is shared."""
    theirs = {o["seed"]: o["gold_reward"] for o in others}
    diffs = [r["gold_reward"] - theirs[r["seed"]] for r in runs if r["seed"] in theirs]
    if not diffs:
        return None
    return {"mean": float(np.mean(diffs)), "ci95": ci95(diffs) if len(diffs) > 1 else None, "seeds": len(diffs)}


def paired_text(diff: dict) -> str:
    """A `paired_difference` as text: the mean and, from two seeds on, its 95% interval."""
    return f"{diff['mean']:+.3f}" + (f" ± {diff['ci95']:.3f}" if diff["ci95"] is not None else "")


def paired_curves(runs: list[dict], others: list[dict]) -> list[dict]:
    """`runs` minus `others` at every number of labels both curves were evaluated at, paired by seed (a mode
    and its rival at the same budget buy in the same rounds): per point, the queries, the mean difference of
    gold rewards, its 95% t interval (None from one seed) and how many seeds. A curve evaluated more than once
    at the same number of labels (ADPO buys nothing late in a run) counts there once per seed, by its last
    evaluation, on both sides: otherwise one seed's evaluations would pass for several seeds."""
    def last_at_each_count(rs: list[dict]) -> dict[tuple[int, float], float]:
        return {(r["seed"], p["queries"]): p["gold_reward"] for r in rs for p in r["curve"]}

    theirs = last_at_each_count(others)
    diffs: dict[float, list[float]] = {}
    for (seed, queries), gold in last_at_each_count(runs).items():
        if (seed, queries) in theirs:
            diffs.setdefault(queries, []).append(gold - theirs[seed, queries])
    return [{"queries": q, "mean": float(np.mean(d)), "ci95": ci95(d) if len(d) > 1 else None, "seeds": len(d)}
            for q, d in sorted(diffs.items())]


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


def plot_frontier(ax, runs: list[dict], label, colour=None) -> None:
    """Gold reward against KL to the base policy: one point per method (mean over seeds, t intervals on
    both axes), as in the DPO paper's sentiment figure. Better methods sit up and to the left. `colour(name)`,
    when given, colours each point as the figure's other panels colour that method."""
    for name, point in frontier(runs, label).items():
        ax.errorbar(point["kl"], point["gold_reward"], xerr=point["kl_ci95"], yerr=point["gold_reward_ci95"], fmt="o",
                    capsize=3, label=name, color=colour(name) if colour else None)
    ax.set_xlabel("KL to the base policy (nats)")
    ax.set_ylabel("gold reward (held-out prompts)")
    ax.set_title("reward against KL (mean over seeds, 95% t intervals)")
    ax.legend(fontsize=7)


class BenchRuns:
    """A bench's runs, written after each one to OUT's partial file (`bench-adpo.partial.json` beside
    `bench-adpo.json`), so that an interruption loses at most the run under way and a finished result at
    OUT stays as it was until the new one replaces it. With --resume the runs of the partial file, or of
    the finished result at OUT, are kept when they were measured by the same bench with the same options;
    the seeds may differ (each run is one seed's), so a finished bench grows by the seeds it lacks.
    `finish` writes the result and removes the partial file."""

    def __init__(self, bench: str, args: argparse.Namespace):
        self.bench, self.out = bench, Path(args.out)
        self.partial = self.out.with_name(f"{self.out.stem}.partial{self.out.suffix or '.json'}")
        # the options that decide what is measured: the bench's own, but --resume (not the words typed)
        self.options = {k: v for k, v in sorted(vars(args).items()) if k not in ("resume", "argv", "command", "bench")
                        and (v is None or isinstance(v, (str, int, float, bool, list)))}
        self.runs: list[dict] = []
        self.config: dict = {}
        self.started, self.before = time.perf_counter(), 0.0  # seconds spent by the interrupted invocations
        if args.resume:
            self._resume()
        elif self.partial.is_file():
            print(f"{self.partial}: an interrupted run of this bench; starting over replaces it (--resume goes on "
                  "from it)")

    def _resume(self) -> None:
        source = self.partial if self.partial.is_file() else self.out
        if not source.is_file():
            return  # nothing was written: the bench starts from its first run
        try:
            saved = json.loads(source.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{source}: not a bench result to resume ({e})") from None
        if not isinstance(saved, dict) or "options" not in saved:
            raise UserError(f"{source}: a bench result without the options it was run with (written by an older "
                            "frugalign), nothing to resume: another --out runs the bench again")
        theirs = saved["options"]
        # the seeds may differ (a run is one seed's, and the result is made of the seeds asked for now), and --out
        # (the files may have been moved: they are found beside it); an option added to the bench since the file
        # was written matches when it is left off
        differ = sorted(k for k in set(theirs) | set(self.options)
                        if k not in ("seeds", "out") and theirs.get(k) != self.options.get(k)
                        and not (k not in theirs and (self.options[k] is None or self.options[k] is False
                                                      or self.options[k] == [])))
        if saved.get("bench") != self.bench or differ:
            raise UserError(f"{source}: written by `bench {saved.get('bench')}` with other options "
                            f"({', '.join(differ) or 'bench'}): resume with the same ones, or choose another --out")
        self.runs, self.config = saved.get("runs", []) + saved.get("other_seeds_runs", []), saved.get("config", {})
        self.before = float(saved.get("bench_seconds", 0.0))
        print(f"{source}: resuming with the {len(self.runs)} run(s) it holds")

    def find(self, **key) -> dict | None:
        """The run done already whose fields (`params` entries included) have these values, or None."""
        for run in self.runs:
            if all(run.get(k, run.get("params", {}).get(k)) == v for k, v in key.items()):
                return run
        return None

    def seconds(self) -> float:
        """Wall time of the bench, interrupted invocations included."""
        return self.before + time.perf_counter() - self.started

    def add(self, run: dict, config: dict) -> None:
        self.runs.append(run)
        self.config = config
        write_results(self.partial, {"bench": self.bench, "partial": True, "options": self.options, "config": config,
                                     "bench_seconds": self.seconds(), "runs": self.runs})

    def finish(self, result: dict) -> Path:
        """Write the result (with the options it was measured with, so that --resume can add seeds to it); the
        partial file has served. Runs of seeds not asked for this time stay in it, for a later --resume."""
        asked = {run["seed"] for run in result["runs"]}
        kept = [run for run in self.runs if run["seed"] not in asked]
        out = write_results(self.out, {**result, "options": self.options, **({"other_seeds_runs": kept} if kept else {})})
        self.partial.unlink(missing_ok=True)
        return out
