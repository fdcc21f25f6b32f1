"""Online DPO with OPTune on the arith task: selection, wDPO, per-phase costs, and resumption."""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from frugalign.config import load_config
from frugalign.errors import UserError
from frugalign.recipes import online
from frugalign.tasks import load_task


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return load_task("arith", seed=0, quick=True, cache_dir=tmp_path_factory.mktemp("tasks"))


def config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), iterations=2, rho=0.5, selection="optune", learning_rate=5e-4,
                batch_size=16, max_new_tokens=5, samples_per_prompt=2, logging_steps=50)
    return load_config(online.OnlineConfig, **{**base, **kw})


def counting_scorer(task, calls):
    def score(prompts, responses):
        calls.append(len(prompts))
        return task.gold_rewards(prompts, responses)
    return score


def test_optune_regenerates_the_lowest_reward_prompts(tmp_path, task):
    calls = []
    prompts = task.train_prompts[:40]
    _, records = online.run_online(config(tmp_path), load_task("arith", 0, True, task_cache(task)).model,
                                   task.tokenizer, prompts, counting_scorer(task, calls))
    assert calls == [80, 40]  # iteration 0: every prompt; then ceil(0.5 * 40) = 20 prompts x 2 samples
    assert [r["generated"] for r in records] == [80, 40]
    assert set(records[0]["time_s"]) == {"generation", "scoring", "training"}
    assert records[1]["share_bottom_half"] is not None
    pool = online.PromptPool.load(tmp_path / "pool.json")
    assert all(c >= r for c, r in zip(pool.chosen_reward, pool.rejected_reward))


def task_cache(task):
    from pathlib import Path

    return Path(task.info["cache"]).parent


def test_select_prompts_rules():
    pool = online.PromptPool(["a", "b", "c", "d"], chosen_reward=[0.9, 0.1, 0.5, -1.0])
    rng = __import__("random").Random(0)
    cfg = load_config(online.OnlineConfig, rho=0.5)
    assert online.select_prompts(pool, 0, cfg, rng) == [0, 1, 2, 3]
    assert online.select_prompts(pool, 1, cfg, rng) == [1, 3]
    cfg.online.selection = "random"
    assert len(online.select_prompts(pool, 1, cfg, rng)) == 2


def test_gap_selection_regenerates_the_nearest_ties():
    pool = online.PromptPool(["a", "b", "c", "d"], chosen_reward=[0.9, 0.1, 0.5, -1.0],
                             rejected_reward=[0.0, 0.05, -0.5, -1.2])  # gaps 0.9, 0.05, 1.0, 0.2
    cfg = load_config(online.OnlineConfig, rho=0.5, selection="gap")
    assert online.select_prompts(pool, 1, cfg, __import__("random").Random(0)) == [1, 3]


def test_stale_selection_regenerates_the_oldest_pairs_lowest_reward_first():
    pool = online.PromptPool(["a", "b", "c", "d"], chosen_reward=[0.9, 0.1, 0.5, -1.0], sampled_at=[0, 1, 0, 1])
    cfg = load_config(online.OnlineConfig, rho=0.5, selection="stale")
    assert online.select_prompts(pool, 3, cfg, __import__("random").Random(0)) == [0, 2]
    cfg.online.rho = 0.75  # the two oldest, then the lower reward of the two newer ones
    assert online.select_prompts(pool, 3, cfg, __import__("random").Random(0)) == [0, 2, 3]


def test_mixed_selection_takes_the_lowest_rewards_and_a_random_share():
    rewards = [float(x) for x in range(100)]
    pool = online.PromptPool([str(i) for i in range(100)], chosen_reward=rewards)
    cfg = load_config(online.OnlineConfig, rho=0.2, selection="mixed", random_share=0.25)
    picked = online.select_prompts(pool, 1, cfg, __import__("random").Random(0))
    assert len(picked) == 20 and set(range(15)) <= set(picked)  # 15 lowest, 5 drawn from the other 85
    assert len(set(picked) - set(range(15))) == 5
    cfg.online.random_share = 0.0
    assert online.select_prompts(pool, 1, cfg, __import__("random").Random(0)) == list(range(20))


def test_the_pool_records_which_iteration_sampled_each_pair(tmp_path, task):
    cfg = config(tmp_path, iterations=2, rho=0.5, selection="stale")
    online.run_online(cfg, task.model, task.tokenizer, task.train_prompts[:8], task.gold_rewards)
    pool = online.PromptPool.load(tmp_path / "pool.json")
    assert sorted(pool.sampled_at) == [0, 0, 0, 0, 1, 1, 1, 1]


def test_nan_rewards_are_refused(tmp_path, task):
    with pytest.raises(UserError, match="refusing to train"):
        online.run_online(config(tmp_path, iterations=1), task.model, task.tokenizer, task.train_prompts[:8],
                          lambda p, r: np.full(len(p), np.nan))


def test_empty_responses_are_counted_and_a_pool_of_ties_trains_nothing(tmp_path, task):
    import torch

    policy = load_task("arith", 0, True, task_cache(task)).model
    with torch.no_grad():  # only EOS can follow: every response is empty
        policy.lm_head.weight.zero_()
    policy.lm_head.bias = torch.nn.Parameter(torch.full((len(task.tokenizer),), -1e4))
    with torch.no_grad():
        policy.lm_head.bias[task.tokenizer.eos_token_id] = 0.0
    before = [p.detach().clone() for p in policy.parameters()]
    trained, records = online.run_online(config(tmp_path, iterations=1), policy, task.tokenizer, task.train_prompts[:8],
                                         task.gold_rewards)
    assert records[0]["empty_responses"] == 16 == records[0]["generated"]
    assert all(torch.equal(a, b) for a, b in zip(before, trained.parameters()))  # (x, x) pairs are ties


def test_a_prompt_longer_than_the_context_is_refused_before_anything_is_generated(tmp_path, task):
    prompts = [task.train_prompts[0], "1+2=" * 130]  # 520 tokens; the context is 512
    calls = []
    with pytest.raises(UserError, match="prompt 2 has 520 tokens"):
        online.run_online(config(tmp_path), task.model, task.tokenizer, prompts, counting_scorer(task, calls))
    assert calls == [] and not list(tmp_path.glob("samples-iter*.jsonl"))


def test_wdpo_weights_pairs_by_reward_gap(tmp_path, task, monkeypatch):
    seen = []
    original = online.train_dpo

    def spy(cfg, policy, tokenizer, rows, **kw):
        seen.extend(r["weight"] for r in rows)
        return original(cfg, policy, tokenizer, rows, **kw)

    monkeypatch.setattr(online, "train_dpo", spy)
    online.run_online(config(tmp_path, iterations=1, loss="wdpo", beta2=2.0), load_task("arith", 0, True, task_cache(task)).model,
                      task.tokenizer, task.train_prompts[:24], task.gold_rewards)
    assert seen and all(0.5 < w < 1.0 for w in seen) and len(set(seen)) > 1


def test_resume_in_the_training_phase_generates_nothing_twice(tmp_path, task, monkeypatch):
    calls = []
    original = online.train_iteration

    def crash_at_iteration_1(cfg, policy, tokenizer, pool, t, regenerated):
        if t == 1:
            raise KeyboardInterrupt
        return original(cfg, policy, tokenizer, pool, t, regenerated)

    monkeypatch.setattr(online, "train_iteration", crash_at_iteration_1)
    with pytest.raises(KeyboardInterrupt):
        online.run_online(config(tmp_path), load_task("arith", 0, True, task_cache(task)).model, task.tokenizer,
                          task.train_prompts[:20], counting_scorer(task, calls))
    assert calls == [40, 20]
    state = json.loads((tmp_path / "online_state.json").read_text())
    assert (state["iteration"], state["phase"]) == (1, "train")
    monkeypatch.setattr(online, "train_iteration", original)
    _, records = online.run_online(config(tmp_path, resume=True), load_task("arith", 0, True, task_cache(task)).model,
                                   task.tokenizer, task.train_prompts[:20], counting_scorer(task, calls))
    assert calls == [40, 20]  # the resumed run scored (and generated) nothing again
    assert [r["iteration"] for r in records] == [0, 1] and records[1]["generated"] == 20


def test_train_pairs_regenerated_trains_only_this_iterations_pairs_also_after_resume(tmp_path, task, monkeypatch):
    trained: list[set[str]] = []
    original_tokenize, original_iteration = online.tokenize_preferences, online.train_iteration

    def spy(examples, *args):
        trained.append({ex.prompt for ex in examples})
        return original_tokenize(examples, *args)

    def crash_at_iteration_1(cfg, policy, tokenizer, pool, t, regenerated):
        if t == 1:
            raise KeyboardInterrupt
        return original_iteration(cfg, policy, tokenizer, pool, t, regenerated)

    monkeypatch.setattr(online, "tokenize_preferences", spy)
    monkeypatch.setattr(online, "train_iteration", crash_at_iteration_1)
    prompts = task.train_prompts[:20]
    with pytest.raises(KeyboardInterrupt):
        online.run_online(config(tmp_path, train_pairs="regenerated"), load_task("arith", 0, True, task_cache(task)).model,
                          task.tokenizer, prompts, task.gold_rewards)
    monkeypatch.setattr(online, "train_iteration", original_iteration)
    online.run_online(config(tmp_path, train_pairs="regenerated", resume=True),
                      load_task("arith", 0, True, task_cache(task)).model, task.tokenizer, prompts, task.gold_rewards)
    regenerated = {prompts[json.loads(line)["index"]]
                   for line in (tmp_path / "samples-iter1.jsonl").read_text().splitlines() if "texts" in line}
    assert len(trained) == 2 and len(regenerated) == 10
    assert 0 < len(trained[1]) and trained[1] <= regenerated  # the resumed iteration 1 trained on its new pairs only
    assert len(trained[0]) > len(trained[1])


def test_cli_needs_a_reward_model(tmp_path, tiny_model_dir, capsys):
    from frugalign.cli import main

    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "say aa?"}) + "\n")
    assert main(["online", "--model", str(tiny_model_dir), "--dataset", str(tmp_path / "p.jsonl"),
                 "--output-dir", str(tmp_path / "o")]) == 2
    assert "--reward-model" in capsys.readouterr().err


def test_several_processes_are_refused_before_any_model_loads(tmp_path, capsys, monkeypatch):
    from frugalign.cli import main

    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "say aa?"}) + "\n")
    monkeypatch.setenv("WORLD_SIZE", "2")  # as `accelerate launch --num_processes 2` sets it
    assert main(["online", "--model", "no/such-model", "--dataset", str(tmp_path / "p.jsonl"), "--reward-model",
                 "no/such-reward-model", "--output-dir", str(tmp_path / "o")]) == 2
    assert "runs in one process" in capsys.readouterr().err


def tiny_reward_model(path, tokenizer):
    import torch
    from transformers import LlamaForSequenceClassification

    from frugalign import models

    torch.manual_seed(0)
    LlamaForSequenceClassification(models.tiny_llama_config(len(tokenizer), num_labels=1,
                                                             pad_token_id=tokenizer.pad_token_id)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_cli_runs_end_to_end_with_a_reward_model(tmp_path, tiny_model_dir, tokenizer, capsys):
    from frugalign.cli import main

    rm = tiny_reward_model(tmp_path / "rm", tokenizer)
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": f"say {c}{c}?"}) + "\n" for c in "abcdefgh"))
    out = tmp_path / "online"
    assert main(["online", "--model", str(tiny_model_dir), "--dataset", str(tmp_path / "p.jsonl"), "--reward-model",
                 str(rm), "--output-dir", str(out), "--iterations", "2", "--rho", "0.5", "--loss", "wdpo",
                 "--max-new-tokens", "4", "--batch-size", "4"]) == 0
    records = json.loads((out / "iterations.json").read_text())
    assert [r["generated"] for r in records] == [16, 8]
    assert (out / "model" / "model.safetensors").exists()
    # the last iterate is saved once, as model/; no resumable checkpoint is kept by default
    assert (out / "policy-iter0").is_dir() and not (out / "policy-iter1").exists()
    assert not list(out.glob("train-iter*/checkpoints"))
    summary = capsys.readouterr().out
    assert "frugalign online" in summary and re.search(r"responses generated\s*│\s*24 ", summary)


def test_resume_in_the_scoring_phase_scores_each_batch_once(tmp_path, task, monkeypatch):
    calls = []
    scorer = counting_scorer(task, calls)

    def fails_on_the_third_batch(prompts, responses):
        if len(calls) == 2:
            raise KeyboardInterrupt
        return scorer(prompts, responses)

    prompts = task.train_prompts[:20]
    with pytest.raises(KeyboardInterrupt):
        online.run_online(config(tmp_path, generation_batch_size=8), load_task("arith", 0, True, task_cache(task)).model,
                          task.tokenizer, prompts, fails_on_the_third_batch)
    assert calls == [16, 16]  # two batches of 8 prompts scored (2 samples each), the third failed
    _, records = online.run_online(config(tmp_path, generation_batch_size=8, resume=True),
                                   load_task("arith", 0, True, task_cache(task)).model, task.tokenizer, prompts, scorer)
    assert calls[:3] == [16, 16, 8]  # the resumed run scored only the last 4 prompts of iteration 0
    assert records[0]["generated"] == 40 and records[0]["generated_after_resume"] == 0


SIGKILL_AFTER_SIX_SAMPLED = """
import os, signal, sys
from frugalign.recipes import online
append = online.append_journal
def append_then_die(path, entries):
    append(path, entries)
    if path.name == "samples-iter0.jsonl" and sum('"texts"' in x for x in path.read_text().splitlines()) >= 6:
        os.kill(os.getpid(), signal.SIGKILL)
online.append_journal = append_then_die
from frugalign.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_kill_9_in_the_generation_phase_then_resume_generates_nothing_twice(tmp_path, tiny_model_dir, tokenizer):
    rm = tiny_reward_model(tmp_path / "rm", tokenizer)
    prompts = [f"say {a}{b}?" for a in "abcdefgh" for b in "abcd"]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    out = tmp_path / "online"
    cmd = [sys.executable, "-m", "frugalign", "online", "--model", str(tiny_model_dir), "--dataset", str(tmp_path / "p.jsonl"),
           "--reward-model", str(rm), "--output-dir", str(out), "--iterations", "2", "--rho", "0.5",
           "--generation-batch-size", "2", "--max-new-tokens", "48", "--batch-size", "8"]
    # the process kills itself (SIGKILL) once iteration 0's journal holds 6 prompts' samples: the same point on any
    # machine, where a kill sent by a polling test landed wherever the load put it
    killed = subprocess.run([sys.executable, "-c", SIGKILL_AFTER_SIX_SAMPLED, *cmd[3:]], capture_output=True, text=True,
                            env=dict(os.environ, COLUMNS="200"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    journal = out / "samples-iter0.jsonl"
    generated = [json.loads(x)["index"] for x in journal.read_text().splitlines() if "texts" in x]
    assert 6 <= len(generated) < len(prompts), "the kill must land inside the generation phase"
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    entries = [json.loads(x) for x in journal.read_text().splitlines()]
    by_prompt = sorted(e["index"] for e in entries if "texts" in e)
    assert by_prompt == list(range(len(prompts)))  # every prompt generated exactly once across both processes
    assert sorted(e["index"] for e in entries if "scores" in e) == list(range(len(prompts)))
    records = json.loads((out / "iterations.json").read_text())
    assert records[0]["generated"] == 2 * len(prompts)
    assert records[0]["generated_after_resume"] == 2 * (len(prompts) - len(generated))
    assert records[1]["generated"] == 2 * len(prompts) // 2


def test_string_prompts_follow_the_chat_template_rule(tmp_path):
    from tests.conftest import char_tokenizer

    tok = char_tokenizer()
    tok.chat_template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    data = tmp_path / "prompts.jsonl"
    data.write_text(json.dumps({"prompt": "hi"}) + "\n" + json.dumps({"prompt": "[yo]>"}) + "\n")
    config = load_config(online.OnlineConfig, dataset=str(data), output_dir=str(tmp_path / "run"))
    assert online.load_prompts(config, tok) == ["[hi]>", "[yo]>"]  # the second was rendered already
    config.chat.chat_template = "off"
    assert online.load_prompts(config, tok) == ["hi", "[yo]>"]
