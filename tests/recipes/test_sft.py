"""`frugalign sft` on a tiny model: the held-out loss falls and the weights change."""

import json

import torch
from transformers import AutoModelForCausalLM

from frugalign.cli import main


def test_sft_lowers_held_out_loss(tmp_path, tiny_model_dir):
    rows = [{"prompt": f"say {c}:", "completion": c * 3} for c in "abcdefghij" * 4]
    path = tmp_path / "demos.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sft"
    assert main(["sft", "--model", str(tiny_model_dir), "--dataset", str(path), "--output-dir", str(out),
                 "--eval-fraction", "0.2", "--eval-steps", "2", "--num-epochs", "4", "--batch-size", "8",
                 "--learning-rate", "3e-3", "--warmup-ratio", "0"]) == 0
    evals = [json.loads(x)["eval/loss"] for x in (out / "metrics.jsonl").read_text().splitlines() if "eval/loss" in x]
    assert evals[-1] < 0.75 * evals[0]
    trained = AutoModelForCausalLM.from_pretrained(out / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.equal(trained.lm_head.weight, base.lm_head.weight)


def test_sft_conversational_rows_need_a_chat_template(tmp_path, tiny_model_dir, capsys):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "yo"}]}) + "\n")
    assert main(["sft", "--model", str(tiny_model_dir), "--dataset", str(path), "--output-dir", str(tmp_path / "o")]) == 2
    assert "chat template" in capsys.readouterr().err
