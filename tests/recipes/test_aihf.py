"""SPIN, RLHF (RLOO) and AIHF's three forms on tiny models: they train, count their costs, resume, and
refuse bad input before any model loads."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from frugalign import losses
from frugalign.cli import main
from frugalign.config import load_config
from frugalign.data import Demonstration, PreferenceExample
from frugalign.models import tiny_causal_lm
from frugalign.options import AIHFConfig, RLHFConfig
from frugalign.training.aihf import train_aihf
from frugalign.training.rlhf import train_rlhf
from tests.conftest import preference_rows


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()]).cpu()


def demos(n=8):
    return [Demonstration(r["prompt"], r["chosen"]) for r in preference_rows(n)]


def prefs(n=8):
    return [PreferenceExample(r["prompt"], r["chosen"], r["rejected"]) for r in preference_rows(n, seed=1)]


def test_rloo_advantage_is_reward_minus_the_other_samples_mean():
    logps = torch.zeros(4, requires_grad=True)
    rewards = torch.tensor([1.0, 0.0, 3.0, 3.0])  # two prompts, k = 2
    losses.rloo_loss(logps, rewards, 2).sum().backward()
    assert logps.grad.tolist() == [-1.0, 1.0, 0.0, 0.0]  # push up the better sample, down the worse; equal: nothing


def test_rlhf_raises_the_reward_it_is_given(tmp_path, tokenizer):
    """Reward: the share of 'a' characters in the response. Parameters change, metrics are reported."""
    policy = tiny_causal_lm(len(tokenizer), seed=0)
    before = flat(policy)
    config = load_config(RLHFConfig, output_dir=str(tmp_path), learning_rate=5e-3, batch_size=4, num_epochs=6, warmup_ratio=0.0,
                         samples_per_prompt=4, max_new_tokens=6, kl_coef=0.01, logging_steps=1, seed=0)

    def share_of_a(prompts, responses):
        return np.array([r.count("a") / max(1, len(r)) for r in responses])

    trained, result = train_rlhf(config, policy, tokenizer, [f"say {c}" for c in "abcdefgh"], share_of_a)
    assert not torch.equal(before, flat(trained))
    metrics = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"reward"' in x]
    assert {"reward", "kl", "entropy", "generations"} <= set(metrics[-1])
    assert metrics[-1]["generations"] == 6 * 8 * 4
    assert np.mean([m["reward"] for m in metrics[-3:]]) > np.mean([m["reward"] for m in metrics[:3]])


@pytest.mark.parametrize("variant", ["dpo", "self-play"])
def test_aihf_dpo_forms_train_on_both_kinds_of_pairs(tmp_path, tokenizer, variant):
    config = load_config(AIHFConfig, output_dir=str(tmp_path), variant=variant, iterations=2, learning_rate=2e-3, batch_size=4,
                         warmup_ratio=0.0, max_new_tokens=4, preference_weight=0.5, seed=0, logging_steps=50)
    policy = tiny_causal_lm(len(tokenizer), seed=0)
    before = flat(policy)
    trained, records = train_aihf(config, policy, tokenizer, demos(), prefs())
    assert not torch.equal(before, flat(trained))
    assert [r["iteration"] for r in records] == [0, 1] and all(r["generated"] == 8 for r in records)
    assert all(r["opponent_pairs"] > 0 for r in records)
    # iteration 1 started from iteration 0's policy, which is saved
    assert not torch.equal(before, flat(type(policy).from_pretrained(tmp_path / "policy-iter0")))


@pytest.mark.parametrize("iterations", [1, 2])
def test_self_play_form_is_the_dpo_form_until_its_second_iteration(tmp_path, tokenizer, iterations):
    """The DPO form scores opponents against the initial policy, self-play against the previous iterate:
    the same model at iteration 0, different ones after (what lets `bench aihf` run only one at 1 iteration)."""
    trained = {}
    for variant in ("dpo", "self-play"):
        config = load_config(AIHFConfig, output_dir=str(tmp_path / variant), variant=variant, iterations=iterations,
                             learning_rate=2e-3, batch_size=4, warmup_ratio=0.0, max_new_tokens=4, seed=0, logging_steps=50)
        trained[variant] = flat(train_aihf(config, tiny_causal_lm(len(tokenizer), seed=0), tokenizer, demos(), prefs())[0])
    assert torch.equal(trained["dpo"], trained["self-play"]) == (iterations == 1)


def test_spin_opponent_is_the_previous_iterate_and_resume_continues(tmp_path, tokenizer):
    config = load_config(AIHFConfig, output_dir=str(tmp_path), variant="self-play", iterations=1, learning_rate=2e-3,
                         batch_size=4, warmup_ratio=0.0, max_new_tokens=4, seed=0, logging_steps=50)
    policy, records = train_aihf(config, tiny_causal_lm(len(tokenizer), seed=0), tokenizer, demos(), [])
    first = flat(policy)
    config.demos.iterations, config.train.resume = 3, True
    resumed, records = train_aihf(config, tiny_causal_lm(len(tokenizer), seed=0), tokenizer, demos(), [])
    assert [r["iteration"] for r in records] == [0, 1, 2]  # iteration 0 was not run again
    iter1 = flat(type(policy).from_pretrained(tmp_path / "policy-iter1"))
    assert not torch.equal(first, iter1) and not torch.equal(iter1, flat(resumed))


def test_aihf_explicit_updates_reward_and_policy(tmp_path, tokenizer):
    from transformers import LlamaForSequenceClassification

    from frugalign import models

    torch.manual_seed(0)
    rm = LlamaForSequenceClassification(models.tiny_llama_config(len(tokenizer), num_labels=1,
                                                                 pad_token_id=tokenizer.pad_token_id))
    rm_before = flat(rm)
    config = load_config(AIHFConfig, output_dir=str(tmp_path), variant="explicit", iterations=1, learning_rate=2e-3, batch_size=4,
                         warmup_ratio=0.0, max_new_tokens=4, samples_per_prompt=2, reward_learning_rate=1e-3, seed=0,
                         logging_steps=50)
    policy = tiny_causal_lm(len(tokenizer), seed=0)
    before = flat(policy)
    trained, records = train_aihf(config, policy, tokenizer, demos(), prefs(), reward_model=rm, reward_tokenizer=tokenizer)
    assert not torch.equal(before, flat(trained)) and not torch.equal(rm_before, flat(rm))
    assert records[0]["generated"] == 8


def test_cli_refuses_missing_demonstrations_and_bad_rows_before_loading(tmp_path, tiny_model_dir, capsys):
    assert main(["aihf", "--dataset", "p.jsonl", "--output-dir", str(tmp_path), "--model", "no/such-model"]) == 2
    assert "--demonstrations" in capsys.readouterr().err
    (tmp_path / "d.jsonl").write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n")
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "a"}) + "\n")
    assert main(["aihf", "--demonstrations", str(tmp_path / "d.jsonl"), "--dataset", str(tmp_path / "p.jsonl"),
                 "--output-dir", str(tmp_path), "--model", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err
    assert "p.jsonl" in err and "row 1" in err and "rejected" in err
    assert main(["rlhf", "--dataset", "x.jsonl", "--output-dir", str(tmp_path)]) == 2
    assert "--reward-model" in capsys.readouterr().err


def test_spin_cli_end_to_end(tmp_path, tiny_model_dir):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"prompt": r["prompt"], "completion": r["chosen"]}) + "\n"
                                              for r in preference_rows(8)))
    out = tmp_path / "spin"
    assert main(["spin", "--model", str(tiny_model_dir), "--demonstrations", str(tmp_path / "d.jsonl"), "--output-dir",
                 str(out), "--iterations", "2", "--max-new-tokens", "4", "--batch-size", "4"]) == 0
    records = json.loads((out / "iterations.json").read_text())
    assert [r["generated"] for r in records] == [8, 8] and (out / "model" / "model.safetensors").exists()


@pytest.mark.slow
def test_aihf_under_two_processes_saves_each_iterate_once(tmp_path, tiny_model_dir):
    """Under `accelerate launch` every process trains the same iterate: each iteration hands the next one the
    model itself (not the multi-process wrapper, which cannot be saved or sampled from), and one process
    writes it."""
    rows = preference_rows(8)
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"prompt": r["prompt"], "completion": r["chosen"]}) + "\n"
                                              for r in rows))
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in preference_rows(8, seed=1)))
    config = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "accelerate", "cpu_2proc.yaml")
    out = tmp_path / "aihf"
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, "-m", "frugalign", "aihf",
         "--model", str(tiny_model_dir), "--demonstrations", str(tmp_path / "d.jsonl"), "--dataset",
         str(tmp_path / "p.jsonl"), "--output-dir", str(out), "--iterations", "2", "--max-new-tokens", "4",
         "--batch-size", "2"],
        capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr
    assert json.loads((out / "aihf_state.json").read_text())["iteration"] == 2
    assert all((out / f"policy-iter{k}" / "model.safetensors").exists() for k in (0, 1))
