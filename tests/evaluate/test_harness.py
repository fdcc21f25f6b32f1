"""`frugalign eval lm-eval` on a tiny model with a small multiple-choice task of our own (no download)."""

import json

import pytest

from frugalign.cli import main

pytest.importorskip("lm_eval", reason="the optional lm-eval extra (installed by make test)")


def local_task(tmp_path):
    rows = [{"question": f"Which colour is the sky on a clear day, {i}?", "choices": ["blue", "green", "red"], "answer": 0}
            for i in range(6)]
    data = tmp_path / "colours.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "colours.yaml").write_text(f"""task: frugalign_colours
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    return tasks


def test_lm_eval_runs_a_local_task_on_a_tiny_model(tmp_path, tiny_model_dir):
    out = tmp_path / "lm-eval.json"
    assert main(["eval", "lm-eval", "--model", str(tiny_model_dir), "--tasks", "frugalign_colours", "--include-path",
                 str(local_task(tmp_path)), "--batch-size", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    acc = result["results"]["frugalign_colours"]["acc,none"]
    assert 0.0 <= acc <= 1.0 and "acc_stderr,none" in result["results"]["frugalign_colours"]


def test_unknown_task_is_a_clear_error(tmp_path, tiny_model_dir, capsys):
    assert main(["eval", "lm-eval", "--model", str(tiny_model_dir), "--tasks", "no_such_task_xyz"]) == 2
    assert "unknown lm-eval task(s): no_such_task_xyz" in capsys.readouterr().err
