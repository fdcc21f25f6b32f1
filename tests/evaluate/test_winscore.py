"""The win score: its rules, its interval, its judges, and the LLM judge against a real local server."""

import json
import subprocess
import sys

import pytest

from frugalign.cli import main
from frugalign.evaluate.winscore import bootstrap_interval, compare, outcome, parse_rating, summarise, win_score


def test_outcome_rules():
    # (model shown first, baseline shown first), both from the model's side: +1 model better
    assert [outcome(*v) for v in [(1, 1), (1, 0), (0, 1)]] == [1, 1, 1]
    assert [outcome(*v) for v in [(-1, -1), (-1, 0), (0, -1)]] == [-1, -1, -1]
    assert [outcome(*v) for v in [(0, 0), (1, -1), (-1, 1)]] == [0, 0, 0]  # a disagreement is a tie


def test_score_and_interval():
    assert win_score([1, 1, 0, -1]) == 75.0
    assert win_score([1] * 5) == 150.0 and win_score([-1] * 5) == -50.0 and win_score([0, 1, -1]) == 50.0
    low, high = bootstrap_interval([1, 1, 0, -1] * 10)
    assert low < 75.0 < high and -50 <= low and high <= 150
    assert bootstrap_interval([1] * 8) == (150.0, 150.0)


def test_parse_rating():
    assert parse_rating("8 6\nAssistant 1 is more detailed.") == 1
    assert parse_rating("3 7") == -1 and parse_rating("7.5 7.5\n") == 0 and parse_rating("9, 4") == 1
    for garbage in ("Assistant 1: 8", "11 3", "", "I prefer the first one.\n8 6"):
        assert parse_rating(garbage) is None


def test_compare_with_a_position_biased_judge_gives_ties():
    """A judge that always prefers whatever it sees first: every prompt is a tie, the score 50."""
    records = compare(["p1", "p2"], ["m1", "m2"], ["b1", "b2"], lambda p, a, b: 1)
    assert [r["outcome"] for r in records] == [0, 0]
    assert summarise(records)["win_score"] == 50.0


def test_winscore_cli_with_the_gold_judge(tmp_path):
    """Correct sums against wrong ones, judged by the arith task's gold reward: every prompt a win."""
    from frugalign.tasks import arith

    prompts = ["12+5=", "3+4=", "20+22="]
    right = [str(eval(p[:-1])) for p in prompts]
    model, baseline = tmp_path / "model.jsonl", tmp_path / "base.jsonl"
    model.write_text("".join(json.dumps({"instruction": p, "output": r}) + "\n" for p, r in zip(prompts, right)))
    baseline.write_text("".join(json.dumps({"instruction": p, "output": "0"}) + "\n" for p in prompts))
    assert arith.gold_reward(prompts[0], right[0]) > arith.gold_reward(prompts[0], "0")
    out = tmp_path / "ws"
    assert main(["eval", "winscore", "--model", str(model), "--baseline", str(baseline), "--judge", "gold",
                 "--task", "arith", "--out", str(out)]) == 0
    result = json.loads((out / "winscore.json").read_text())
    assert result["win_score"] == 150.0 and result["wins"] == 3 and result["failed"] == 0
    assert len((out / "records.jsonl").read_text().splitlines()) == 3 and (out / "winscore.png").stat().st_size > 5000


@pytest.fixture(scope="module")
def local_server(tmp_path_factory):
    """`frugalign serve` on a tiny random model, in its own process, on a free loopback port."""
    from frugalign import models

    tok = models.load_tokenizer(None)
    path = tmp_path_factory.mktemp("served")
    models.tiny_causal_lm(len(tok), seed=0, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id).save_pretrained(path)
    tok.save_pretrained(path)
    proc = subprocess.Popen([sys.executable, "-m", "frugalign", "serve", "--model", str(path), "--port", "0",
                             "--max-tokens", "8"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    assert "serving" in line, line
    yield line.split(" at ")[1].split(" ")[0]  # http://127.0.0.1:PORT/v1
    proc.kill()
    proc.wait()


def answers(tmp_path, name, outputs):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"q{i}?", "output": o, "generator": name}) + "\n"
                            for i, o in enumerate(outputs)))
    return path


def test_llm_judge_against_a_real_server_counts_garbage_and_never_invents_a_verdict(tmp_path, local_server, capsys):
    """A random tiny model answers the rating prompt with noise: each judgement is retried, counted as
    garbage, and the run ends with a clear error rather than a score made of non-answers."""
    model, base = answers(tmp_path, "m", ["yes", "no"]), answers(tmp_path, "b", ["no", "yes"])
    code = main(["eval", "winscore", "--model", str(model), "--baseline", str(base), "--judge", "llm", "--judge-url",
                 local_server, "--max-retries", "1", "--out", str(tmp_path / "ws")])
    err = capsys.readouterr()
    assert code == 2 and "no usable verdict" in err.err
    records = [json.loads(x) for x in (tmp_path / "ws" / "records.jsonl").read_text().splitlines()]
    assert all("failed" in r and "an answer without a verdict" in r["failed"] for r in records)
    assert "garbage" in err.err  # the judge's counts are shown


def test_llm_verdicts_are_cached_so_a_rerun_asks_nothing(tmp_path, local_server, monkeypatch):
    """With the server's replies parsed as ratings whatever they say, the first run asks 2 questions per
    prompt and the second none (the verdicts come from the cache)."""
    from frugalign.evaluate import winscore

    monkeypatch.setattr(winscore, "parse_rating", lambda text: 1)  # a judge that always prefers what it sees first
    model, base = answers(tmp_path, "m", ["a", "b", "c"]), answers(tmp_path, "b", ["x", "y", "z"])
    args = ["eval", "winscore", "--model", str(model), "--baseline", str(base), "--judge", "llm", "--judge-url",
            local_server, "--out", str(tmp_path / "ws")]
    for expected_requests in (6, 0):
        assert main(args) == 0
        result = json.loads((tmp_path / "ws" / "winscore.json").read_text())
        assert result["judge_requests"]["requests"] == expected_requests
        assert result["win_score"] == 50.0 and result["ties"] == 3  # position bias cancels out


def test_readme_winscore_command_against_a_vllm_like_server(tmp_path, vllm_like, monkeypatch):
    """The README's command has no --judge-model: the server's one model is asked, not a made-up name."""
    from frugalign.evaluate import winscore

    monkeypatch.setattr(winscore, "parse_rating", lambda text: 1)  # what the replies say is not the point here
    model, base = answers(tmp_path, "m", ["a", "b"]), answers(tmp_path, "b", ["x", "y"])
    assert main(["eval", "winscore", "--model", str(model), "--baseline", str(base), "--judge", "llm",
                 "--judge-url", vllm_like.url, "--out", str(tmp_path / "ws")]) == 0
    result = json.loads((tmp_path / "ws" / "winscore.json").read_text())
    assert result["judged"] == 2 and result["failed"] == 0
    assert set(vllm_like.models_seen) == {vllm_like.served[0]}
