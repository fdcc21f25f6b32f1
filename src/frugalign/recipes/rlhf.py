"""`frugalign rlhf`: RLHF's policy stage, RLOO against a reward model on a prompts file (the trainer:
`training/rlhf.py`)."""

from __future__ import annotations

from frugalign import models
from frugalign.console import print_summary
from frugalign.engine import Engine, TrainResult
from frugalign.errors import UserError
from frugalign.options import RLHFConfig
from frugalign.training.common import load_policy, load_prompts
from frugalign.training.reward import score
from frugalign.training.rlhf import train_rlhf


def run(config: RLHFConfig) -> TrainResult:
    """`frugalign rlhf`: prompts, a reward model as the reward, RLOO, the final policy."""
    if not config.rlhf.reward_model:
        raise UserError("frugalign rlhf needs --reward-model (a checkpoint from `frugalign reward`)")
    tokenizer = models.load_tokenizer(config.model.model)
    prompts = load_prompts(config, tokenizer)
    rm, rm_tokenizer = models.load_reward_model(config.rlhf.reward_model), models.load_tokenizer(config.rlhf.reward_model)
    engine = Engine(config)
    policy = load_policy(config, engine)
    model, result = train_rlhf(config, policy, tokenizer, prompts, lambda p, r: score(rm, rm_tokenizer, p, r),
                               engine=engine)
    path = engine.save_model(model, tokenizer)
    engine.end()
    print_summary("frugalign rlhf", {"prompts": len(prompts), **result.summary(), "model": str(path)})
    return result
