"""`frugalign reward`: a Bradley-Terry reward model learns a preference and scores responses."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, LlamaForSequenceClassification

from frugalign import models
from frugalign.active.annotators import RewardModelJudge
from frugalign.cli import main
from frugalign.data import UnlabelledPair
from frugalign.training.reward import score
from tests.conftest import preference_rows


@pytest.fixture(scope="module")
def tiny_rm_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tiny-rm")
    torch.manual_seed(0)
    config = models.tiny_llama_config(len(tokenizer), num_labels=1, pad_token_id=tokenizer.pad_token_id)
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_reward_model_learns_the_preference_and_scores(tmp_path, tiny_rm_dir, tokenizer):
    train = write(tmp_path / "t.jsonl", preference_rows(320, seed=0))
    held = write(tmp_path / "h.jsonl", preference_rows(32, seed=1))
    out = tmp_path / "rm"
    assert main(["reward", "--model", str(tiny_rm_dir), "--dataset", train, "--eval-dataset", held, "--output-dir",
                 str(out), "--num-epochs", "6", "--batch-size", "32", "--learning-rate", "3e-3", "--warmup-ratio", "0",
                 "--eval-steps", "20"]) == 0
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "eval/accuracy" in x]
    assert evals[-1]["eval/accuracy"] >= 0.9 and evals[-1]["eval/loss"] < evals[0]["eval/loss"]
    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    r = score(model, tokenizer, ["say bb?", "say bb?"], ["bbb", "ddd"])
    assert r[0] > r[1]
    judge = RewardModelJudge(model, tokenizer)
    judge.submit([UnlabelledPair("say cc?", "aaa", "ccc")])
    assert list(judge.collect().values()) == [-1]


def test_margin_and_centering_change_the_loss(tmp_path, tiny_rm_dir):
    rows = preference_rows(16)
    losses = []
    for extra, data in (([], rows), (["--centering", "0.5"], rows), ([], [dict(r, margin=3.0) for r in rows])):
        out = tmp_path / f"run{len(losses)}"
        assert main(["reward", "--model", str(tiny_rm_dir), "--dataset", write(tmp_path / f"d{len(losses)}.jsonl", data),
                     "--output-dir", str(out), "--max-steps", "1", "--batch-size", "16", *extra]) == 0
        losses.append(json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["loss"])
    assert losses[0] != losses[1] and losses[2] > losses[0]  # a margin to beat makes the same scores cost more


def test_summary_is_on_stdout_with_run_means(tmp_path, tiny_rm_dir, capsys):
    data = write(tmp_path / "d.jsonl", preference_rows(16))
    assert main(["reward", "--model", str(tiny_rm_dir), "--dataset", data, "--output-dir", str(tmp_path / "o"),
                 "--max-steps", "2", "--batch-size", "8"]) == 0
    out, err = capsys.readouterr()
    assert "frugalign reward" in out and "frugalign reward" not in err
    assert "loss (mean)" in out and "time per step" in out and "step_seconds" not in out


def test_bad_margin_is_named(tmp_path, tiny_rm_dir, capsys):
    data = write(tmp_path / "m.jsonl", [dict(preference_rows(1)[0], margin="big")])
    assert main(["reward", "--model", str(tiny_rm_dir), "--dataset", data, "--output-dir", str(tmp_path / "o")]) == 2
    assert "m.jsonl: row 1: field 'margin': expected a finite number" in capsys.readouterr().err


@pytest.mark.slow
def test_embedded_minilm_reward_model_trains(tmp_path):
    rows = [{"prompt": "Is the sky blue?", "chosen": "Yes, on a clear day.", "rejected": "Bananas."}] * 4
    out = tmp_path / "minilm"
    assert main(["reward", "--dataset", write(tmp_path / "p.jsonl", rows), "--output-dir", str(out),
                 "--max-steps", "2", "--batch-size", "4"]) == 0
    assert (out / "model" / "model.safetensors").exists()
