"""`frugalign bench replot RESULT.json...`: draw a bench's plot again from its result JSON, without running
anything: a run that took an hour keeps its numbers when its plot is improved, or when the PNG was lost."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from frugalign.errors import UserError

# the benches that write a plot; `frugalign.bench.<name>.plot(result, ...)` draws it
PLOTTED = ("adpo", "aihf", "annotate", "appo", "dpo", "generation", "judge", "optune", "throughput")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="result JSON files written by `frugalign bench ...`")


def read_result(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        result = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(result, dict) or result.get("bench") not in PLOTTED:
        found = result.get("bench") if isinstance(result, dict) else None
        raise UserError(f"{path}: field `bench` is {found!r}, not one of {', '.join(PLOTTED)}: "
                        "not the result of a bench that plots")
    return result


def replot(path: Path) -> list[str]:
    """Draw `path`'s plot(s) beside it; the PNG paths written."""
    result = read_result(path)
    plot = importlib.import_module(f"frugalign.bench.{result['bench']}").plot
    try:
        if result["bench"] == "appo":  # two or three figures, named from a stem
            return plot(result, str(path.with_suffix("")))
        png = path.with_suffix(".png")
        plot(result, png)
        return [str(png)]
    except (KeyError, TypeError, IndexError) as e:
        raise UserError(f"{path}: the {result['bench']} result lacks what its plot needs ({type(e).__name__}: {e}); "
                        "it may have been written by an older frugalign, or edited") from None


def run(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.results]
    for path in paths:  # every file is checked before any plot is drawn
        read_result(path)
    for path in paths:
        print("\n".join(replot(path)))
    return 0
