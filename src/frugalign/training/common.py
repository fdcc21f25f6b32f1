"""What every training command shares: loading the policy (with LoRA) and the prompts, reading and holding
out its rows, and putting tokenized rows on the device."""

from __future__ import annotations

import random
from collections.abc import Callable

import torch

from frugalign import models
from frugalign.config import Config
from frugalign.console import console, is_main_process
from frugalign.data import load_rows
from frugalign.engine import Engine
from frugalign.errors import UserError


def read_training_rows(config, tokenizer, parse, tokenize) -> tuple[list[dict], list[dict]]:
    """A command's training rows and held-out rows, read, validated and tokenized before any compute:
    `parse(rows, source, tokenizer, chat_template)` checks each row of `--dataset` (and `--eval-dataset`)
    and `tokenize(examples, tokenizer, max_prompt, max_response, source, overlong)` tokenizes them; without an
    evaluation file, `eval_fraction` of the rows is held out."""

    def read(source: str) -> list[dict]:
        examples = parse(load_rows(source, config.data.dataset_split), source, tokenizer, config.chat.chat_template)
        rows, report = tokenize(examples, tokenizer, config.length.max_prompt_length, config.length.max_response_length, source,
                                config.length.overlong)
        if is_main_process():
            console.print(f"{source}: {report.summary()}")
        return rows

    return read_with_held_out(config, read)


def read_with_held_out(config, read: Callable[[str], list[dict]]) -> tuple[list[dict], list[dict]]:
    """`read(source)` of `--dataset`, and of `--eval-dataset` when there is one; without it, `eval_fraction` of
    the rows is held out (seeded)."""
    if not config.data.dataset:
        raise UserError("no dataset: pass --dataset (a hub name or a local JSON/JSONL/Parquet/CSV file)")
    train = read(config.data.dataset)
    if config.eval.eval_dataset:
        return train, read(config.eval.eval_dataset)
    return hold_out(train, config.eval.eval_fraction, config.train.seed)


def mean_metrics(engine: Engine, model, rows: list[dict], step, batch_size: int) -> dict[str, float]:
    """A step function's metrics over this process's share of `rows`, averaged per row (an evaluation)."""
    shard = engine.shard(rows)
    totals: dict[str, float] = {}
    for start in range(0, len(shard), batch_size):
        batch = shard[start:start + batch_size]
        _, metrics = step(model, batch)
        for k, v in metrics.items():
            totals[k] = totals.get(k, 0.0) + v * len(batch)
    return {k: v / max(1, len(shard)) for k, v in totals.items()}


def hold_out(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    """A seeded random split: (train, eval)."""
    if fraction <= 0:
        return rows, []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(round(fraction * len(rows))))
    if n_eval >= len(rows):
        raise UserError(f"eval_fraction={fraction} leaves no training rows out of {len(rows)}")
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def load_policy(config: Config, engine: Engine):
    """The policy to train, in float32 (the engine's mixed precision casts activations), with LoRA
    adapters when lora_r > 0 (then only the adapters train)."""
    model = models.load_causal_lm(config.model.model, gradient_checkpointing=config.train.gradient_checkpointing)
    if config.lora.lora_r > 0:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise UserError("lora_r > 0 needs peft: pip install 'frugalign[peft]'") from None
        lora = LoraConfig(
            r=config.lora.lora_r,
            lora_alpha=config.lora.lora_alpha,
            lora_dropout=config.lora.lora_dropout,
            target_modules=config.lora.lora_target_modules,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    return model.to(engine.device)


def to_device(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in tensors.items()}


def load_prompts(config: Config, tokenizer) -> list[str]:
    """Prompts from `prompt` rows: messages rendered with the chat template; strings too, by the
    --chat-template rule (as training rows are)."""
    from frugalign.data import load_rows
    from frugalign.data.formats import render_prompt, renders_strings
    from frugalign.errors import DataError

    if not config.data.dataset:
        raise UserError("no dataset: pass --dataset with a `prompt` column")
    chat = renders_strings(config.chat.chat_template, tokenizer, config.data.dataset)
    out = []
    for number, row in enumerate(load_rows(config.data.dataset, config.data.dataset_split), start=1):
        prompt = row.get("prompt")
        if isinstance(prompt, list) and prompt:
            if not getattr(tokenizer, "chat_template", None):
                raise UserError(f"{config.data.dataset}: conversational prompts need a tokenizer with a chat template")
            prompt = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        elif isinstance(prompt, str) and prompt.strip() and chat:
            prompt = render_prompt(tokenizer, prompt)
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(config.data.dataset, "expected a non-empty string or list of messages", number, "prompt")
        out.append(prompt)
    return out
