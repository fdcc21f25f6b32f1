"""Offline preference optimisation: DPO and IPO, with label smoothing and per-pair weights; SimPO and
ORPO, which need no reference model (none is built for them).

Per step: one forward of the policy over the chosen and rejected responses of the micro-batch, the
reference log-probs (a frozen copy, the LoRA base with its adapter disabled, or precomputed once
before training; DPO and IPO only), the per-pair loss, and the weighted mean sum(w*l)/sum(w).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import torch

from frugalign import losses
from frugalign.data import preference_examples, tokenize_preferences
from frugalign.engine import Engine, TrainResult, resolve_mixed_precision
from frugalign.logprobs import FLEX_LAYOUTS, SequenceLogps, pair_batch, pair_logps, require_flex_backward, supports_shared_prefix
from frugalign.options import DPOConfig
from frugalign.training.common import mean_metrics, read_training_rows, to_device

REFERENCE_FREE = ("simpo", "orpo")  # losses of the policy's own log-probs


def pair_losses(
    config: DPOConfig, chosen: SequenceLogps, rejected: SequenceLogps, ref_chosen: SequenceLogps | None,
    ref_rejected: SequenceLogps | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair losses and the margin for the configured loss: h (summed log-ratios) for DPO and IPO, the
    difference of per-token averaged log-probs for the reference-free SimPO and ORPO."""
    loss = config.loss
    if loss.loss == "simpo":
        return losses.simpo_loss(chosen.mean - rejected.mean, loss.beta, loss.simpo_gamma), chosen.mean - rejected.mean
    if loss.loss == "orpo":
        return losses.orpo_loss(chosen.mean, rejected.mean, loss.beta), chosen.mean - rejected.mean
    margin = losses.pair_margin(chosen.sum, rejected.sum, ref_chosen.sum, ref_rejected.sum)
    if loss.loss == "ipo":
        avg_margin = losses.pair_margin(chosen.mean, rejected.mean, ref_chosen.mean, ref_rejected.mean)
        return losses.ipo_loss(avg_margin, loss.beta), margin
    return losses.dpo_loss(margin, loss.beta, loss.label_smoothing), margin


def pair_metrics(
    beta: float, margin: torch.Tensor, chosen: SequenceLogps, rejected: SequenceLogps, ref_chosen, ref_rejected
) -> dict[str, float]:
    """Implicit rewards and how often the chosen response's reward is the higher one: beta*u(y) with a
    reference, beta * avg logp(y) without one (SimPO's reward; what TRL logs for ORPO)."""
    if ref_chosen is None:
        reward_chosen, reward_rejected = beta * chosen.mean.detach(), beta * rejected.mean.detach()
    else:
        reward_chosen = beta * (chosen.sum - ref_chosen.sum).detach()
        reward_rejected = beta * (rejected.sum - ref_rejected.sum).detach()
    return {
        "rewards/chosen": reward_chosen.mean().item(),
        "rewards/rejected": reward_rejected.mean().item(),
        "rewards/accuracies": (margin.detach() > 0).float().mean().item(),
        "rewards/margins": (reward_chosen - reward_rejected).mean().item(),
        "logps/chosen": chosen.sum.detach().mean().item(),
        "logps/rejected": rejected.sum.detach().mean().item(),
    }


class PairScorer:
    """Builds the batch tensors of pairs and scores them with the policy, in the layout the config
    and the model allow (`logprobs.LAYOUTS`)."""

    def __init__(self, config: DPOConfig, policy, pad_id: int):
        self.pad_id = pad_id
        low_precision_gpu = torch.cuda.is_available() and resolve_mixed_precision(config.train.mixed_precision) != "no"
        wanted = {"on": "shared-prefix", "off": "padded", "flex": "flex", "packed": "packed",
                  "auto": "padded" if low_precision_gpu else "shared-prefix"}[config.loss.shared_prefix]
        before = policy.config._attn_implementation
        if wanted in FLEX_LAYOUTS:
            require_flex_backward(policy.get_output_embeddings().weight.device)  # before any compute
            policy.set_attn_implementation("flex_attention")  # only FlexAttention reads a BlockMask
        # logits = output layer(last hidden state), the layout's mask honoured
        usable = supports_shared_prefix(policy, "shared-prefix" if wanted == "padded" else wanted)
        self.layout = wanted if usable else "padded"
        if wanted in FLEX_LAYOUTS and not usable:
            policy.set_attn_implementation(before)  # padded rows keep the model's own attention kernel
        self.head = policy.get_output_embeddings() if usable else None

    def tensors(self, prompts, firsts, seconds, device) -> dict[str, torch.Tensor]:
        return to_device(pair_batch(prompts, firsts, seconds, self.pad_id, self.layout), device)

    def chosen_rejected(self, rows: list[dict], device) -> dict[str, torch.Tensor]:
        return self.tensors([r["prompt_ids"] for r in rows], [r["chosen_ids"] for r in rows],
                            [r["rejected_ids"] for r in rows], device)

    def __call__(self, model, tensors) -> tuple[SequenceLogps, SequenceLogps]:
        return pair_logps(model, tensors, self.head)


class Reference:
    """Reference log-probs of a batch of pairs, in whichever of the three ways the config asks."""

    def __init__(self, engine: Engine, policy, scorer: PairScorer, precomputed: bool, lora: bool):
        self.engine = engine
        self.precomputed = precomputed
        self.use_adapter_off = lora
        # a frozen copy only when it is needed: LoRA gives the reference for free, precomputation once
        self.model = None
        self.head = scorer.head
        if not self.precomputed and not self.use_adapter_off:
            self.model = copy.deepcopy(policy).eval().requires_grad_(False)
            self.head = self.model.get_output_embeddings() if scorer.head is not None else None

    @torch.no_grad()
    def live(self, policy, tensors: dict[str, torch.Tensor]) -> tuple[SequenceLogps, SequenceLogps]:
        if self.use_adapter_off:
            with self.engine.unwrap(policy).disable_adapter():
                return pair_logps(policy, tensors, self.head)
        # no copy when precomputing: before the first update the policy is the reference
        return pair_logps(self.model if self.model is not None else policy, tensors, self.head)

    def __call__(self, policy, rows: list[dict], tensors, chosen: SequenceLogps, rejected: SequenceLogps):
        if self.precomputed:
            device = chosen.sum.device
            ref_c = torch.tensor([r["ref_chosen_logp"] for r in rows], device=device)
            ref_r = torch.tensor([r["ref_rejected_logp"] for r in rows], device=device)
            return SequenceLogps(ref_c, chosen.count), SequenceLogps(ref_r, rejected.count)
        return self.live(policy, tensors)

    def precompute(self, policy, rows: list[dict], batch_size: int, scorer: PairScorer, model_name: str,
                   cache: Path) -> None:
        """Attach `ref_chosen_logp`/`ref_rejected_logp` to every row, from the cache file when its key
        (the model's name and the token ids of every row) matches, else in one sharded pass."""
        key = hashlib.sha256(
            json.dumps([model_name] + [[r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]] for r in rows]).encode()
        ).hexdigest()
        values = None
        if cache.exists():
            stored = torch.load(cache)
            if stored["key"] == key:
                values = stored["values"]
        if values is None:
            mine = list(range(self.engine.accelerator.process_index, len(rows), self.engine.accelerator.num_processes))
            local = []
            policy.eval()
            for start in range(0, len(mine), batch_size):
                idx = mine[start : start + batch_size]
                tensors = scorer.chosen_rejected([rows[i] for i in idx], self.engine.device)
                c, r = self.live(policy, tensors)
                local += [(i, a, b) for i, a, b in zip(idx, c.sum.tolist(), r.sum.tolist())]
            policy.train()
            gathered = self.engine.accelerator.gather_for_metrics(local, use_gather_object=True)
            values = {i: (a, b) for i, a, b in gathered}
            if self.engine.is_main:
                cache.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"key": key, "values": values}, cache)
        for i, row in enumerate(rows):
            row["ref_chosen_logp"], row["ref_rejected_logp"] = values[i]


@torch.no_grad()
def attach_reference_logps(model, rows: list[dict], pad_id: int, batch_size: int = 32) -> list[dict]:
    """Set `ref_chosen_logp`/`ref_rejected_logp` on tokenized pair rows, scored by `model` (frozen here);
    `train_dpo` with `reference="precomputed"` then uses them as they are."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        t = to_device(pair_batch([r["prompt_ids"] for r in batch], [r["chosen_ids"] for r in batch],
                                 [r["rejected_ids"] for r in batch], pad_id), device)
        chosen, rejected = pair_logps(model, t)
        for row, c, r in zip(batch, chosen.sum.tolist(), rejected.sum.tolist()):
            row["ref_chosen_logp"], row["ref_rejected_logp"] = c, r
    model.train(was_training)
    return rows


def load_preference_rows(config: DPOConfig, tokenizer) -> tuple[list[dict], list[dict]]:
    """Read, validate and tokenize the training (and evaluation) pairs: all before any compute."""
    return read_training_rows(config, tokenizer, preference_examples, tokenize_preferences)


def train_dpo(config: DPOConfig, policy, tokenizer, train_rows: list[dict], eval_rows: list[dict] | None = None,
              engine: Engine | None = None, eval_fn=None) -> tuple[object, TrainResult]:
    """Train `policy` on tokenized pair rows. The Python API behind `frugalign dpo`, used by benches
    and by recipes that build their pairs in memory. The held-out evaluation is DPO's metrics on
    `eval_rows`, or `eval_fn(model) -> metrics` when given (a bench's gold-reward evaluation)."""
    engine = engine or Engine(config)
    policy = policy.to(engine.device)
    scorer = PairScorer(config, policy, tokenizer.pad_token_id)
    reference = None if config.loss.loss in REFERENCE_FREE else Reference(
        engine, policy, scorer, config.reference.reference == "precomputed", config.lora.lora_r > 0)
    # rows may carry their own reference log-probs (recipes whose reference is not the initial policy)
    missing = [r for r in train_rows + list(eval_rows or []) if "ref_chosen_logp" not in r]
    if reference is not None and reference.precomputed and missing:
        reference.precompute(policy, missing, config.train.batch_size, scorer, str(config.model.model),
                             Path(config.train.output_dir) / "reference_logps.pt")

    def step(model, rows: list[dict]):
        tensors = scorer.chosen_rejected(rows, engine.device)
        chosen, rejected = scorer(model, tensors)
        ref_chosen, ref_rejected = reference(model, rows, tensors, chosen, rejected) if reference else (None, None)
        per_pair, margin = pair_losses(config, chosen, rejected, ref_chosen, ref_rejected)
        weights = torch.tensor([r.get("weight", 1.0) for r in rows], device=engine.device)
        loss = losses.weighted_mean(per_pair, weights)
        return loss, {"loss": loss.item(), **pair_metrics(config.loss.beta, margin, chosen, rejected, ref_chosen, ref_rejected)}

    def evaluate(model) -> dict[str, float]:
        return mean_metrics(engine, model, eval_rows, step, config.train.batch_size)

    if eval_fn is None and eval_rows:
        eval_fn = evaluate
    return engine.fit(policy, train_rows, step, eval_fn, description=config.loss.loss, eval_steps=config.eval.eval_steps)
