"""`frugalign plot`: several runs' curves on one figure, and clear errors for what is not a run."""

import json

import pytest

from frugalign.cli import main


def write_run(folder, rows):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_plots_two_runs_with_the_metrics_they_logged(tmp_path, capsys):
    a = write_run(tmp_path / "dpo-a", [{"step": s, "loss": 0.7 - 0.1 * s, "rewards/accuracies": 0.5 + 0.1 * s, "lr": 1e-5}
                                       for s in range(1, 4)])
    b = write_run(tmp_path / "dpo-b", [{"step": 1, "loss": 0.69}, {"step": 2, "eval/gold_reward": 0.3}])
    out = tmp_path / "curves.png"
    assert main(["plot", str(a), str(b / "metrics.jsonl"), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    said = capsys.readouterr().out
    assert "loss, rewards/accuracies, eval/gold_reward of 2 run(s)" in said  # lr is not a curve people plot


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


def optune_result(gold_by_seed: dict[str, list[list[float]]]) -> dict:
    """A bench optune result as the bench writes it: per setting, one run per seed with its curve."""
    runs = []
    for setting, per_seed in gold_by_seed.items():
        selection, rho = setting.split("/")
        for seed, golds in enumerate(per_seed):
            curve = [{"iteration": i, "generations": 100 * (i + 1), "time_s": 10.0 * (i + 1), "gold_reward": g,
                      "kl": 0.1 * i} for i, g in enumerate(golds)]
            runs.append({"method": "online", "seed": seed, "params": {"rho": float(rho), "selection": selection,
                                                                      "loss": "wdpo"},
                         "gold_reward": golds[-1], "kl": curve[-1]["kl"], "curve": curve})
    return {"bench": "optune", "task": "arith", "seeds": [0, 1], "runs": runs}


def test_optune_curves_are_seed_means_and_reach_is_the_first_iteration_at_the_target():
    from frugalign.bench.optune import mean_curves, time_to_reach

    result = optune_result({"optune/0.5": [[0.1, 0.3, 0.5], [0.3, 0.5, 0.7]]})
    (curve,) = mean_curves(result["runs"]).values()
    assert [p["gold_reward"] for p in curve["points"]] == pytest.approx([0.2, 0.4, 0.6])
    assert curve["points"][0]["gold_reward_ci95"] > 0
    assert time_to_reach(result["runs"], 0.35) == 20.0  # the first iteration at or above, not the last
    assert time_to_reach(result["runs"], 0.9) is None


def test_bench_replot_draws_again_from_the_json_alone(tmp_path, capsys):
    result = optune_result({"optune/0.5": [[0.1, 0.3], [0.3, 0.5]], "random/0.5": [[0.1, 0.2], [0.3, 0.3]],
                            "all/1.0": [[0.1, 0.4], [0.3, 0.4]]})
    out = tmp_path / "optune.json"
    out.write_text(json.dumps(result))
    assert main(["bench", "replot", str(out)]) == 0
    png = tmp_path / "optune.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(png) in capsys.readouterr().out


def test_bench_replot_names_the_file_that_is_not_a_bench_result(tmp_path, capsys):
    text = tmp_path / "notes.json"
    text.write_text("not json")
    assert main(["bench", "replot", str(text)]) == 2
    assert "notes.json: not a JSON file" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"bench": "nope"}))
    assert main(["bench", "replot", str(other)]) == 2
    assert "other.json: field `bench` is 'nope'" in capsys.readouterr().err
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"bench": "optune", "task": "arith", "seeds": [0]}))
    assert main(["bench", "replot", str(partial)]) == 2
    assert "partial.json: the optune result lacks what its plot needs (KeyError: 'runs')" in capsys.readouterr().err
    assert not (tmp_path / "partial.png").exists()


def test_a_judge_that_gave_no_verdict_is_drawn_as_such(tmp_path):
    summary = {"text": {"pairs": 4, "agreement": None, "agreement_ci95": [0.0, 1.0], "completion_tokens_per_pair": 300},
               "logprobs": {"pairs": 4, "agreement": 0.5, "agreement_ci95": [0.2, 0.8], "completion_tokens_per_pair": 2}}
    out = tmp_path / "judge.json"
    out.write_text(json.dumps({"bench": "judge", "task": "review", "config": {"judge_model": "m"}, "runs": [],
                               "summary": summary}))
    assert main(["bench", "replot", str(out)]) == 0 and (tmp_path / "judge.png").stat().st_size > 5000
