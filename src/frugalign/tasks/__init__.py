"""Gold-oracle tasks (BENCH.md): tiny policies whose true reward is a known function."""

from __future__ import annotations

from pathlib import Path

from frugalign.errors import UserError
from frugalign.tasks import arith, sentiment
from frugalign.tasks.base import Task, build_task, simulate_preference

TASKS = ("arith", "sentiment")


def gold_reward(name: str):
    """A task's true reward `f(prompt, response) -> float`, without building the task."""
    if name not in TASKS:
        raise UserError(f"unknown task '{name}' (tasks: {', '.join(TASKS)})")
    return arith.gold_reward if name == "arith" else sentiment.gold_reward


def load_task(name: str, seed: int = 0, quick: bool = False, cache_dir: Path | None = None) -> Task:
    """Build (first time: pre-train and cache, seconds) or load a task's base policy and pair pool."""
    if name == "arith":
        spec = arith.spec(seed, quick)
    elif name == "sentiment":
        spec = sentiment.spec(seed, quick)
    else:
        raise UserError(f"unknown task '{name}' (tasks: {', '.join(TASKS)})")
    return build_task(spec, seed, quick, cache_dir)


__all__ = ["TASKS", "Task", "gold_reward", "load_task", "simulate_preference"]
