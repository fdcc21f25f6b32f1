"""`frugalign sft`: supervised fine-tuning on a demonstrations file (the trainer: `training/sft.py`)."""

from __future__ import annotations

from frugalign import models
from frugalign.console import print_summary
from frugalign.data import demonstrations, tokenize_demonstrations
from frugalign.engine import Engine, TrainResult
from frugalign.options import SFTConfig
from frugalign.training.common import load_policy, read_training_rows
from frugalign.training.sft import train_sft


def load_demonstration_rows(config: SFTConfig, tokenizer) -> tuple[list[dict], list[dict]]:
    """Read, validate and tokenize the demonstrations: all before any compute."""
    return read_training_rows(config, tokenizer, demonstrations, tokenize_demonstrations)


def run(config: SFTConfig) -> TrainResult:
    """`frugalign sft`: load, validate, train, save, summarise."""
    tokenizer = models.load_tokenizer(config.model.model)
    train_rows, eval_rows = load_demonstration_rows(config, tokenizer)
    engine = Engine(config)
    policy = load_policy(config, engine)
    model, result = train_sft(config, policy, tokenizer, train_rows, eval_rows, engine)
    path = engine.save_model(model, tokenizer)
    engine.end()
    print_summary("frugalign sft", {"demonstrations": len(train_rows), "held-out": len(eval_rows),
                                    **result.summary(), "model": str(path)})
    return result
