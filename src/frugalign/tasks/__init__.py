"""Gold-oracle tasks: prompts, a base policy and a known true reward, so that alignment is measured.

- `arith`, `sentiment`: tiny policies pre-trained in-process in seconds; for tests and sanity checks.
- `review`, `smol`: the embedded SmolLM2-135M-Instruct (or `model`) as it is, on movie reviews scored
  by VADER sentiment and on instructions with verifiable rules; where the methods' claims are tested.
- `custom`: the user's prompts file and gold function on any causal LM.
"""

from __future__ import annotations

from pathlib import Path

from frugalign.errors import UserError
from frugalign.tasks import arith, custom, review, sentiment, smol
from frugalign.tasks.base import Task, build_task
from frugalign.tasks.lm import build_lm_task

TOY_TASKS = ("arith", "sentiment")
TASKS = ("arith", "sentiment", "review", "smol", "custom")


def gold_reward(name: str):
    """A built-in task's true reward `f(prompt, response) -> float`, without building the task."""
    rewards = {"arith": arith.gold_reward, "sentiment": sentiment.gold_reward, "review": review.gold_reward,
               "smol": smol.gold_reward}
    if name not in rewards:
        raise UserError(f"unknown task '{name}' (tasks with a built-in reward: {', '.join(rewards)})")
    return rewards[name]


def load_task(name: str, seed: int = 0, quick: bool = False, cache_dir: Path | None = None, model: str | None = None,
              prompts: str | None = None, gold: str | None = None) -> Task:
    """Build a task (first time: pre-train a toy policy, or sample a pretrained model's pair pool; both cached)
    or load it from the cache. `model` applies to the pretrained-model tasks (default: the embedded SmolLM2);
    `prompts` and `gold` (MODULE:FUNCTION) define a `custom` task."""
    if name in TOY_TASKS and model is not None:
        raise UserError(f"task {name} trains its own tiny policy: --model applies to review, smol and custom")
    if name != "custom" and (prompts or gold):
        raise UserError("--prompts and --gold-reward define a custom task: use them with --task custom")
    if name == "arith":
        return build_task(arith.spec(seed, quick), seed, quick, cache_dir)
    if name == "sentiment":
        return build_task(sentiment.spec(seed, quick), seed, quick, cache_dir)
    if name == "review":
        return build_lm_task(review.spec(seed, quick, model), seed, cache_dir)
    if name == "smol":
        return build_lm_task(smol.spec(seed, quick, model), seed, cache_dir)
    if name == "custom":
        return build_lm_task(custom.spec(prompts, gold, seed, quick, model), seed, cache_dir)
    raise UserError(f"unknown task '{name}' (tasks: {', '.join(TASKS)})")


__all__ = ["TASKS", "TOY_TASKS", "Task", "gold_reward", "load_task"]
