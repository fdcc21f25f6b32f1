"""`frugalign kto` end to end on a tiny model: it learns from unpaired labels, the LoRA reference is the base,
bad rows are refused before any model loads."""

import json
import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from frugalign.cli import main
from frugalign.recipes.kto import mismatched, per_row_means
from tests.conftest import preference_rows

TRAIN = ["--learning-rate", "2e-3", "--batch-size", "8", "--num-epochs", "3", "--warmup-ratio", "0",
         "--max-prompt-length", "16", "--max-response-length", "8"]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def unpaired_rows(n: int, seed: int = 0) -> list[dict]:
    """The pairs of `preference_rows` as unpaired rows, shuffled, so no batch holds a pair side by side."""
    rows = [{"prompt": r["prompt"], "completion": c, "label": label} for r in preference_rows(n, seed)
            for c, label in ((r["chosen"], True), (r["rejected"], False))]
    random.Random(seed).shuffle(rows)
    return rows


def metrics(out) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_kto_raises_desirable_log_probs_against_undesirable_ones_and_changes_weights(tmp_path, tiny_model_dir):
    train = write(tmp_path / "train.jsonl", unpaired_rows(32, seed=0))
    held = write(tmp_path / "held.jsonl", unpaired_rows(16, seed=1))
    out = tmp_path / "run"
    assert main(["kto", "--model", str(tiny_model_dir), "--dataset", str(train), "--eval-dataset", str(held),
                 "--output-dir", str(out), "--eval-steps", "4", "--beta", "0.5", *TRAIN]) == 0
    lines = metrics(out)
    evals = [x for x in lines if "eval/loss" in x]
    # the reference is the initial policy, so the margin starts at 0: a positive one means the held-out desirable
    # completions' log-probs rose against the undesirable ones'
    assert 0 < evals[0]["eval/rewards/margins"] < evals[-1]["eval/rewards/margins"]
    assert evals[-1]["eval/rewards/chosen"] > 0 > evals[-1]["eval/rewards/rejected"]
    assert evals[-1]["eval/loss"] < 0.45  # 0.5 per row at the start (r = z0 = 0)
    assert all(x["kl"] >= 0 for x in lines if "kl" in x)
    assert {"rewards/chosen_sum", "count/chosen", "logps/rejected_sum"} <= lines[0].keys()
    trained = AutoModelForCausalLM.from_pretrained(out / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert all(not torch.equal(a, b) for a, b in zip(trained.parameters(), base.parameters()))


def test_preference_pairs_are_split_into_a_desirable_and_an_undesirable_row(tmp_path, tiny_model_dir, capsys):
    pairs = write(tmp_path / "pairs.jsonl", preference_rows(4))
    assert main(["kto", "--model", str(tiny_model_dir), "--dataset", str(pairs), "--output-dir", str(tmp_path / "o"),
                 "--max-steps", "1", "--batch-size", "4"]) == 0
    summary = capsys.readouterr().out
    assert "desirable rows" in summary and "undesirable rows" in summary
    first = metrics(tmp_path / "o")[0]
    assert first["count/chosen"] + first["count/rejected"] == 4


def test_lora_reference_is_the_adapter_disabled_base(tmp_path, tiny_model_dir):
    pytest.importorskip("peft")
    out = tmp_path / "lora"
    data = write(tmp_path / "u.jsonl", unpaired_rows(8))
    assert main(["kto", "--model", str(tiny_model_dir), "--dataset", str(data), "--output-dir", str(out),
                 "--lora-r", "4", "--max-steps", "2", *TRAIN[:4]]) == 0
    assert (out / "model" / "adapter_config.json").exists()
    first = metrics(out)[0]
    # at step 1 the adapter is zero-initialised: policy == reference, every log-ratio and the KL estimate are 0
    assert first["kl"] == pytest.approx(0.0, abs=1e-6)
    assert first["rewards/chosen_sum"] == pytest.approx(0.0, abs=1e-6)
    assert first["rewards/rejected_sum"] == pytest.approx(0.0, abs=1e-6)


def test_the_kl_estimate_pairs_each_prompt_with_the_next_rows_completion():
    rows = [{"prompt_ids": [p], "completion_ids": [c], "desirable": True} for p, c in ((1, 10), (2, 20), (3, 30))]
    assert [(r["prompt_ids"], r["completion_ids"]) for r in mismatched(rows)] == [([1], [20]), ([2], [30]), ([3], [10])]


def test_per_row_means_are_ratios_of_totals_and_skip_an_absent_class():
    sums = {"rewards/chosen_sum": 3.0, "logps/chosen_sum": -9.0, "count/chosen": 3.0,
            "rewards/rejected_sum": 0.0, "logps/rejected_sum": 0.0, "count/rejected": 0.0}
    assert per_row_means(sums) == {"rewards/chosen": 1.0, "logps/chosen": -3.0}
    sums.update({"rewards/rejected_sum": -2.0, "logps/rejected_sum": -8.0, "count/rejected": 2.0})
    assert per_row_means(sums)["rewards/margins"] == pytest.approx(2.0)


@pytest.mark.parametrize("row,field,message", [
    ({"prompt": "a", "completion": "b", "label": "yes"}, "label", "expected true or false, got 'yes'"),
    ({"prompt": "a", "completion": "b", "label": 1}, "label", "expected true or false, got 1"),
    ({"prompt": "a", "completion": "b", "label": None}, "label", "expected true or false, got None"),
    ({"prompt": "a", "completion": "b"}, "label", "missing column(s) label"),
    ({"prompt": "a", "label": True}, "completion", "missing column(s) completion"),
    ({"prompt": "a", "completion": " ", "label": True}, "completion", "is an empty string"),
    ({"prompt": "", "completion": "b", "label": False}, "prompt", "is an empty string"),
])
def test_bad_rows_exit_2_naming_file_row_and_field(tmp_path, capsys, monkeypatch, row, field, message):
    from frugalign import models

    def no_model(*args, **kwargs):
        raise AssertionError("a bad row must be refused before any model loads")

    monkeypatch.setattr(models, "load_causal_lm", no_model)
    path = write(tmp_path / "bad.jsonl", unpaired_rows(2) + [row])
    assert main(["kto", "--dataset", str(path), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "row 5" in err and field in err and message in err
    assert "Traceback" not in err


def test_batch_size_one_is_refused(tmp_path, capsys):
    path = write(tmp_path / "u.jsonl", unpaired_rows(2))
    assert main(["kto", "--dataset", str(path), "--batch-size", "1", "--output-dir", str(tmp_path / "o")]) == 2
    assert "kto needs batch_size >= 2" in capsys.readouterr().err


def test_a_single_training_row_is_refused(tmp_path, tiny_model_dir, capsys):
    path = write(tmp_path / "one.jsonl", unpaired_rows(1)[:1])  # no other row's completion for the KL estimate
    assert main(["kto", "--dataset", str(path), "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "o")]) == 2
    assert "needs at least 2 training rows, got 1" in capsys.readouterr().err
