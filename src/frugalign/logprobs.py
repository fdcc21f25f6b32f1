"""Sequence log-probabilities of responses given prompts.

A response's log-probability is the sum of its tokens' log-probabilities; prompt and padding tokens are
masked out. Chosen and rejected responses of a batch go through the model in a single forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SequenceLogps:
    """Per-sequence sums of response-token log-probs and the number of response tokens."""

    sum: torch.Tensor  # [N]
    count: torch.Tensor  # [N]

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / self.count.clamp(min=1)


def pad_sequences(prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad prompt+response rows; loss_mask is 1 on response tokens only."""
    rows = [p + r for p, r in zip(prompts, responses)]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        n = len(p) + len(r)
        input_ids[i, :n] = torch.tensor(p + r, dtype=torch.long)
        attention_mask[i, :n] = 1
        loss_mask[i, len(p) : n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels) under logits, computed in float32 without materialising a full log_softmax copy
    in the logits' dtype (bf16 log-probs are too coarse for DPO margins)."""
    logits = logits.float()
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def sequence_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor) -> SequenceLogps:
    """Sum of response-token log-probs per row. Token t is predicted from positions < t."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    labels = input_ids[:, 1:]
    mask = loss_mask[:, 1:].to(torch.float32)
    lp = token_logps(logits[:, :-1], labels) * mask
    return SequenceLogps(sum=lp.sum(-1), count=mask.sum(-1))


def pair_batch(batch: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Tensors for a batch of tokenized pairs (prompt_ids, chosen_ids, rejected_ids): the first half
    of the rows are the chosen responses, the second half the rejected ones."""
    prompts = [ex["prompt_ids"] for ex in batch]
    responses = [ex["chosen_ids"] for ex in batch] + [ex["rejected_ids"] for ex in batch]
    return pad_sequences(prompts + prompts, responses, pad_id)


def pair_logps(model, tensors: dict[str, torch.Tensor]) -> tuple[SequenceLogps, SequenceLogps]:
    """(chosen, rejected) log-probs from one forward over a `pair_batch`."""
    out = sequence_logps(model, tensors["input_ids"], tensors["attention_mask"], tensors["loss_mask"])
    n = out.sum.shape[0] // 2
    return SequenceLogps(out.sum[:n], out.count[:n]), SequenceLogps(out.sum[n:], out.count[n:])
