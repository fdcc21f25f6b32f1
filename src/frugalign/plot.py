"""`frugalign plot RUN...`: the training curves of one or more runs on one figure, one panel per metric,
one line per run, read from each run's metrics.jsonl."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from frugalign.errors import UserError

# what a reader looks at first, where a run logged it; --metrics chooses others
DEFAULT_METRICS = ("loss", "rewards/accuracies", "rewards/margins", "eval/loss", "eval/rewards/accuracies",
                   "eval/gold_reward", "eval/kl", "reward/mean", "kl")
NOT_CURVES = ("step", "lr", "step_seconds", "grad_norm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="run folders (OUTPUT_DIR of a training command) or metrics.jsonl files")
    parser.add_argument("--metrics", nargs="+", default=None,
                        help="metrics to plot (default: those of " + ", ".join(DEFAULT_METRICS) + " the runs logged)")
    parser.add_argument("--out", default="training-curves.png", help="the PNG to write")


def read_metrics(run: str) -> tuple[str, list[dict]]:
    """(the run's name, its logged rows): a malformed line is an error that names the file and the line."""
    path = Path(run)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run}: no metrics.jsonl there (a run folder holds one from its first logged step)")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}, line {number}: not JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise UserError(f"{path}, line {number}: expected an object with an integer 'step'")
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: empty, nothing logged yet")
    name = path.parent.name if path.name == "metrics.jsonl" else path.stem
    return name, rows


def curve(rows: list[dict], metric: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[metric]) for r in rows
              if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    return [s for s, _ in points], [v for _, v in points]


def run(args: argparse.Namespace) -> int:
    runs = [read_metrics(r) for r in args.runs]
    logged = {key for _, rows in runs for row in rows for key in row if key not in NOT_CURVES}
    if args.metrics:
        unknown = [m for m in args.metrics if m not in logged]
        if unknown:
            raise UserError(f"--metrics {' '.join(unknown)}: not logged by these runs (they logged: "
                            f"{', '.join(sorted(logged))})")
        metrics = list(args.metrics)
    else:
        metrics = [m for m in DEFAULT_METRICS if m in logged] or sorted(logged)[:6]
    if not metrics:
        raise UserError("these runs logged no metric to plot")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(metrics))
    rows_n = math.ceil(len(metrics) / columns)
    fig, axes = plt.subplots(rows_n, columns, figsize=(5 * columns, 3.6 * rows_n), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for name, rows in runs:
            steps, values = curve(rows, metric)
            if steps:
                ax.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=name)
        ax.set_title(metric)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"{out}: {', '.join(metrics)} of {len(runs)} run(s)")
    return 0
