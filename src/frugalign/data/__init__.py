"""Datasets in TRL's formats: reading, validation with row-precise errors, tokenization."""

from frugalign.data.formats import (
    Demonstration,
    PreferenceExample,
    UnlabelledPair,
    demonstrations,
    preference_examples,
    unlabelled_pairs,
)
from frugalign.data.loading import load_rows
from frugalign.data.tokenize import (
    TruncationReport,
    tokenize_demonstrations,
    tokenize_preferences,
    tokenize_unlabelled,
)

__all__ = [
    "Demonstration", "PreferenceExample", "UnlabelledPair", "TruncationReport", "demonstrations", "load_rows",
    "preference_examples", "tokenize_demonstrations", "tokenize_preferences", "tokenize_unlabelled",
    "unlabelled_pairs",
]
