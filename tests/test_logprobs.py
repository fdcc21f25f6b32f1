"""The shared-prefix layout gives the same log-probs and gradients as plain padded rows."""

import pytest
import torch

from frugalign.logprobs import pair_batch, pair_logps, supports_shared_prefix
from frugalign.models import tiny_causal_lm


def random_pairs(seed, n=3, vocab=40):
    g = torch.Generator().manual_seed(seed)
    rand = lambda lo, hi: torch.randint(3, vocab, (int(torch.randint(lo, hi, (1,), generator=g)),), generator=g).tolist()  # noqa: E731
    return [rand(1, 9) for _ in range(n)], [rand(1, 7) for _ in range(n)], [rand(1, 7) for _ in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shared_prefix_equals_padded_rows(seed):
    model = tiny_causal_lm(40, seed=seed)
    prompts, firsts, seconds = random_pairs(seed)
    plain = pair_logps(model, pair_batch(prompts, firsts, seconds, 0))
    shared = pair_logps(model, pair_batch(prompts, firsts, seconds, 0, shared_prefix=True), model.get_output_embeddings())
    for p, s in zip(plain, shared):
        assert torch.allclose(p.sum, s.sum, atol=1e-4)
        assert torch.equal(p.count, s.count)
    expected = [len(x) for x in firsts]
    assert plain[0].count.tolist() == expected


def test_shared_prefix_gradients_match():
    prompts, firsts, seconds = random_pairs(5)
    grads = []
    for shared in (False, True):
        model = tiny_causal_lm(40, seed=0)
        head = model.get_output_embeddings() if shared else None
        a, b = pair_logps(model, pair_batch(prompts, firsts, seconds, 0, shared_prefix=shared), head)
        (a.sum - 2 * b.sum).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-4)


def test_second_response_does_not_see_the_first():
    model = tiny_causal_lm(40, seed=0)
    head = model.get_output_embeddings()
    a1 = pair_logps(model, pair_batch([[5, 6]], [[7, 8]], [[9, 10]], 0, shared_prefix=True), head)[1]
    a2 = pair_logps(model, pair_batch([[5, 6]], [[11, 12, 13]], [[9, 10]], 0, shared_prefix=True), head)[1]
    assert torch.allclose(a1.sum, a2.sum, atol=1e-5)


def test_supports_shared_prefix_detects_post_processed_logits():
    model = tiny_causal_lm(40)
    assert supports_shared_prefix(model)
    model.config.final_logit_softcapping = 1.0  # not used by Llama: still supported
    assert supports_shared_prefix(model)

    class Capped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def get_output_embeddings(self):
            return self.inner.get_output_embeddings()

        def forward(self, **kw):
            out = self.inner(**kw)
            out.logits = torch.tanh(out.logits)
            return out

    assert not supports_shared_prefix(Capped(tiny_causal_lm(40)))
