"""Model loading: local checkpoints, clear errors, the embedded defaults (slow: real weights)."""

import json

import pytest
import torch

from frugalign import models
from frugalign.errors import UserError


def test_tiny_model_is_seeded(tokenizer):
    a, b = models.tiny_causal_lm(len(tokenizer), seed=3), models.tiny_causal_lm(len(tokenizer), seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_local_checkpoint_round_trip(tiny_model_dir):
    model = models.load_causal_lm(str(tiny_model_dir))
    tok = models.load_tokenizer(str(tiny_model_dir))
    assert tok.pad_token == "<pad>" and tok.padding_side == "right"
    assert model(torch.tensor([tok("abc")["input_ids"]])).logits.shape[-1] == len(tok)


def test_missing_checkpoint_and_unknown_hub_id_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no usable checkpoint at this path"):
        models.load_causal_lm(str(tmp_path / "nothing-here"))
    with pytest.raises(UserError, match="hub is unreachable"):
        models.load_tokenizer("nobody/no-such-model-frugalign")


@pytest.mark.slow
def test_embedded_smollm2_converts_to_a_trainable_checkpoint():
    path = models.embedded_smollm2_dir()
    config = json.loads((path / "config.json").read_text())
    assert config.get("quantization_config") is None
    model, tok = models.load_causal_lm(None), models.load_tokenizer(None)
    assert tok.chat_template and sum(p.numel() for p in model.parameters()) > 100e6
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])
    # one training step changes the weights: the quantisation marker is gone
    before = model.lm_head.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    model(**ids, labels=ids["input_ids"]).loss.backward()
    opt.step()
    assert not torch.equal(before, model.lm_head.weight)


@pytest.mark.slow
def test_embedded_minilm_is_a_one_output_reward_model():
    model = models.load_reward_model()
    tok = models.load_tokenizer(models.MINILM)
    scores = model(**tok(["a fine answer", "a bad one"], return_tensors="pt", padding=True)).logits
    assert scores.shape == (2, 1) and torch.isfinite(scores).all()
