"""What every training command shares: the model and data options, loading the policy (with LoRA),
holding out evaluation rows, and putting tokenized rows on the device."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import torch

from frugalign import models
from frugalign.config import option
from frugalign.engine import Engine, TrainConfig
from frugalign.errors import UserError


@dataclass
class RecipeConfig(TrainConfig):
    """Model and data options of every training command, on top of the engine's."""

    model: str | None = option(None, "hub id or local checkpoint; default: the embedded SmolLM2-135M-Instruct")
    dataset: str | None = option(None, "hub dataset name or local JSON/JSONL/Parquet/CSV file")
    dataset_split: str = option("train", "split of a hub dataset")
    eval_dataset: str | None = option(None, "held-out rows (same format); default: eval_fraction of dataset")
    eval_fraction: float = option(0.0, "fraction of the dataset held out for evaluation when eval_dataset is unset")
    max_prompt_length: int = option(512, "prompt tokens kept (the end of a longer prompt is kept)")
    max_response_length: int = option(512, "response tokens kept, EOS included (the start is kept)")
    overlong: Literal["truncate", "drop", "error"] = option("truncate", "what to do with rows over the limits")
    lora_r: int = option(0, "LoRA rank; 0 trains all weights")
    lora_alpha: int = option(16, "LoRA scaling numerator")
    lora_dropout: float = option(0.0, "dropout on the LoRA branch")
    lora_target_modules: list[str] = option(["q_proj", "k_proj", "v_proj", "o_proj"], "modules LoRA adapts")

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.eval_fraction < 1.0:
            raise UserError(f"option eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.max_prompt_length < 1 or self.max_response_length < 1:
            raise UserError("options max_prompt_length and max_response_length must be at least 1")


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


def load_policy(config: RecipeConfig, engine: Engine):
    """The policy to train, in float32 (the engine's mixed precision casts activations), with LoRA
    adapters when lora_r > 0 (then only the adapters train)."""
    model = models.load_causal_lm(config.model, gradient_checkpointing=config.gradient_checkpointing)
    if config.lora_r > 0:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise UserError("lora_r > 0 needs peft: pip install 'frugalign[peft]'") from None
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.lora_target_modules,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    return model.to(engine.device)


def to_device(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in tensors.items()}
