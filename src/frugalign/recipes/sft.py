"""`frugalign sft`: supervised fine-tuning on a demonstrations file (the trainer: `training/sft.py`)."""

from __future__ import annotations

from frugalign import models
from frugalign.console import console, is_main_process, print_summary
from frugalign.data import demonstrations, load_rows, tokenize_demonstrations
from frugalign.engine import Engine, TrainResult
from frugalign.errors import UserError
from frugalign.recipes.configs import SFTConfig
from frugalign.training.common import hold_out, load_policy
from frugalign.training.sft import train_sft


def load_demonstration_rows(config: SFTConfig, tokenizer) -> tuple[list[dict], list[dict]]:
    """Read, validate and tokenize the demonstrations: all before any compute."""
    if not config.dataset:
        raise UserError("no dataset: pass --dataset (a hub name or a local JSON/JSONL/Parquet/CSV file)")

    def read(source: str) -> list[dict]:
        examples = demonstrations(load_rows(source, config.dataset_split), source, tokenizer, config.chat_template)
        rows, report = tokenize_demonstrations(
            examples, tokenizer, config.max_prompt_length, config.max_response_length, source, config.overlong
        )
        if is_main_process():
            console.print(f"{source}: {report.summary()}")
        return rows

    train = read(config.dataset)
    if config.eval_dataset:
        return train, read(config.eval_dataset)
    return hold_out(train, config.eval_fraction, config.seed)


def run(config: SFTConfig) -> TrainResult:
    """`frugalign sft`: load, validate, train, save, summarise."""
    tokenizer = models.load_tokenizer(config.model)
    train_rows, eval_rows = load_demonstration_rows(config, tokenizer)
    engine = Engine(config)
    policy = load_policy(config, engine)
    model, result = train_sft(config, policy, tokenizer, train_rows, eval_rows, engine)
    path = engine.save_model(model, tokenizer)
    engine.end()
    print_summary("frugalign sft", {"demonstrations": len(train_rows), "held-out": len(eval_rows),
                                    **result.summary(), "model": str(path)})
    return result
