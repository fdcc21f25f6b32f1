"""`frugalign plot`: several runs' curves on one figure, and clear errors for what is not a run."""

import json

from frugalign.cli import main


def write_run(folder, rows):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_plots_two_runs_with_the_metrics_they_logged(tmp_path, capsys):
    a = write_run(tmp_path / "dpo-a", [{"step": s, "loss": 0.7 - 0.1 * s, "rewards/accuracy": 0.5 + 0.1 * s, "lr": 1e-5}
                                       for s in range(1, 4)])
    b = write_run(tmp_path / "dpo-b", [{"step": 1, "loss": 0.69}, {"step": 2, "eval/gold_reward": 0.3}])
    out = tmp_path / "curves.png"
    assert main(["plot", str(a), str(b / "metrics.jsonl"), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    said = capsys.readouterr().out
    assert "loss, rewards/accuracy, eval/gold_reward of 2 run(s)" in said  # lr is not a curve people plot


def test_what_is_not_a_run_is_named_in_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "no metrics.jsonl there" in capsys.readouterr().err
    bad = write_run(tmp_path / "bad", [{"step": 1, "loss": 0.7}])
    with (bad / "metrics.jsonl").open("a") as f:
        f.write("{not json\n")
    assert main(["plot", str(bad)]) == 2
    assert "bad/metrics.jsonl, line 2: not JSON" in capsys.readouterr().err
    assert main(["plot", str(bad.parent / "ok"), "--metrics", "loss"]) == 2  # a missing run, before plotting
    good = write_run(tmp_path / "good", [{"step": 1, "loss": 0.7}])
    assert main(["plot", str(good), "--metrics", "kl"]) == 2
    assert "--metrics kl: not logged by these runs (they logged: loss)" in capsys.readouterr().err
