"""Tokenizers of the gold-oracle tasks, built with `tokenizers` and wrapped as ordinary
`PreTrainedTokenizerFast`s, so they save and load like any hub tokenizer. No special tokens are
added to a prompt; `<eos>` ends a response and `<pad>` pads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

SPECIALS = {"<pad>": 0, "<eos>": 1, "<unk>": 2}


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast  # here: listing the tasks must not load transformers

    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def char_tokenizer(alphabet: str) -> PreTrainedTokenizerFast:
    """One token per character."""
    vocab = dict(SPECIALS)
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return _wrap(tok)


def word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """One token per whitespace-separated word; decoding joins words with single spaces."""
    vocab = dict(SPECIALS)
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return _wrap(tok)
