"""Supervised fine-tuning on demonstrations: per step, the mean negative log-likelihood of the
completion tokens (prompt tokens are context, not targets)."""

from __future__ import annotations

import math

import torch

from frugalign import losses
from frugalign.engine import Engine, TrainResult
from frugalign.logprobs import pad_sequences, token_logps
from frugalign.options import SFTConfig
from frugalign.training.common import to_device


def completion_nll(model, rows: list[dict], pad_id: int, device) -> torch.Tensor:
    """Per-example mean NLL of the completion tokens."""
    tensors = to_device(
        pad_sequences([r["prompt_ids"] for r in rows], [r["completion_ids"] for r in rows], pad_id), device
    )
    logits = model(input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"], use_cache=False).logits
    lp = token_logps(logits[:, :-1], tensors["input_ids"][:, 1:])
    return losses.sft_loss(lp, tensors["loss_mask"][:, 1:])


def train_sft(config: SFTConfig, policy, tokenizer, train_rows: list[dict], eval_rows: list[dict] | None = None,
              engine: Engine | None = None) -> tuple[object, TrainResult]:
    """Train `policy` on tokenized demonstration rows (the Python API behind `frugalign sft`)."""
    engine = engine or Engine(config)
    policy = policy.to(engine.device)
    pad_id = tokenizer.pad_token_id

    def step(model, rows: list[dict]):
        loss = completion_nll(model, rows, pad_id, engine.device).mean()
        return loss, {"loss": loss.item()}

    def evaluate(model) -> dict[str, float]:
        shard = engine.shard(eval_rows)
        total = sum(completion_nll(model, shard[i : i + config.train.batch_size], pad_id, engine.device).sum().item()
                    for i in range(0, len(shard), config.train.batch_size))
        loss = total / max(1, len(shard))
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}

    return engine.fit(policy, train_rows, step, evaluate if eval_rows else None, description="sft",
                      eval_steps=config.eval.eval_steps)
