"""`frugalign eval generate | reward | gold` from the command line, on tiny models and the arith task."""

import json
import subprocess
import sys

import pytest

from frugalign.cli import main
from tests.conftest import preference_rows


def test_generate_writes_alpacaeval_and_mtbench_files(tmp_path, tiny_model_dir):
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"prompt": f"say {c}{c}?"}) + "\n" for c in "abc"))
    out = tmp_path / "answers.jsonl"
    assert main(["eval", "generate", "--model", str(tiny_model_dir), "--prompts", str(tmp_path / "q.jsonl"),
                 "--out", str(out), "--max-new-tokens", "4", "--generator", "tiny"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["instruction"] for r in rows] == ["say aa?", "say bb?", "say cc?"]
    assert all(set(r) == {"instruction", "output", "generator"} and r["generator"] == "tiny" for r in rows)
    # MT-Bench: a question file's first turn in, an answer file out
    (tmp_path / "mt.jsonl").write_text(json.dumps({"question_id": 81, "turns": ["Write a haiku.", "Again."]}) + "\n")
    assert main(["eval", "generate", "--model", str(tiny_model_dir), "--prompts", str(tmp_path / "mt.jsonl"),
                 "--out", str(tmp_path / "mt-answers.jsonl"), "--format", "mtbench", "--max-new-tokens", "4"]) == 0
    row = json.loads((tmp_path / "mt-answers.jsonl").read_text())
    assert set(row) == {"question_id", "model_id", "choices"} and len(row["choices"][0]["turns"]) == 1


def test_generate_names_the_bad_row_before_loading_a_model(tmp_path, capsys):
    (tmp_path / "q.jsonl").write_text(json.dumps({"prompt": "ok?"}) + "\n" + json.dumps({"text": "no prompt"}) + "\n")
    assert main(["eval", "generate", "--model", str(tmp_path / "no-such-model"), "--prompts", str(tmp_path / "q.jsonl"),
                 "--out", str(tmp_path / "a.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "q.jsonl" in err and "row 2" in err and "no prompt column" in err and "Traceback" not in err


def test_prompts_from_a_saved_hub_dataset_with_alpacaeval_columns(tmp_path):
    # the hub code path (datasets' loader) on a local save_to_disk copy: AlpacaEval's `instruction` column, a split
    import datasets

    from frugalign.errors import DataError
    from frugalign.evaluate.generate import load_prompts

    rows = {"instruction": ["Name a colour.", "Count to three.", "Say hi."], "dataset": ["x", "y", "z"]}
    datasets.DatasetDict({"eval": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "alpaca"))
    assert load_prompts(str(tmp_path / "alpaca"), split="eval", limit=2) == ["Name a colour.", "Count to three."]
    rows["instruction"][1] = " "
    datasets.DatasetDict({"eval": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "blank"))
    with pytest.raises(DataError, match="row 2.*instruction|instruction.*row 2"):
        load_prompts(str(tmp_path / "blank"), split="eval")


def test_reward_accuracy_on_held_out_pairs(tmp_path, tiny_model_dir, tokenizer, preference_file):
    import torch
    from transformers import LlamaForSequenceClassification

    from frugalign import models

    torch.manual_seed(0)
    rm = tmp_path / "rm"
    LlamaForSequenceClassification(models.tiny_llama_config(len(tokenizer), num_labels=1,
                                                             pad_token_id=tokenizer.pad_token_id)).save_pretrained(rm)
    tokenizer.save_pretrained(rm)
    out = tmp_path / "acc.json"
    assert main(["eval", "reward", "--reward-model", str(rm), "--dataset", str(preference_file), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["pairs"] == len(preference_rows(48)) and 0.0 <= result["accuracy"] <= 1.0
    low, high = result["accuracy_ci95"]
    assert 0.0 <= low <= result["accuracy"] <= high <= 1.0 and high > low


@pytest.mark.slow
def test_gold_of_the_base_policy_has_no_kl_to_itself(tmp_path):
    from frugalign.tasks import load_task

    task = load_task("arith")
    task.model.save_pretrained(tmp_path / "base")
    task.tokenizer.save_pretrained(tmp_path / "base")
    out = tmp_path / "gold.json"
    assert main(["eval", "gold", "--model", str(tmp_path / "base"), "--task", "arith", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert abs(result["kl"]) < 1e-3 and -1.0 <= result["gold_reward"] <= 1.0
    assert len(result["samples"]) == 2 * len(task.eval_prompts)


@pytest.mark.slow
def test_the_embedded_smollm2_served_as_a_rating_judge(tmp_path):
    """The real model behind the real server: every judgement is either a verdict or a counted failure."""
    proc = subprocess.Popen([sys.executable, "-m", "frugalign", "serve", "--port", "0", "--max-tokens", "12"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        url = line.split(" at ")[1].split(" ")[0]
        prompts = ["What is the capital of France?", "Name a primary colour."]
        for name, outputs in (("good", ["Paris.", "Red."]), ("bad", ["I like turtles.", "Seven."])):
            (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"instruction": p, "output": o}) + "\n"
                                                            for p, o in zip(prompts, outputs)))
        code = main(["eval", "winscore", "--model", str(tmp_path / "good.jsonl"), "--baseline", str(tmp_path / "bad.jsonl"),
                     "--judge", "llm", "--judge-url", url, "--max-retries", "0", "--out", str(tmp_path / "ws")])
    finally:
        proc.kill()
        proc.wait()
    records = [json.loads(x) for x in (tmp_path / "ws" / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(("outcome" in r) != ("failed" in r) for r in records)
    assert code == (0 if any("outcome" in r for r in records) else 2)
