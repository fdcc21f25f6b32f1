"""HF generation: left padding does not change answers; samples are seeded; stops at EOS."""

import torch

from frugalign.generation import generate
from frugalign.models import tiny_causal_lm


def test_batched_greedy_equals_one_at_a_time(tokenizer):
    model = tiny_causal_lm(len(tokenizer), seed=1)
    prompts = ["a", "hello there", "xyz 12"]
    batched = generate(model, tokenizer, prompts, max_new_tokens=6, temperature=0.0, progress=False)
    single = [generate(model, tokenizer, [p], max_new_tokens=6, temperature=0.0, progress=False).texts[0] for p in prompts]
    assert batched.texts == single
    assert batched.num_tokens == sum(len(ids[0]) for ids in batched.token_ids)


def test_sampling_shape_seed_and_eos(tokenizer):
    model = tiny_causal_lm(len(tokenizer), seed=2)
    a = generate(model, tokenizer, ["ab", "cd"], num_samples=3, max_new_tokens=5, seed=7, progress=False)
    b = generate(model, tokenizer, ["ab", "cd"], num_samples=3, max_new_tokens=5, seed=7, progress=False)
    assert [len(t) for t in a.texts] == [3, 3] and a.texts == b.texts
    # a model that always says EOS stops at once
    head = torch.nn.Linear(model.config.hidden_size, len(tokenizer), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[tokenizer.eos_token_id] = 10.0
    model.lm_head = head
    out = generate(model, tokenizer, ["ab"], max_new_tokens=5, temperature=0.0, progress=False)
    assert out.token_ids == [[[tokenizer.eos_token_id]]] and out.texts == [[""]]
