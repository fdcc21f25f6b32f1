"""`frugalign kto`: Kahneman-Tversky Optimization (Ethayarajh et al. 2024) on completions labelled desirable or
undesirable, as TRL's KTOTrainer trains it.

Per step, on a micro-batch of n rows (x_i, y_i, label_i): r_i = logp_pi(y_i|x_i) - logp_ref(y_i|x_i), summed
over completion tokens; the KL estimate, the mean of the same log-ratio over the mismatched pairs (x_i, y_{i+1})
(each prompt with the next row's completion, the last with the first), computed without gradient since the loss
detaches it; then `losses.kto_loss`, averaged over the rows (the class weights are inside the loss, as in TRL).
The reference is a frozen copy of the initial policy, or with LoRA the base model with the adapter disabled.
"""

from __future__ import annotations

import copy

import torch

from frugalign import losses, models
from frugalign.console import print_summary
from frugalign.data import labelled_completions, tokenize_labelled
from frugalign.engine import Engine, TrainResult
from frugalign.errors import UserError
from frugalign.logprobs import pad_sequences, sequence_logps
from frugalign.options import KTOConfig
from frugalign.training.common import load_policy, read_training_rows, to_device

# TRL's training metrics per class are sums and counts, so that a micro-batch without one class still averages
# right: the run's (or an evaluation's) per-row means are the ratios of their totals (`per_row_means`)
SUMS = ("rewards/chosen_sum", "logps/chosen_sum", "count/chosen",
        "rewards/rejected_sum", "logps/rejected_sum", "count/rejected")


def load_labelled_rows(config: KTOConfig, tokenizer) -> tuple[list[dict], list[dict]]:
    """Read, validate and tokenize the training (and evaluation) rows: all before any compute."""
    return read_training_rows(config, tokenizer, labelled_completions, tokenize_labelled)


def mismatched(rows: list[dict]) -> list[dict]:
    """Each row's prompt with the next row's completion (the last row's with the first's): completions not
    written for the prompt, whose policy/reference log-ratio estimates the KL term KTO's reference point needs."""
    return [{"prompt_ids": row["prompt_ids"], "completion_ids": rows[(i + 1) % len(rows)]["completion_ids"]}
            for i, row in enumerate(rows)]


def per_row_means(sums: dict[str, float]) -> dict[str, float]:
    """TRL's `rewards/chosen`, `logps/chosen` (and rejected), `rewards/margins` from summed metrics; a class
    with no rows has no mean."""
    out = {}
    for kind in ("chosen", "rejected"):
        if sums.get(f"count/{kind}", 0) > 0:
            out[f"rewards/{kind}"] = sums[f"rewards/{kind}_sum"] / sums[f"count/{kind}"]
            out[f"logps/{kind}"] = sums[f"logps/{kind}_sum"] / sums[f"count/{kind}"]
    if "rewards/chosen" in out and "rewards/rejected" in out:
        out["rewards/margins"] = out["rewards/chosen"] - out["rewards/rejected"]
    return out


def train_kto(config: KTOConfig, policy, tokenizer, train_rows: list[dict], eval_rows: list[dict] | None = None,
              engine: Engine | None = None, eval_fn=None) -> tuple[object, TrainResult]:
    """Train `policy` on tokenized labelled rows (the Python API behind `frugalign kto`), evaluated on
    `eval_rows`, or `eval_fn(model) -> metrics` when given (a bench's gold-reward evaluation)."""
    engine = engine or Engine(config)
    policy = policy.to(engine.device)
    pad_id = tokenizer.pad_token_id
    reference = None if config.lora.lora_r > 0 else copy.deepcopy(policy).eval().requires_grad_(False)

    def logps(model, rows: list[dict]) -> torch.Tensor:
        t = to_device(pad_sequences([r["prompt_ids"] for r in rows], [r["completion_ids"] for r in rows], pad_id),
                      engine.device)
        return sequence_logps(model, t["input_ids"], t["attention_mask"], t["loss_mask"]).sum

    @torch.no_grad()
    def reference_logps(model, rows: list[dict]) -> torch.Tensor:
        if reference is None:
            with engine.unwrap(model).disable_adapter():
                return logps(model, rows)
        return logps(reference, rows)

    def forward(model, rows: list[dict]):
        """Per-row losses, detached log-probs and rewards, and the clamped KL estimate z0."""
        policy_logps = logps(model, rows)
        logratios = policy_logps - reference_logps(model, rows)
        with torch.no_grad():
            pairs = mismatched(rows)
            kl = (logps(model, pairs) - reference_logps(model, pairs)).mean()
        desirable = torch.tensor([r["desirable"] for r in rows], device=engine.device)
        per_row = losses.kto_loss(logratios, desirable, kl, config.loss.beta, config.loss.desirable_weight,
                                  config.loss.undesirable_weight)
        return per_row, policy_logps.detach(), config.loss.beta * logratios.detach(), desirable, kl.clamp(min=0.0)

    def class_sums(policy_logps, rewards, desirable) -> dict[str, float]:
        out = {}
        for kind, rows in (("chosen", desirable), ("rejected", ~desirable)):
            out[f"rewards/{kind}_sum"] = rewards[rows].sum().item()
            out[f"logps/{kind}_sum"] = policy_logps[rows].sum().item()
            out[f"count/{kind}"] = float(rows.sum().item())
        return out

    def step(model, rows: list[dict]):
        per_row, policy_logps, rewards, desirable, kl = forward(model, rows)
        loss = per_row.mean()
        return loss, {"loss": loss.item(), "kl": kl.item(), **class_sums(policy_logps, rewards, desirable)}

    def evaluate(model) -> dict[str, float]:
        shard = engine.shard(eval_rows)
        batches = [shard[i : i + config.train.batch_size] for i in range(0, len(shard), config.train.batch_size)]
        if len(batches) > 1 and len(batches[-1]) == 1:  # one row has no other row's completion to mismatch with
            batches[-2:] = [batches[-2] + batches[-1]]
        totals = dict.fromkeys(("loss", "kl", "rows", *SUMS), 0.0)
        for batch in batches:
            per_row, policy_logps, rewards, desirable, kl = forward(model, batch)
            for key, value in {"loss": per_row.sum().item(), "kl": kl.item() * len(batch), "rows": len(batch),
                               **class_sums(policy_logps, rewards, desirable)}.items():
                totals[key] += value
        # summed over processes here, so every process reports the same keys (a shard may lack a class)
        keys = sorted(totals)
        summed = engine.accelerator.reduce(torch.tensor([totals[k] for k in keys], device=engine.device,
                                                        dtype=torch.float64), reduction="sum")
        totals = dict(zip(keys, summed.tolist()))
        rows = max(1.0, totals["rows"])
        return {"loss": totals["loss"] / rows, "kl": totals["kl"] / rows, **per_row_means(totals)}

    if eval_fn is None and eval_rows:
        eval_fn = evaluate
    return engine.fit(policy, train_rows, step, eval_fn, description="kto",
                      eval_steps=config.eval.eval_steps)


def run(config: KTOConfig) -> TrainResult:
    """`frugalign kto`: load, validate, train, save, summarise."""
    tokenizer = models.load_tokenizer(config.model.model)
    train_rows, eval_rows = load_labelled_rows(config, tokenizer)
    if len(train_rows) < 2:  # the KL estimate pairs each prompt with another row's completion
        raise UserError(f"{config.data.dataset}: KTO needs at least 2 training rows, got {len(train_rows)}")
    engine = Engine(config)
    policy = load_policy(config, engine)
    model, result = train_kto(config, policy, tokenizer, train_rows, eval_rows, engine)
    path = engine.save_model(model, tokenizer)
    engine.end()
    desirable = sum(r["desirable"] for r in train_rows)
    print_summary("frugalign kto", {"desirable rows": desirable, "undesirable rows": len(train_rows) - desirable,
                                    "held-out rows": len(eval_rows), **result.summary(skip=SUMS),
                                    **{f"{k} (mean)": v for k, v in per_row_means(result.total_metrics).items()},
                                    "model": str(path)})
    return result
