"""The FlexAttention layouts (flex: one row per pair; packed: every pair in one row) give the padded rows'
log-probs, their mask keeps each response from the other and each pair from the others, and training in
them on the CPU, where FlexAttention has no backward, stops in one line."""

import pytest
import torch

from frugalign.errors import UserError
from frugalign.logprobs import may_attend, pair_batch, pair_logps, supports_shared_prefix
from frugalign.models import tiny_causal_lm
from tests.test_logprobs import random_pairs

pytest.importorskip("torch.nn.attention.flex_attention")


def flex_lm(seed=0):
    return tiny_causal_lm(40, seed=seed, attn_implementation="flex_attention").eval()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flex_layouts_equal_padded_rows(seed):
    model = flex_lm(seed)
    head = model.get_output_embeddings()
    prompts, firsts, seconds = random_pairs(seed)  # unequal prompt and response lengths
    with torch.no_grad():
        plain = pair_logps(model, pair_batch(prompts, firsts, seconds, 0))
        for layout in ("flex", "packed"):
            got = pair_logps(model, pair_batch(prompts, firsts, seconds, 0, layout), head)
            for p, g in zip(plain, got):
                assert torch.allclose(p.sum, g.sum, atol=1e-5, rtol=0), (layout, (p.sum - g.sum).abs().max())
                assert torch.equal(p.count, g.count)


def test_packed_rows_and_parts():
    t = pair_batch([[5, 6], [7]], [[8, 9], [10]], [[11], [12, 13]], 0, "packed")
    assert t["input_ids"].tolist() == [[5, 6, 8, 9, 11, 7, 10, 12, 13]]
    assert t["position_ids"].tolist() == [[0, 1, 2, 3, 2, 0, 1, 1, 2]]  # restart per pair, the second after the prompt
    assert t["parts"].tolist() == [[0, 0, 1, 1, 2, 3, 4, 5, 5]]
    assert t["predictors"].tolist() == [1, 2, 1, 5, 5, 7] and t["targets"].tolist() == [8, 9, 11, 10, 12, 13]
    assert t["segments"].tolist() == [0, 0, 2, 1, 3, 3] and t["counts"].tolist() == [2, 1, 1, 2]
    flex = pair_batch([[5, 6], [7]], [[8, 9], [10]], [[11], [12, 13]], 0, "flex")
    assert flex["parts"].tolist() == [[0, 0, 1, 1, 2], [3, 4, 5, 5, -1]]  # -1: padding


def test_may_attend_rule():
    parts = torch.tensor([0, 0, 1, 1, 2, 3, 4, 5, -1, -1])
    i = torch.arange(len(parts))
    allowed = may_attend(parts[:, None], parts[None, :], i[:, None], i[None, :])
    seen = lambda q: i[allowed[q]].tolist()  # noqa: E731
    assert seen(3) == [0, 1, 2, 3]  # the first response: the prompt and itself, causally
    assert seen(4) == [0, 1, 4]  # the second response: the prompt and itself, never the first
    assert seen(7) == [5, 7]  # the next pair: its own prompt only
    assert seen(8) == [8] and seen(9) == [8, 9]  # padding: padding only, never an empty row


def test_second_response_and_other_pairs_unseen():
    """Changing a pair's first response leaves its second response's log-prob alone; in a packed row, a
    pair's log-probs do not depend on the pairs before it."""
    model = flex_lm()
    head = model.get_output_embeddings()
    with torch.no_grad():
        for layout in ("flex", "packed"):
            a = pair_logps(model, pair_batch([[5, 6]], [[7, 8]], [[9, 10]], 0, layout), head)[1]
            b = pair_logps(model, pair_batch([[5, 6]], [[11, 12, 13]], [[9, 10]], 0, layout), head)[1]
            assert torch.allclose(a.sum, b.sum, atol=1e-6), layout
        alone = pair_logps(model, pair_batch([[5, 6]], [[7, 8]], [[9, 10]], 0, "packed"), head)
        after = pair_logps(model, pair_batch([[20, 21, 22], [5, 6]], [[23], [7, 8]], [[24, 25], [9, 10]], 0, "packed"), head)
        for x, y in zip(alone, after):
            assert torch.allclose(x.sum, y.sum[1:], atol=1e-6)


def test_torch_has_no_flex_backward_on_the_cpu():
    """Why training in the flex layouts is refused on the CPU; when PyTorch adds the backward, this fails
    and the refusal (`require_flex_backward`) can go."""
    from torch.nn.attention.flex_attention import flex_attention

    q = torch.randn(1, 1, 8, 4, requires_grad=True)
    with pytest.raises(NotImplementedError, match="backward on CPU"):
        flex_attention(q, q, q)


def test_training_in_flex_layouts_on_the_cpu_stops_early():
    model = flex_lm().train()
    prompts, firsts, seconds = random_pairs(3)
    for layout in ("flex", "packed"):
        with pytest.raises(UserError, match="train on a GPU only"):
            pair_logps(model, pair_batch(prompts, firsts, seconds, 0, layout), model.get_output_embeddings())
    with torch.no_grad():  # scoring (reference log-probs, margins) is fine
        pair_logps(model, pair_batch(prompts, firsts, seconds, 0, "packed"), model.get_output_embeddings())


def test_flex_probe():
    assert supports_shared_prefix(flex_lm(), "flex")
    assert supports_shared_prefix(flex_lm(), "packed")
    assert not supports_shared_prefix(tiny_causal_lm(40), "packed")  # SDPA cannot read a BlockMask
