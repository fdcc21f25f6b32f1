"""Gold-oracle tasks: rewards by hand, the annotator's statistics, deterministic cached construction."""

import time

import numpy as np
import pytest

from frugalign.evaluate.gold import gold_eval
from frugalign.stats import simulate_preference
from frugalign.tasks import arith, load_task, sentiment


def test_arith_gold_reward_cases():
    assert arith.gold_reward("12+30=", "42") == 1.0
    assert arith.gold_reward("12+30=", "44") == pytest.approx(0.4)
    assert arith.gold_reward("12+30=", "99") == 0.0
    assert arith.gold_reward("12+30=", "4=2") == -1.0
    assert arith.gold_reward("12+30=", "") == -1.0


def test_sentiment_gold_reward_cases():
    p = "the plot was dull . the music"
    assert sentiment.gold_reward(p, "was great . i loved the film .") == 1.0
    assert sentiment.gold_reward(p, "was awful .") == -1.0
    assert sentiment.gold_reward(p, "was long .") == 0.0
    assert sentiment.gold_reward(p, "was great great great .") == -1.0  # the grammar cannot produce it
    # repeating a positive sentence does not pay
    assert sentiment.gold_reward(p, "was great . the film was fun . the film was fun .") == pytest.approx(1 / 3)
    assert sentiment.gold_reward(p, "was great . i loved") == 0.0  # unfinished sentence: -1


def test_simulated_annotator():
    rng = np.random.default_rng(0)
    assert simulate_preference(1.0, 0.5, 0.0, rng) == 1
    assert simulate_preference(0.5, 1.0, 0.0, rng) == -1
    assert simulate_preference(0.5, 0.5, 0.0, rng) == 0
    wins = np.mean([simulate_preference(1.0, 0.0, 1.0, rng) == 1 for _ in range(4000)])
    assert wins == pytest.approx(1 / (1 + np.exp(-1.0)), abs=0.03)


@pytest.mark.parametrize("name", ["arith", "sentiment"])
def test_task_is_deterministic_cached_and_has_headroom(name, tmp_path):
    task = load_task(name, seed=0, quick=True, cache_dir=tmp_path)
    assert set(task.train_prompts).isdisjoint(task.eval_prompts)
    assert len(task.pair_pool) > 0.7 * len(task.train_prompts)
    assert all(p["response_a"] != p["response_b"] for p in task.pair_pool)
    demo_rewards = [task.gold_reward(d["prompt"], d["completion"]) for d in task.demonstrations]
    assert np.mean(demo_rewards) > 0.8  # demonstrations are good answers (an opening can force a bad one)
    began = time.perf_counter()
    again = load_task(name, seed=0, quick=True, cache_dir=tmp_path)
    assert time.perf_counter() - began < 5  # from the cache, not pre-trained again
    assert again.pair_pool == task.pair_pool
    base = gold_eval(task, task.model, task.eval_prompts, ref_model=again.model, progress=False)
    assert -0.5 < base.mean < 0.6  # imperfect: room for alignment
    assert base.kl == pytest.approx(0.0, abs=1e-4)  # a model against its own copy
    rows, ties = task.labelled_pool(tau=0.0, seed=0)
    assert len(rows) + ties == len(task.pair_pool)
    for row in rows[:50]:
        assert task.gold_reward(row["prompt"], row["chosen"]) > task.gold_reward(row["prompt"], row["rejected"])
