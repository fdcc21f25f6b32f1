"""Classic RLHF's policy stage: KL-regularised policy gradient (RLOO) against a reward.

Per step, for a batch of prompts:
  1. sample k responses per prompt from the current policy;
  2. score them with the reward (a reward model, a gold oracle, any `f(prompts, responses)`);
  3. penalise each by beta * its summed per-token log-ratio to the frozen reference (a Monte-Carlo KL);
  4. RLOO: each sample's advantage is its penalised reward minus the mean of its prompt's other samples;
     loss = -advantage * log pi(response), averaged.
Metrics: reward, KL to the reference, entropy estimate (mean negative token log-prob of the samples).
Sampling goes through `--generation-backend`: Hugging Face `generate` on the policy, or vLLM with the
policy's weights copied in before every step (RLOO is on-policy: each step samples from what it trains).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from frugalign import losses
from frugalign.engine import Engine, TrainResult
from frugalign.errors import UserError
from frugalign.generation import open_generator
from frugalign.logprobs import pad_sequences, sequence_logps
from frugalign.options import RLHFConfig
from frugalign.training.common import to_device

Scorer = Callable[[list[str], list[str]], np.ndarray]


def train_rlhf(config: RLHFConfig, policy, tokenizer, prompts: list[str], scorer: Scorer, reference=None,
               engine: Engine | None = None, eval_fn=None, generator=None) -> tuple[object, TrainResult]:
    """Train `policy` on `prompts` (the Python API of `frugalign rlhf`; AIHF's policy step). The
    reference is a frozen copy of the policy as given, unless `reference` is passed. `generator` (from
    `open_generator`): a sampling engine the caller keeps open across calls (AIHF's iterations); by
    default one is opened from the config and closed at the end."""
    engine = engine or Engine(config)
    policy = policy.to(engine.device)
    owned = generator is None
    if owned:
        generator = open_generator(config.backend.generation_backend, policy, tokenizer, Path(config.train.output_dir),
                                   config.backend.vllm_gpu_memory_utilization, config.train.seed)
    # a reference passed in is shared (e.g. a task's base policy): used under no_grad, never modified
    reference = (reference if reference is not None else copy.deepcopy(policy).requires_grad_(False)).to(engine.device)
    k, pad = config.rloo.samples_per_prompt, tokenizer.pad_token_id
    counts = {"generations": 0, "micro_batches": 0}

    def step(model, rows: list[dict]):
        batch = [r["prompt"] for r in rows]
        prompt_ids = [tokenizer(p)["input_ids"] for p in batch]  # the ids the samples continue (both backends tokenize so)
        if counts["micro_batches"] % config.train.gradient_accumulation_steps == 0:  # the weights change once per step
            generator.sync(engine.unwrap(model))  # vLLM: the weights of this step; Hugging Face: the policy itself
        counts["micro_batches"] += 1
        sampling = config.sampling
        gens = generator.generate(batch, k, sampling.max_new_tokens, sampling.temperature, sampling.top_p, len(batch) * k,
                                  seed=None, progress=False)
        counts["generations"] += len(batch) * k
        flat_prompts = [p for p in batch for _ in range(k)]
        t = to_device(pad_sequences([ids for ids in prompt_ids for _ in range(k)],
                                    [ids for group in gens.token_ids for ids in group], pad), engine.device)
        policy_lp = sequence_logps(model, t["input_ids"], t["attention_mask"], t["loss_mask"])
        with torch.no_grad():
            ref_lp = sequence_logps(reference.eval(), t["input_ids"], t["attention_mask"], t["loss_mask"])
        rewards = torch.as_tensor(np.asarray(scorer(flat_prompts, [x for g in gens.texts for x in g]), dtype=float),
                                  dtype=torch.float32, device=engine.device)
        if not torch.isfinite(rewards).all():
            raise UserError("the reward returned a non-finite value: refusing to train on it")
        kl = (policy_lp.sum - ref_lp.sum).detach()
        loss = losses.rloo_loss(policy_lp.sum, rewards - config.rloo.kl_coef * kl, k).mean()
        entropy = (-policy_lp.sum / policy_lp.count.clamp(min=1)).mean()
        return loss, {"loss": loss.item(), "reward": rewards.mean().item(), "kl": kl.mean().item(),
                      "entropy": entropy.item(), "generations": float(counts["generations"])}

    try:
        return engine.fit(policy, [{"prompt": p} for p in prompts], step, eval_fn, description="rlhf (rloo)")
    finally:
        if owned:
            generator.close()
