"""Gold-oracle tasks on a pretrained language model (`review`, `smol`, `custom`): the base policy is the
model itself, with no pre-training step. Its pair pool is two sampled responses per train prompt, its
demonstrations the best of four samples by gold reward; samples are cached per task, model, prompt set
and seed, so a second bench run samples nothing.

Prompts reach the policy as it was trained to read them: rendered with the tokenizer's chat template
when it has one. The gold function sees the prompt as the task (or the user's file) wrote it."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import random
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from frugalign.errors import UserError
from frugalign.tasks.base import Task

DEMO_CANDIDATES = 4  # best-of-n demonstrations: the pool's two samples and two more
# full fine-tuning of a 135M model on a few hundred pairs: a learning rate a few times TRL's usual 5e-7 to
# 5e-6, so that one to two epochs move the policy; a bench's --learning-rate and --num-epochs override it
SETTINGS = {"learning_rate": 1e-5, "beta": 0.1, "batch_size": 16, "num_epochs": 2}


@dataclass
class LMTaskSpec:
    """A task on a pretrained model before it is built."""

    name: str
    model: str | None  # hub id or local checkpoint; None: the embedded SmolLM2
    train: list  # prompts as the gold function reads them (text, or a list of chat messages)
    eval: list
    gold: Callable[[object, str], float]  # gold(prompt as written, response) -> float
    max_new_tokens: int
    settings: dict  # DPO settings that suit the task (learning rate, beta, batch size, epochs)


def seeded_split(prompts: list, seed: int, quick: bool) -> tuple[list, list]:
    """A built-in task's fixed prompt set split by the seed, so each seed has its own train and held-out
    prompts: 256 and 64 (quick: 32 and 16)."""
    order = list(prompts)
    random.Random(seed).shuffle(order)
    n_train, n_eval = (32, 16) if quick else (256, 64)
    return order[:n_train], order[n_train:n_train + n_eval]


def is_degenerate(text: str) -> bool:
    """Repetition that a sentiment or rubric score would otherwise reward: the same word four times in a
    row, a three-word phrase three times, or (in eight words or more) fewer than 40% distinct words."""
    words = re.findall(r"[\w']+", text.lower())
    if any(len(set(words[i:i + 4])) == 1 for i in range(len(words) - 3)):
        return True
    trigrams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    if trigrams and max(trigrams.count(t) for t in set(trigrams)) >= 3:
        return True
    return len(words) >= 8 and len(set(words)) / len(words) < 0.4


def render(tokenizer, prompt) -> str:
    """The text the policy is given: a chat-template rendering of one user turn (or of the messages),
    or the plain prompt for a tokenizer without a template."""
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if isinstance(prompt, list):
        raise UserError("conversational prompts need a tokenizer with a chat template")
    return prompt


def _key(spec: LMTaskSpec, model_dir: str) -> str:
    blob = json.dumps([spec.name, model_dir, spec.train, spec.eval, spec.max_new_tokens], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        json.dump(value, f)
    Path(f.name).replace(path)


def build_lm_task(spec: LMTaskSpec, seed: int, cache: Path | None) -> Task:
    """Load the model and render the prompts; the pair pool and demonstrations are sampled (or loaded from
    the cache) on first use, so an evaluation that needs neither samples nothing."""
    from frugalign import models
    from frugalign.generation import generate

    model_dir = models.resolve_model(spec.model)
    tokenizer = models.load_tokenizer(spec.model)
    model = models.load_causal_lm(spec.model).eval()
    train = [render(tokenizer, p) for p in spec.train]
    held = [render(tokenizer, p) for p in spec.eval]
    as_written = dict(zip(train + held, spec.train + spec.eval))

    def reward(prompt: str, response: str) -> float:
        return gold_value(spec.gold, as_written.get(prompt, prompt), response)

    root = Path(cache) if cache is not None else models.cache_dir() / "tasks"
    path = root / f"{spec.name}-{_key(spec, model_dir)}-seed{seed}-v1"

    def sample(file: str, num: int, sample_seed: int, what: str) -> list[list[str]]:
        if (path / file).exists():
            return json.loads((path / file).read_text())
        gens = generate(model, tokenizer, train, num_samples=num, max_new_tokens=spec.max_new_tokens, batch_size=32,
                        seed=sample_seed, description=f"{spec.name}: sampling {what} (cached for later runs)")
        _write_json(path / file, gens.texts)
        return gens.texts

    def pool() -> list[dict]:
        return [{"prompt": p, "response_a": a, "response_b": b}
                for p, (a, b) in zip(train, sample("pool.json", 2, seed, "the pair pool")) if a != b]

    def demonstrations() -> list[dict]:
        pool_texts = sample("pool.json", 2, seed, "the pair pool")
        extra = sample("demo-extra.json", DEMO_CANDIDATES - 2, seed + 10_000, "demonstration candidates")
        demos = []
        for p, first, more in zip(train, pool_texts, extra):
            best = max(first + more, key=lambda r: reward(p, r))
            demos.append({"prompt": p, "completion": best})
        return demos

    return Task(spec.name, model, tokenizer, train, held, demonstrations, pool, reward, spec.max_new_tokens,
                settings=dict(spec.settings), eval_samples=1, info={"cache": str(path), "model": model_dir})


def gold_value(gold: Callable, prompt, response: str) -> float:
    """The gold function's value as a float; anything else is the user's error, said in one line."""
    name = getattr(gold, "__qualname__", repr(gold))
    try:
        value = gold(prompt, response)
    except Exception as e:  # the user's function: whatever it raises is reported, not a traceback
        raise UserError(f"gold reward {name} raised {type(e).__name__}: {e} (prompt {str(prompt)[:80]!r}, "
                        f"response {response[:80]!r})") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise UserError(f"gold reward {name} returned {value!r} (prompt {str(prompt)[:80]!r}): it must return a "
                        "finite number")
    return float(value)
