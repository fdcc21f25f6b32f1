"""APL's acquisition rule without a model: entropy picks the candidates, certainty picks among them."""

import pytest

from frugalign.active.acquisition import apl_acquire, prompt_entropies


def test_the_entropy_of_a_prompt_is_minus_the_mean_per_token_log_prob_of_its_distinct_responses():
    entropies = prompt_entropies([("p", "x", -1.0), ("p", "y", -3.0), ("p", "x", -1.0), ("q", "z", -0.5)])
    assert entropies == {"p": pytest.approx(2.0), "q": pytest.approx(0.5)}  # "x" of two pairs counts once


def test_candidates_are_the_highest_entropy_pairs():
    # certainty alone would take "calm-sure" (|m| 9); it is not among the 2 highest-entropy candidates
    ids = ["calm-sure", "unsure-a", "unsure-b", "unsure-c"]
    entropy = [0.1, 3.0, 2.0, 1.0]
    margin = [9.0, 0.5, -0.2, 0.1]
    assert apl_acquire(ids, entropy, margin, taken=set(), k=1, oversample=2) == ["unsure-a"]


def test_among_the_candidates_the_most_certain_pairs_are_bought_whatever_the_sign():
    # the 4 highest-entropy of 5 are candidates; of those the two largest |m| are bought, most certain first
    ids = ["a", "b", "c", "d", "low-entropy"]
    entropy = [3.0, 2.9, 2.8, 2.7, 0.0]
    margin = [0.1, -4.0, 2.0, 0.3, 10.0]
    assert apl_acquire(ids, entropy, margin, taken=set(), k=2, oversample=2) == ["b", "c"]


def test_taken_pairs_are_never_bought_and_duplicates_count_once():
    ids = ["a", "a", "b", "c"]
    assert apl_acquire(ids, [2.0, 2.0, 1.0, 1.5], [3.0, -3.0, 1.0, 2.0], taken={"c"}, k=3, oversample=1) == ["a", "b"]
    assert apl_acquire(ids, [2.0, 2.0, 1.0, 1.5], [3.0, -3.0, 1.0, 2.0], taken={"a", "b", "c"}, k=3, oversample=1) == []
    assert apl_acquire(ids, [2.0, 2.0, 1.0, 1.5], [3.0, -3.0, 1.0, 2.0], taken=set(), k=0, oversample=2) == []
