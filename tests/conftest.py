"""Shared fixtures: a character-level tokenizer and a tiny Llama saved like any hub checkpoint."""

import json
import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a model hub

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 .,?!+=-"


def char_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for ch in ALPHABET:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


@pytest.fixture(scope="session")
def tokenizer():
    return char_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A tiny Llama + tokenizer in a directory: the local-checkpoint path of `--model`."""
    from frugalign.models import tiny_causal_lm

    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_causal_lm(len(tokenizer), seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def preference_rows(n: int, seed: int = 0) -> list[dict]:
    """A learnable preference: the chosen answer repeats the prompt's letter, the rejected one does not."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.sample("abcdefghij", 2)
        rows.append({"prompt": f"say {a}{a}?", "chosen": f"{a}{a}{a}", "rejected": f"{b}{b}{b}"})
    return rows


@pytest.fixture
def preference_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in preference_rows(48)))
    return path
