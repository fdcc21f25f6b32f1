"""Sequence log-probabilities of responses given prompts.

A response's log-probability is the sum of its tokens' log-probabilities; prompt and padding tokens are
masked out. Chosen and rejected responses of a batch go through the model in a single forward pass.

Pairs have four layouts (`pair_batch`, `LAYOUTS`): padded rows (any causal LM), and three that compute
each prompt once (Wang and Hegde 2024, "Accelerating Direct Preference Optimization with Prefix
Sharing"): one row per pair with a dense 4-D mask (`shared-prefix`), the same rows with a FlexAttention
BlockMask (`flex`), and every pair of the batch back to back in one row with a BlockMask (`packed`, no
padding). One rule (`may_attend`) gives both kinds of mask. Given the model's output embedding,
`pair_logps` runs it on response positions only, in any layout. These tricks need a model that passes
`supports_shared_prefix`, a probe that compares a layout's log-probs with padded rows on a small batch;
DPO's `shared_prefix` option says which layout to use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from frugalign.errors import UserError

LAYOUTS = ("padded", "shared-prefix", "flex", "packed")
FLEX_LAYOUTS = ("flex", "packed")  # masked by a BlockMask: the model must run FlexAttention


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
    """Sum of response-token log-probs per row. Token t is predicted from positions < t.

    The model's output layer runs only from the position before the earliest response token on
    (`logits_to_keep`): the logits, [rows, positions, vocabulary] in float32, are a large part of the memory of a
    step with a large vocabulary (RLOO scores k samples per prompt; SmolLM2 has 49,152 tokens),
    and prompt positions predict nothing that is scored."""
    responses = loss_mask.any(0).nonzero()
    # the earliest response token (the first token of a row is never predicted)
    start = max(1, int(responses[0])) if len(responses) else input_ids.shape[1] - 1
    keep = input_ids.shape[1] - start + 1  # positions start - 1 .. the last: the predictors of every response token
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep).logits
    labels = input_ids[:, -keep + 1:]
    mask = loss_mask[:, -keep + 1:].to(torch.float32)
    lp = token_logps(logits[:, :-1], labels) * mask
    return SequenceLogps(sum=lp.sum(-1), count=mask.sum(-1))


def pair_batch(prompts: list[list[int]], firsts: list[list[int]], seconds: list[list[int]], pad_id: int,
               layout: str = "padded") -> dict[str, torch.Tensor]:
    """Tensors for a batch of pairs (prompt, first response, second response), in one of `LAYOUTS`.

    padded: 2B right-padded rows, the B first responses then the B second ones.
    shared-prefix and flex: one row per pair, [prompt, first, second]; packed: one row, every pair's
    [prompt, first, second] back to back. In these the second response's positions restart after the
    prompt, and `parts` says which part of which pair each token is, from which `may_attend` gives the
    mask: a dense one here (shared-prefix), a BlockMask in `pair_logps` (flex, packed). The prompt is
    computed once, and only response positions reach the output layer. `counts` are the responses'
    lengths, known here: first responses, then second ones."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {LAYOUTS}")
    counts = torch.tensor([len(a) for a in firsts] + [len(b) for b in seconds], dtype=torch.float32)
    if layout == "padded":
        t = pad_sequences(prompts + prompts, firsts + seconds, pad_id)
        # where the output layer runs, found here on the CPU: a nonzero() on the GPU would stall each step
        segments, col = t["loss_mask"][:, 1:].nonzero(as_tuple=True)  # the state at col predicts token col + 1
        return {**t, "predictors": segments * t["input_ids"].shape[1] + col, "targets": t["input_ids"][segments, col + 1],
                "segments": segments, "counts": counts}
    n = len(prompts)
    rows = [[i] for i in range(n)] if layout != "packed" else [list(range(n))]
    lengths = [len(p) + len(a) + len(b) for p, a, b in zip(prompts, firsts, seconds)]
    width = max(sum(lengths[i] for i in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    parts = torch.full((len(rows), width), -1, dtype=torch.long)  # 3i, 3i+1, 3i+2: pair i's prompt, first, second
    predictors: list[int] = []  # flat index (row * width + position) of the hidden state predicting a token
    targets: list[int] = []
    segments: list[int] = []  # i: first response of pair i, n + i: its second response
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            p, a, b = prompts[i], firsts[i], seconds[i]
            P, A, B = len(p), len(a), len(b)
            span = slice(start, start + P + A + B)
            input_ids[r, span] = torch.tensor(p + a + b, dtype=torch.long)
            position_ids[r, span] = torch.tensor(list(range(P + A)) + list(range(P, P + B)), dtype=torch.long)
            parts[r, span] = torch.tensor([3 * i] * P + [3 * i + 1] * A + [3 * i + 2] * B, dtype=torch.long)
            base = r * width + start
            predictors += [base + P - 1 + j for j in range(A)]
            predictors += [base + P - 1] + [base + P + A + j for j in range(B - 1)]
            targets += a + b
            segments += [i] * A + [n + i] * B
            start = span.stop
    t = {"input_ids": input_ids, "position_ids": position_ids, "predictors": torch.tensor(predictors),
         "targets": torch.tensor(targets), "segments": torch.tensor(segments), "counts": counts}
    if layout != "shared-prefix":
        return t | {"parts": parts}
    positions = torch.arange(width)
    return t | {"attention_mask": may_attend(parts[:, None, :, None], parts[:, None, None, :], positions[:, None], positions)}


def may_attend(query_part: torch.Tensor, key_part: torch.Tensor, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """The mask of the layouts that compute each prompt once, for query and key token indices and their
    parts (3i, 3i+1, 3i+2: pair i's prompt, first and second response; -1: padding): a token sees the
    tokens up to itself of its own part and of its pair's prompt. So the second response sees the prompt
    but never the first response, packed pairs never see each other, and padding sees padding only
    (no query is left without a key)."""
    return (key <= query) & ((key_part == query_part) | (key_part == query_part // 3 * 3))


def block_mask(parts: torch.Tensor):
    """`may_attend` as a FlexAttention BlockMask for rows of `parts`, built on their device. The rule is
    evaluated once per batch to find the blocks; the attention kernel then skips the key blocks no query
    of a block sees and applies the rule itself inside the others, with no dense float mask to read."""
    from torch.nn.attention.flex_attention import create_block_mask  # torch >= 2.5; only the flex layouts need it

    def mask_mod(b, h, q, kv):
        return may_attend(parts[b, q], parts[b, kv], q, kv)

    rows, width = parts.shape
    return create_block_mask(mask_mod, rows, None, width, width, device=parts.device)


def require_flex_backward(device: torch.device) -> None:
    """FlexAttention has no backward on the CPU (or MPS): PyTorch raises inside the model's first
    attention layer. Training in a flex layout there fails here instead, in one line."""
    if device.type in ("cpu", "mps"):
        raise UserError(f"shared_prefix flex and packed train on a GPU only: PyTorch's FlexAttention has no backward "
                        f"on {device.type}; use shared_prefix on or off there (scoring without gradients works)")


def pair_logps(model, tensors: dict[str, torch.Tensor], output_layer=None) -> tuple[SequenceLogps, SequenceLogps]:
    """(first, second) response log-probs from one forward over a `pair_batch`. With `output_layer`,
    the model's output embedding (`get_output_embeddings()`), only response positions reach it; the
    layouts that compute each prompt once need it, and the flex ones a model running FlexAttention."""
    shared = "position_ids" in tensors
    if output_layer is None and not shared:
        out = sequence_logps(model, tensors["input_ids"], tensors["attention_mask"], tensors["loss_mask"])
        n = out.sum.shape[0] // 2
        return SequenceLogps(out.sum[:n], out.count[:n]), SequenceLogps(out.sum[n:], out.count[n:])
    if "parts" in tensors:  # flex, packed
        if torch.is_grad_enabled() and any(p.requires_grad for p in model.parameters()):
            require_flex_backward(tensors["parts"].device)
        inputs = {"attention_mask": block_mask(tensors["parts"]), "position_ids": tensors["position_ids"]}
    elif shared:
        inputs = {"attention_mask": additive_mask(tensors["attention_mask"], output_layer.weight.dtype),
                  "position_ids": tensors["position_ids"]}
    else:  # padded rows keep their 2-D mask (and with it, fused attention kernels)
        inputs = {"attention_mask": tensors["attention_mask"]}
    # logits_to_keep=1: the model's own output layer runs on one position; we run it on response positions only
    out = model(input_ids=tensors["input_ids"], **inputs, output_hidden_states=True, logits_to_keep=1, use_cache=False)
    hidden = out.hidden_states[-1]
    lp = token_logps(output_layer(hidden.reshape(-1, hidden.shape[-1])[tensors["predictors"]]), tensors["targets"])
    counts = tensors["counts"]
    sums = torch.zeros(counts.shape[0], dtype=lp.dtype, device=lp.device).index_add(0, tensors["segments"], lp)
    n = counts.shape[0] // 2
    return SequenceLogps(sums[:n], counts[:n]), SequenceLogps(sums[n:], counts[n:])


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean 4-D mask (True: may attend) as the additive float mask (0 or the dtype's minimum) that
    every attention implementation taking a dense mask accepts: eager attention adds the mask to its
    scores, so a boolean mask would be added as 0/1 there and hide nothing."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)


@torch.no_grad()
def supports_shared_prefix(model, layout: str = "shared-prefix") -> bool:
    """Whether `model` gives the padded layout's log-probs in `layout`, on a probe batch of two pairs of
    unequal lengths (so masks, position ids, packing and padding all matter). This fails for attention
    kernels that ignore or reject the layout's mask (a BlockMask needs FlexAttention), and for models
    whose logits are not the output embedding applied to the last hidden state (e.g. soft-capped
    logits); the caller then uses padded rows. Tolerance: 1e-3 in float32, 5e-2 in lower precision
    (the two layouts sum differently)."""
    head = model.get_output_embeddings()
    vocab = head.weight.shape[0]
    device = head.weight.device
    ids = lambda *xs: [x % vocab for x in xs]  # noqa: E731
    prompts, firsts, seconds = [ids(1, 2, 3), ids(4, 5)], [ids(6, 7), ids(8, 9, 10)], [ids(11), ids(12, 13, 14, 15)]
    training = model.training
    model.eval()  # no dropout: both layouts must see the same function
    try:
        plain = pair_logps(model, {k: v.to(device) for k, v in pair_batch(prompts, firsts, seconds, 0).items()})
        shared = pair_logps(model, {k: v.to(device) for k, v in pair_batch(prompts, firsts, seconds, 0, layout).items()},
                            head)
    except (TypeError, ValueError, RuntimeError, ImportError):  # a model or kernel that refuses the mask or position
        # ids, or a torch without FlexAttention (before 2.5)
        return False
    finally:
        model.train(training)
    tol = 1e-3 if head.weight.dtype == torch.float32 else 5e-2
    return all(torch.allclose(p.sum.float(), s.sum.float(), atol=tol, rtol=tol) for p, s in zip(plain, shared))
