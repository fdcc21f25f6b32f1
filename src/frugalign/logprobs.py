"""Sequence log-probabilities of responses given prompts.

A response's log-probability is the sum of its tokens' log-probabilities; prompt and padding tokens are
masked out. Chosen and rejected responses of a batch go through the model in a single forward pass.

Pairs have two layouts (`pair_batch`): padded rows (any causal LM), and the shared-prefix layout (one
row per pair, the prompt computed once). Given the model's output embedding, `pair_logps` runs it on
response positions only, in either layout. Both tricks need a model that passes
`supports_shared_prefix`, a probe that compares the layouts' log-probs on a small batch; DPO's
`shared_prefix` option says which layout to use.
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


def pair_batch(prompts: list[list[int]], firsts: list[list[int]], seconds: list[list[int]], pad_id: int,
               shared_prefix: bool = False) -> dict[str, torch.Tensor]:
    """Tensors for a batch of pairs (prompt, first response, second response).

    Padded layout: 2B right-padded rows, the B first responses then the B second ones.
    Shared-prefix layout: one row per pair, [prompt, first, second], where the second response
    attends to the prompt and itself but not to the first, and its positions restart after the
    prompt; the prompt is computed once, and only response positions reach the output layer."""
    if not shared_prefix:
        t = pad_sequences(prompts + prompts, firsts + seconds, pad_id)
        # where the output layer runs, found here on the CPU: a nonzero() on the GPU would stall each step
        segments, col = t["loss_mask"][:, 1:].nonzero(as_tuple=True)  # the state at col predicts token col + 1
        return {**t, "predictors": segments * t["input_ids"].shape[1] + col, "targets": t["input_ids"][segments, col + 1],
                "segments": segments}
    n = len(prompts)
    lengths = [len(p) + len(a) + len(b) for p, a, b in zip(prompts, firsts, seconds)]
    width = max(lengths)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, 1, width, width), dtype=torch.bool)
    predictors: list[int] = []  # flat index (row * width + position) of the hidden state predicting a token
    targets: list[int] = []
    segments: list[int] = []  # i: first response of pair i, n + i: its second response
    causal = torch.tril(torch.ones((width, width), dtype=torch.bool))
    for i, (p, a, b) in enumerate(zip(prompts, firsts, seconds)):
        P, A, B = len(p), len(a), len(b)
        input_ids[i, : P + A + B] = torch.tensor(p + a + b, dtype=torch.long)
        position_ids[i, : P + A + B] = torch.tensor(list(range(P + A)) + list(range(P, P + B)), dtype=torch.long)
        mask[i, 0] = causal
        mask[i, 0, P + A : P + A + B, P : P + A] = False  # the second response does not see the first
        mask[i, 0, P + A + B :, :] = False
        # padding queries attend to themselves only, so that no softmax row is empty
        mask[i, 0, torch.arange(P + A + B, width), torch.arange(P + A + B, width)] = True
        base = i * width
        predictors += [base + P - 1 + j for j in range(A)]
        predictors += [base + P - 1] + [base + P + A + j for j in range(B - 1)]
        targets += a + b
        segments += [i] * A + [n + i] * B
    return {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": mask,
            "predictors": torch.tensor(predictors), "targets": torch.tensor(targets),
            "segments": torch.tensor(segments)}


def pair_logps(model, tensors: dict[str, torch.Tensor], output_layer=None) -> tuple[SequenceLogps, SequenceLogps]:
    """(first, second) response log-probs from one forward over a `pair_batch`. With `output_layer`,
    the model's output embedding (`get_output_embeddings()`), only response positions reach it; the
    shared-prefix layout needs it."""
    shared = "position_ids" in tensors
    if output_layer is None and not shared:
        out = sequence_logps(model, tensors["input_ids"], tensors["attention_mask"], tensors["loss_mask"])
        n = out.sum.shape[0] // 2
        return SequenceLogps(out.sum[:n], out.count[:n]), SequenceLogps(out.sum[n:], out.count[n:])
    if shared:
        n_seq, inputs = 2 * tensors["input_ids"].shape[0], {
            "attention_mask": additive_mask(tensors["attention_mask"], output_layer.weight.dtype),
            "position_ids": tensors["position_ids"]}
    else:  # padded rows keep their 2-D mask (and with it, fused attention kernels)
        n_seq, inputs = tensors["input_ids"].shape[0], {"attention_mask": tensors["attention_mask"]}
    # logits_to_keep=1: the model's own output layer runs on one position; we run it on response positions only
    out = model(input_ids=tensors["input_ids"], **inputs, output_hidden_states=True, logits_to_keep=1, use_cache=False)
    hidden = out.hidden_states[-1]
    lp = token_logps(output_layer(hidden.reshape(-1, hidden.shape[-1])[tensors["predictors"]]), tensors["targets"])
    segments = tensors["segments"]
    sums = torch.zeros(n_seq, dtype=lp.dtype, device=lp.device).index_add(0, segments, lp)
    counts = torch.zeros(n_seq, dtype=lp.dtype, device=lp.device).index_add(0, segments, torch.ones_like(lp))
    n = n_seq // 2
    return SequenceLogps(sums[:n], counts[:n]), SequenceLogps(sums[n:], counts[n:])


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean 4-D mask (True: may attend) as the additive float mask (0 or the dtype's minimum) that
    every attention implementation taking a dense mask accepts: eager attention adds the mask to its
    scores, so a boolean mask would be added as 0/1 there and hide nothing."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)


@torch.no_grad()
def supports_shared_prefix(model) -> bool:
    """Whether `model` gives the padded layout's log-probs in the shared-prefix layout, on a probe batch
    of two pairs of unequal lengths (so masks, position ids and padding all matter). This fails for
    attention kernels that ignore or reject a dense 4-D mask, and for models whose logits are not the
    output embedding applied to the last hidden state (e.g. soft-capped logits); the caller then uses
    padded rows. Tolerance: 1e-3 in float32, 5e-2 in lower precision (the two layouts sum differently)."""
    head = model.get_output_embeddings()
    vocab = head.weight.shape[0]
    device = head.weight.device
    ids = lambda *xs: [x % vocab for x in xs]  # noqa: E731
    prompts, firsts, seconds = [ids(1, 2, 3), ids(4, 5)], [ids(6, 7), ids(8, 9, 10)], [ids(11), ids(12, 13, 14, 15)]
    training = model.training
    model.eval()  # no dropout: both layouts must see the same function
    try:
        plain = pair_logps(model, {k: v.to(device) for k, v in pair_batch(prompts, firsts, seconds, 0).items()})
        shared = pair_logps(model, {k: v.to(device) for k, v in pair_batch(prompts, firsts, seconds, 0, True).items()},
                            head)
    except (TypeError, ValueError, RuntimeError):  # a model or kernel that refuses a 4-D mask or position ids
        return False
    finally:
        model.train(training)
    tol = 1e-3 if head.weight.dtype == torch.float32 else 5e-2
    return all(torch.allclose(p.sum.float(), s.sum.float(), atol=tol, rtol=tol) for p, s in zip(plain, shared))
