"""Datasets in TRL's formats: reading, validation with row-precise errors, tokenization."""

from frugalign.data.formats import (
    Demonstration,
    LabelledCompletion,
    PreferenceExample,
    UnlabelledPair,
    demonstrations,
    labelled_completions,
    preference_examples,
    unlabelled_pairs,
)
from frugalign.data.loading import load_rows
from frugalign.data.tokenize import (
    TruncationReport,
    tokenize_demonstrations,
    tokenize_labelled,
    tokenize_preferences,
    tokenize_unlabelled,
)

__all__ = [
    "Demonstration", "LabelledCompletion", "PreferenceExample", "UnlabelledPair", "TruncationReport", "demonstrations",
    "labelled_completions", "load_rows", "preference_examples", "tokenize_demonstrations", "tokenize_labelled",
    "tokenize_preferences", "tokenize_unlabelled", "unlabelled_pairs",
]
