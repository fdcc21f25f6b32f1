"""Run folders: a fresh one per run by default, another run's folder refused unless --overwrite or
--resume, the config and command line kept in each, unusable folders refused in one line."""

import json

import pytest
import yaml

from frugalign.cli import main
from tests.conftest import preference_rows


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_default_folder_is_per_command_and_keeps_config_and_command(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = write(tmp_path / "p.jsonl", preference_rows(8))
    argv = ["dpo", "--model", str(tiny_model_dir), "--dataset", str(data), "--max-steps", "1", "--batch-size", "8"]
    assert main(argv) == 0
    assert main(argv) == 0  # a second run never lands in the first one's folder
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(r.name.startswith("dpo-") for r in runs)
    for run in runs:
        assert (run / "model" / "config.json").exists()
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["output_dir"] == str(run.relative_to(tmp_path)) and config["max_steps"] == 1
        assert (run / "command.txt").read_text().startswith("frugalign dpo --model ")


@pytest.mark.parametrize("marker", ["config.yaml", "metrics.jsonl", "model"])
def test_a_folder_holding_another_run_is_refused_before_anything_loads(tmp_path, capsys, marker):
    out = tmp_path / "run"
    out.mkdir()
    (out / marker).mkdir() if marker == "model" else (out / marker).write_text("earlier run\n")
    (out / "metrics.jsonl").write_text("{}\n")  # config.yaml is not alone: that run produced something
    # no such model and no such dataset: the refusal comes first
    code = main(["reward", "--model", str(tmp_path / "none"), "--dataset", "none.jsonl", "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "holds another run: pass --overwrite" in err and "Traceback" not in err
    assert (out / "metrics.jsonl").read_text() == "{}\n" and not (out / "command.txt").exists()


def test_overwrite_clears_the_earlier_run_but_keeps_a_ledger(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    (out / "checkpoints" / "step-00000100").mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"step": 100}\n')
    (out / "labels.sqlite").write_text("paid labels")
    data = write(tmp_path / "p.jsonl", preference_rows(8))
    argv = ["dpo", "--model", str(tiny_model_dir), "--dataset", str(data), "--max-steps", "1", "--batch-size", "8",
            "--output-dir", str(out)]
    assert main(argv + ["--resume", "--overwrite"]) == 2
    assert main(argv + ["--overwrite"]) == 0
    assert not (out / "checkpoints" / "step-00000100").exists()
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    assert (out / "labels.sqlite").read_text() == "paid labels"


def test_a_folder_where_a_run_stopped_before_training_is_reused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("{}\n")
    (out / "command.txt").write_text("frugalign dpo\n")
    assert main(["dpo", "--dataset", str(tmp_path / "missing.jsonl"), "--output-dir", str(out)]) == 2
    assert "missing.jsonl: file not found" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["file", "under-file", "too-long"])
def test_unusable_output_dir_is_one_line(tmp_path, capsys, where):
    (tmp_path / "f").write_text("x")
    out = {"file": tmp_path / "f", "under-file": tmp_path / "f" / "run", "too-long": tmp_path / ("x" * 300)}[where]
    code = main(["sft", "--dataset", "none.jsonl", "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("frugalign: error: --output-dir ") and err.count("\n") == 1


def test_resume_without_a_folder_is_refused(capsys):
    assert main(["dpo", "--dataset", "none.jsonl", "--resume"]) == 2
    assert "--resume needs --output-dir" in capsys.readouterr().err



def test_a_ledger_password_stays_out_of_the_run_folder(tmp_path, preference_file):
    from frugalign.cli import main

    out = tmp_path / "run"
    url = "postgresql://team:hunter22@127.0.0.1:9/labels"
    assert main(["adpo", "--dataset", str(preference_file), "--ledger", url, "--output-dir", str(out)]) == 2
    for name in ("config.yaml", "command.txt"):
        text = (out / name).read_text()
        assert "hunter22" not in text and "postgresql://team:***@127.0.0.1:9/labels" in text
