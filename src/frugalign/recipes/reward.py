"""`frugalign reward`: a Bradley-Terry reward model trained on a pairs file (the trainer and the scoring the
other commands use: `training/reward.py`)."""

from __future__ import annotations

from frugalign import models
from frugalign.console import console, is_main_process, print_summary
from frugalign.data import load_rows, preference_examples
from frugalign.engine import Engine, TrainResult
from frugalign.options import RewardConfig
from frugalign.training.common import read_with_held_out
from frugalign.training.reward import train_reward


def load_pairs(config: RewardConfig, tokenizer) -> tuple[list[dict], list[dict]]:
    """Validated rows as plain text: the reward model's own tokenizer encodes them per batch."""

    def read(source: str) -> list[dict]:
        # a reward model scores plain text, here and wherever it judges: strings are not templated
        examples = preference_examples(load_rows(source, config.data.dataset_split), source, tokenizer, "off")
        if is_main_process():
            console.print(f"{source}: {len(examples)} pairs")
        return [{"prompt": e.prompt, "chosen": e.chosen, "rejected": e.rejected, "weight": e.weight,
                 "margin": e.margin} for e in examples]

    return read_with_held_out(config, read)


def run(config: RewardConfig) -> TrainResult:
    """`frugalign reward`: validate, train, save, summarise (held-out accuracy)."""
    name = config.model.model or models.MINILM
    tokenizer = models.load_tokenizer(name)
    train_rows, eval_rows = load_pairs(config, tokenizer)
    engine = Engine(config)
    model = models.load_reward_model(name)
    model, result = train_reward(config, model, tokenizer, train_rows, eval_rows, engine)
    path = engine.save_model(model, tokenizer)
    engine.end()
    print_summary("frugalign reward", {"pairs": len(train_rows), "held-out pairs": len(eval_rows), **result.summary(),
                                       "model": str(path)})
    return result
