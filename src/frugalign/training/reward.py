"""A Bradley-Terry reward model: per step, score the chosen and rejected responses of the micro-batch
in one forward of a sequence classifier with one output, and minimise
-log sigma(r_w - r_l - margin) + c * (r_w + r_l)^2, weighted per pair."""

from __future__ import annotations

import numpy as np
import torch

from frugalign import losses
from frugalign.engine import Engine, TrainResult
from frugalign.options import RewardConfig
from frugalign.training.common import mean_metrics


def encode(tokenizer, prompts: list[str], responses: list[str], max_length: int, device) -> dict[str, torch.Tensor]:
    """(prompt, response) as a text pair, so encoders see their separator between the two."""
    enc = tokenizer(prompts, responses, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items()}


def rewards(model, tokenizer, prompts: list[str], responses: list[str], max_length: int, device) -> torch.Tensor:
    return model(**encode(tokenizer, prompts, responses, max_length, device)).logits[:, 0].float()


@torch.no_grad()
def score(model, tokenizer, prompts: list[str], responses: list[str], batch_size: int = 32,
          max_length: int = 512) -> np.ndarray:
    """Rewards of (prompt, response) pairs: the scoring API used by annotators and online loops."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [rewards(model, tokenizer, prompts[i:i + batch_size], responses[i:i + batch_size], max_length, device).cpu()
           for i in range(0, len(prompts), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0)


def train_reward(config: RewardConfig, model, tokenizer, train_rows: list[dict], eval_rows: list[dict] | None = None,
                 engine: Engine | None = None) -> tuple[object, TrainResult]:
    """Train a one-output sequence classifier on preference rows (the Python API of `frugalign reward`)."""
    engine = engine or Engine(config)
    model = model.to(engine.device)

    def pair_rewards(model, rows):
        prompts = [r["prompt"] for r in rows]
        r = rewards(model, tokenizer, prompts + prompts, [r["chosen"] for r in rows] + [r["rejected"] for r in rows],
                    config.reward.max_length, engine.device)
        return r[: len(rows)], r[len(rows):]

    def step(model, rows: list[dict]):
        chosen, rejected = pair_rewards(model, rows)
        margin = torch.tensor([r["margin"] for r in rows], device=engine.device)
        per_pair = losses.bradley_terry_loss(chosen, rejected, margin, config.reward.centering)
        loss = losses.weighted_mean(per_pair, torch.tensor([r["weight"] for r in rows], device=engine.device))
        return loss, {"loss": loss.item(), "accuracy": (chosen > rejected).float().mean().item(),
                      "reward_margin": (chosen - rejected).mean().item(), "reward_mean": chosen.mean().item()}

    def evaluate(model) -> dict[str, float]:
        return mean_metrics(engine, model, eval_rows, step, config.train.batch_size)

    return engine.fit(model, train_rows, step, evaluate if eval_rows else None, description="reward model",
                      eval_steps=config.eval.eval_steps)
