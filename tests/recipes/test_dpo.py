"""`frugalign dpo` end to end on a tiny model: it learns, every reference mode agrees, bad input is refused."""

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from frugalign.cli import main
from frugalign.config import load_config
from tests.conftest import preference_rows

TRAIN = ["--learning-rate", "2e-3", "--batch-size", "8", "--num-epochs", "3", "--warmup-ratio", "0",
         "--max-prompt-length", "16", "--max-response-length", "8"]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def eval_metrics(out):
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if "eval/loss" in x]


def test_dpo_raises_held_out_reward_accuracy_and_changes_weights(tmp_path, tiny_model_dir):
    train = write(tmp_path / "train.jsonl", preference_rows(64, seed=0))
    held = write(tmp_path / "held.jsonl", preference_rows(32, seed=1))
    out = tmp_path / "run"
    code = main(["dpo", "--model", str(tiny_model_dir), "--dataset", str(train), "--eval-dataset", str(held),
                 "--output-dir", str(out), "--eval-steps", "4", *TRAIN])
    assert code == 0
    evals = eval_metrics(out)
    assert evals[0]["eval/rewards/accuracies"] <= evals[-1]["eval/rewards/accuracies"]
    assert evals[-1]["eval/rewards/accuracies"] >= 0.9
    assert evals[-1]["eval/loss"] < 0.6  # log 2 = 0.693 at the start
    trained = AutoModelForCausalLM.from_pretrained(out / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = [not torch.equal(a, b) for a, b in zip(trained.parameters(), base.parameters())]
    assert all(changed)


def final_weights(out):
    return torch.cat([p.flatten() for p in AutoModelForCausalLM.from_pretrained(out / "model").parameters()])


def test_precomputed_reference_equals_frozen_copy(tmp_path, tiny_model_dir, preference_file):
    common = ["--model", str(tiny_model_dir), "--dataset", str(preference_file), "--max-steps", "3", *TRAIN]
    assert main(["dpo", "--output-dir", str(tmp_path / "copy"), *common]) == 0
    assert main(["dpo", "--output-dir", str(tmp_path / "pre"), "--reference", "precomputed", *common]) == 0
    assert (tmp_path / "pre" / "reference_logps.pt").exists()
    assert torch.allclose(final_weights(tmp_path / "copy"), final_weights(tmp_path / "pre"), atol=1e-5)


def test_zero_weight_rows_are_ignored(tmp_path, tiny_model_dir):
    rows = preference_rows(16)
    weighted = [dict(r, weight=1.0) for r in rows] + [dict(r, chosen=r["rejected"], rejected=r["chosen"], weight=0.0)
                                                       for r in rows]
    common = ["--model", str(tiny_model_dir), "--max-steps", "2", "--batch-size", "32", "--learning-rate", "1e-3"]
    assert main(["dpo", "--dataset", str(write(tmp_path / "w.jsonl", weighted)), "--output-dir", str(tmp_path / "w"),
                 *common]) == 0
    assert main(["dpo", "--dataset", str(write(tmp_path / "p.jsonl", rows)), "--output-dir", str(tmp_path / "p"),
                 *common, "--batch-size", "16"]) == 0
    assert torch.allclose(final_weights(tmp_path / "w"), final_weights(tmp_path / "p"), atol=1e-5)


def test_ipo_and_label_smoothing_train(tmp_path, tiny_model_dir, preference_file):
    for extra in (["--loss", "ipo", "--beta", "0.5"], ["--label-smoothing", "0.1"]):
        out = tmp_path / extra[1]
        assert main(["dpo", "--model", str(tiny_model_dir), "--dataset", str(preference_file), "--output-dir", str(out),
                     "--max-steps", "2", *extra]) == 0
        assert (out / "model" / "config.json").exists()


def test_lora_reference_is_the_adapter_disabled_base(tmp_path, tiny_model_dir, preference_file):
    pytest.importorskip("peft")
    out = tmp_path / "lora"
    assert main(["dpo", "--model", str(tiny_model_dir), "--dataset", str(preference_file), "--output-dir", str(out),
                 "--lora-r", "4", "--lora-target-modules", "q_proj", "v_proj", "--max-steps", "3", *TRAIN[:2]]) == 0
    assert (out / "model" / "adapter_config.json").exists()
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    # at step 1 the adapter is zero-initialised, so policy == reference and the margin is 0
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("row,message", [
    ({"prompt": "a", "chosen": "b"}, "rejected"),
    ({"prompt": "a", "chosen": "", "rejected": "c"}, "chosen"),
    ({"prompt": "a", "chosen": 3, "rejected": "c"}, "chosen"),
    ({"prompt": "a", "chosen": "b", "rejected": "c", "weight": -1}, "weight"),
])
def test_bad_rows_exit_2_naming_file_row_and_field(tmp_path, tiny_model_dir, capsys, row, message):
    rows = preference_rows(3) + [row]
    path = write(tmp_path / "bad.jsonl", rows)
    code = main(["dpo", "--model", str(tiny_model_dir), "--dataset", str(path), "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "bad.jsonl" in err and "row 4" in err and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "o" / "metrics.jsonl").exists()  # nothing was trained


def test_malformed_json_line_is_named(tmp_path, tiny_model_dir, capsys):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(preference_rows(1)[0]) + "\n{not json\n")
    assert main(["dpo", "--model", str(tiny_model_dir), "--dataset", str(path), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "broken.jsonl" in err and "row 2" in err


def test_cli_unknown_option_and_missing_dataset(tmp_path, tiny_model_dir):
    run = lambda *a: subprocess.run([sys.executable, "-m", "frugalign", *a], capture_output=True, text=True)  # noqa: E731
    bad = run("dpo", "--betta", "0.1")
    assert bad.returncode == 2 and "unrecognized arguments: --betta" in bad.stderr
    missing = run("dpo", "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "o"))
    assert missing.returncode == 2 and "no dataset" in missing.stderr and "Traceback" not in missing.stderr


def test_a_run_logged_to_a_file_reads_as_lines(tmp_path, tiny_model_dir, preference_file):
    """Under nohup or CI: no carriage-return bars (transformers' weight loading, rich), plain progress lines."""
    proc = subprocess.run([sys.executable, "-m", "frugalign", "dpo", "--model", str(tiny_model_dir), "--dataset",
                           str(preference_file), "--output-dir", str(tmp_path / "o"), "--max-steps", "2",
                           "--logging-steps", "1"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stderr and "Loading weights" not in proc.stderr
    assert "dpo: 1/2, " in proc.stderr and "dpo: 2/2, " in proc.stderr


@pytest.mark.slow
def test_two_processes_under_accelerate_launch(tmp_path, tiny_model_dir, preference_file):
    """The recipe under `accelerate launch` with 2 CPU processes (gloo) takes the same steps as one
    process with the same global batch: same data order, gradients averaged across processes."""
    config = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "accelerate", "cpu_2proc.yaml")
    common = ["--model", str(tiny_model_dir), "--dataset", str(preference_file), "--eval-fraction", "0.25",
              "--max-steps", "3", "--save-steps", "2", "--learning-rate", "1e-3"]
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, "-m", "frugalign", "dpo",
         "--output-dir", str(tmp_path / "ddp"), "--batch-size", "4", *common],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr
    steps = [json.loads(x)["step"] for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 3]  # three train steps and the final evaluation, logged by one process
    assert (tmp_path / "ddp" / "checkpoints" / "step-00000002" / "frugalign_state.json").exists()
    assert main(["dpo", "--output-dir", str(tmp_path / "single"), "--batch-size", "8", *common]) == 0
    assert torch.allclose(final_weights(tmp_path / "ddp"), final_weights(tmp_path / "single"), atol=1e-5)


def test_tensorboard_tracker_writes_event_files(tmp_path, tiny_model_dir, preference_file):
    pytest.importorskip("tensorboard")
    out = tmp_path / "tb"
    assert main(["dpo", "--model", str(tiny_model_dir), "--dataset", str(preference_file), "--output-dir", str(out),
                 "--max-steps", "2", "--report-to", "tensorboard"]) == 0
    assert list(out.rglob("events.out.tfevents.*"))


@pytest.mark.parametrize("loss", ["simpo", "orpo"])
def test_reference_free_losses_learn_without_building_a_reference(tmp_path, tiny_model_dir, monkeypatch, loss):
    from frugalign.training import dpo

    def no_reference(*args, **kwargs):
        raise AssertionError(f"{loss} must not build a reference model")

    monkeypatch.setattr(dpo, "Reference", no_reference)
    train = write(tmp_path / "train.jsonl", preference_rows(64, seed=0))
    held = write(tmp_path / "held.jsonl", preference_rows(32, seed=1))
    out = tmp_path / loss
    beta = ["--beta", "2.0", "--simpo-gamma", "0.5"] if loss == "simpo" else ["--beta", "0.1"]
    assert main(["dpo", "--loss", loss, "--model", str(tiny_model_dir), "--dataset", str(train), "--eval-dataset",
                 str(held), "--output-dir", str(out), "--eval-steps", "4", *beta, *TRAIN]) == 0
    evals = eval_metrics(out)
    assert evals[-1]["eval/rewards/accuracies"] >= 0.9 and evals[-1]["eval/loss"] < evals[0]["eval/loss"]
    assert not torch.equal(final_weights(out), torch.cat(
        [p.flatten() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters()]))


def test_reference_free_losses_refuse_options_that_need_a_reference(tmp_path, preference_file, capsys):
    assert main(["dpo", "--loss", "simpo", "--reference", "precomputed", "--dataset", str(preference_file),
                 "--output-dir", str(tmp_path / "a")]) == 2
    assert "uses no reference model" in capsys.readouterr().err
    assert main(["dpo", "--loss", "orpo", "--label-smoothing", "0.1", "--dataset", str(preference_file),
                 "--output-dir", str(tmp_path / "b")]) == 2
    assert "label_smoothing applies to the dpo loss only" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # adpo's confidence needs a reference: it offers dpo and ipo only
        main(["adpo", "--loss", "simpo", "--dataset", str(preference_file), "--output-dir", str(tmp_path / "c")])
    assert refused.value.code == 2 and "invalid choice: 'simpo'" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the flex layouts train on a GPU")
@pytest.mark.parametrize("layout", ["flex", "packed"])
def test_flex_layouts_refuse_to_train_on_the_cpu_in_one_line(tmp_path, tiny_model_dir, preference_file, capsys, layout):
    out = tmp_path / "o"
    code = main(["dpo", "--model", str(tiny_model_dir), "--dataset", str(preference_file), "--output-dir", str(out),
                 "--shared-prefix", layout, *TRAIN])
    err = capsys.readouterr().err
    assert code == 2 and "train on a GPU only" in err and "Traceback" not in err
    assert not (out / "metrics.jsonl").exists()  # refused before any step


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto's choice on the CPU")
def test_auto_layout_on_the_cpu_is_the_dense_shared_prefix():
    from frugalign.models import tiny_causal_lm
    from frugalign.options import DPOConfig
    from frugalign.training.dpo import PairScorer

    model = tiny_causal_lm(40)
    assert PairScorer(load_config(DPOConfig, output_dir="unused"), model, 0).layout == "shared-prefix"
    assert model.config._attn_implementation == "sdpa"  # only the flex layouts switch the attention
