"""The shared-prefix layout gives the same log-probs and gradients as plain padded rows."""

import pytest
import torch

from frugalign.logprobs import additive_mask, pad_sequences, pair_batch, pair_logps, sequence_logps, supports_shared_prefix
from frugalign.models import tiny_causal_lm


def random_pairs(seed, n=3, vocab=40):
    g = torch.Generator().manual_seed(seed)
    rand = lambda lo, hi: torch.randint(3, vocab, (int(torch.randint(lo, hi, (1,), generator=g)),), generator=g).tolist()  # noqa: E731
    return [rand(1, 9) for _ in range(n)], [rand(1, 7) for _ in range(n)], [rand(1, 7) for _ in range(n)]


def both_layouts(model, prompts, firsts, seconds, head=None):
    plain = pair_logps(model, pair_batch(prompts, firsts, seconds, 0))
    shared = pair_logps(model, pair_batch(prompts, firsts, seconds, 0, "shared-prefix"),
                        head if head is not None else model.get_output_embeddings())
    return plain, shared


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sequence_logps_sums_response_tokens_and_runs_the_output_layer_from_the_first_response_on(seed):
    model = tiny_causal_lm(40, seed=seed)
    prompts, responses, _ = random_pairs(seed, n=4)
    prompts[1], responses[2] = [], []  # a row without a prompt (its first token is never predicted), one without a response
    t = pad_sequences(prompts, responses, 0)
    seen = []
    model.get_output_embeddings().register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    got = sequence_logps(model, t["input_ids"], t["attention_mask"], t["loss_mask"])
    with torch.no_grad():
        logits = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits.float()
    logp = torch.log_softmax(logits, -1)
    width = t["input_ids"].shape[1]
    expected = [sum(logp[i, j - 1, t["input_ids"][i, j]].item() for j in range(1, width) if t["loss_mask"][i, j])
                for i in range(4)]
    assert got.sum.tolist() == pytest.approx(expected, abs=1e-4)
    assert got.count.tolist() == [len(responses[0]), len(responses[1]) - 1, 0, len(responses[3])]
    # the output layer ran on the positions from the one before the earliest response token (here: position 0)
    assert seen[0] == width


def test_sequence_logps_runs_the_output_layer_on_response_positions_only():
    model = tiny_causal_lm(40, seed=0)
    t = pad_sequences([[5, 6, 7, 8, 9], [5, 6, 7]], [[10, 11], [12, 13, 14, 15]], 0)  # responses from position 3 on
    seen = []
    model.get_output_embeddings().register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    full = sequence_logps(model, t["input_ids"], t["attention_mask"], t["loss_mask"])
    assert seen == [t["input_ids"].shape[1] - 2]  # positions 2 .. 6 of 7: none of the prompt before the last's
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits.float(), -1)
    expected = [logp[0, 4, 10] + logp[0, 5, 11], logp[1, 2, 12] + logp[1, 3, 13] + logp[1, 4, 14] + logp[1, 5, 15]]
    assert full.sum.tolist() == pytest.approx([e.item() for e in expected], abs=1e-4)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shared_prefix_equals_padded_rows(seed, attn):
    model = tiny_causal_lm(40, seed=seed, attn_implementation=attn)
    prompts, firsts, seconds = random_pairs(seed)
    plain, shared = both_layouts(model, prompts, firsts, seconds)
    for p, s in zip(plain, shared):
        assert torch.allclose(p.sum, s.sum, atol=1e-4)
        assert torch.equal(p.count, s.count)
    assert plain[0].count.tolist() == [len(x) for x in firsts]
    assert plain[1].count.tolist() == [len(x) for x in seconds]
    # padded rows with the output layer on response positions only: the same values again
    headed = pair_logps(model, pair_batch(prompts, firsts, seconds, 0), model.get_output_embeddings())
    for p, h in zip(plain, headed):
        assert torch.allclose(p.sum, h.sum, atol=1e-4) and torch.equal(p.count, h.count)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_prefix_gradients_match(attn):
    prompts, firsts, seconds = random_pairs(5)
    grads = []
    for layout in ("padded", "shared-prefix"):
        model = tiny_causal_lm(40, seed=0, attn_implementation=attn)
        head = model.get_output_embeddings() if layout != "padded" else None
        a, b = pair_logps(model, pair_batch(prompts, firsts, seconds, 0, layout), head)
        (a.sum - 2 * b.sum).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-4)


def test_lora_adapter_on_and_off_match_padded_rows():
    peft = pytest.importorskip("peft")
    prompts, firsts, seconds = random_pairs(7)
    grads = []
    for layout in ("padded", "shared-prefix"):
        torch.manual_seed(0)
        # init_lora_weights=False: a non-zero adapter, so that "on" and "off" differ; the output layer adapted too
        config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "lm_head"], init_lora_weights=False)
        model = peft.get_peft_model(tiny_causal_lm(40, seed=0), config)
        head = model.get_output_embeddings() if layout != "padded" else None
        a, b = pair_logps(model, pair_batch(prompts, firsts, seconds, 0, layout), head)
        (a.sum - 2 * b.sum).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]))
        with torch.no_grad(), model.disable_adapter():
            off = pair_logps(model, pair_batch(prompts, firsts, seconds, 0, layout), head)
        if layout == "padded":
            plain_on, plain_off = (a, b), off
            base = pair_logps(tiny_causal_lm(40, seed=0), pair_batch(prompts, firsts, seconds, 0))
            assert all(torch.allclose(x.sum, y.sum, atol=1e-4) for x, y in zip(plain_off, base))
            assert not torch.allclose(a.sum, base[0].sum, atol=1e-3)
    for x, y in zip(plain_on, (a, b)):
        assert torch.allclose(x.sum, y.sum, atol=1e-4)
    for x, y in zip(plain_off, off):
        assert torch.allclose(x.sum, y.sum, atol=1e-4)
    assert torch.allclose(grads[0], grads[1], atol=1e-4)
    assert supports_shared_prefix(model)


def test_second_response_does_not_see_the_first():
    model = tiny_causal_lm(40, seed=0)
    head = model.get_output_embeddings()
    a1 = pair_logps(model, pair_batch([[5, 6]], [[7, 8]], [[9, 10]], 0, "shared-prefix"), head)[1]
    a2 = pair_logps(model, pair_batch([[5, 6]], [[11, 12, 13]], [[9, 10]], 0, "shared-prefix"), head)[1]
    assert torch.allclose(a1.sum, a2.sum, atol=1e-5)


def test_shared_prefix_mask_and_positions():
    t = pair_batch([[5, 6]], [[7, 8, 9]], [[10]], 0, "shared-prefix")
    assert t["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10]]
    assert t["position_ids"].tolist() == [[0, 1, 2, 3, 4, 2]]
    assert t["attention_mask"][0, 0, 5].tolist() == [True, True, False, False, False, True]
    # predicted from: the prompt's last position (first tokens of both responses), then the response's own
    assert t["predictors"].tolist() == [1, 2, 3, 1] and t["targets"].tolist() == [7, 8, 9, 10]
    assert t["segments"].tolist() == [0, 0, 0, 1]
    m = additive_mask(t["attention_mask"], torch.float32)
    assert m[0, 0, 5, 0] == 0 and m[0, 0, 5, 2] == torch.finfo(torch.float32).min


class Wrapped(torch.nn.Module):
    """A causal LM that post-processes its logits or ignores custom masks: the probe must refuse it."""

    def __init__(self, inner, capped=False, ignores_mask=False):
        super().__init__()
        self.inner, self.capped, self.ignores_mask = inner, capped, ignores_mask

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()

    def forward(self, **kw):
        if self.ignores_mask:
            kw["attention_mask"] = None
            kw.pop("position_ids", None)
        out = self.inner(**kw)
        if self.capped:
            out.logits = torch.tanh(out.logits)
        return out


def test_supports_shared_prefix_probe():
    model = tiny_causal_lm(40)
    assert supports_shared_prefix(model)
    assert supports_shared_prefix(tiny_causal_lm(40, attn_implementation="eager"))
    assert supports_shared_prefix(tiny_causal_lm(40).to(torch.bfloat16))
    assert not supports_shared_prefix(Wrapped(tiny_causal_lm(40), capped=True))
    assert not supports_shared_prefix(Wrapped(tiny_causal_lm(40), ignores_mask=True))
    model.train()
    supports_shared_prefix(model)
    assert model.training  # the probe runs in eval mode and restores the mode
