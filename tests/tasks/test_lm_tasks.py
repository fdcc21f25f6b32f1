"""The pretrained-model tasks: `smol`'s rules and `review`'s sentiment score without a model; `custom`
end to end on a tiny model with a gold function from a module, and each of its bad inputs; `review`
and `smol` on the embedded SmolLM2 (slow)."""

import argparse
import json
import math
import sys
import threading

import numpy as np
import pytest

from frugalign.cli import main
from frugalign.tasks import review, smol
from frugalign.tasks.lm import is_degenerate

SMOL_PROMPT = ('Write a short text about the moon. Follow these rules:\n- Use at most 15 words.\n'
               '- Include the word "blue".\n- End your answer with an exclamation mark.')


def test_smol_reads_its_rules_back_from_the_prompt_and_scores_the_share_met():
    assert smol.rules_of(SMOL_PROMPT) == [("max_words", "15"), ("include", "blue"), ("ending", "an exclamation mark")]
    assert smol.gold_reward(SMOL_PROMPT, "The moon looks blue tonight!") == 1.0
    assert smol.gold_reward(SMOL_PROMPT, "The moon looks blue tonight.") == pytest.approx(2 / 3)
    long_answer = "The moon is pale and quiet and far away from all of us here tonight, my dear friend."
    assert smol.gold_reward(SMOL_PROMPT, long_answer) == 0.0
    assert smol.gold_reward(SMOL_PROMPT, "  ") == -1.0
    assert smol.gold_reward(SMOL_PROMPT, "blue blue blue blue!") == pytest.approx(0.0)  # all rules met, minus 1


@pytest.mark.parametrize(("kind", "value", "good", "bad"), [
    ("max_words", "3", "one two three", "one two three four"),
    ("min_words", "3", "one two three", "one two"),
    ("include", "blue", "a Blue sky", "a bluer sky"),
    ("exclude", "the", "a sky", "The sky"),
    ("lowercase", "lowercase", "all small here", "Not small"),
    ("first_word", "Today", "today it rains", "it rains today"),
    ("ending", "a question mark", "really?", "really."),
    ("no_commas", "commas", "no commas here", "one, two"),
    ("bullets", "2", "- one\n- two", "- one\n- two\n- three"),
    ("max_sentences", "1", "One sentence.", "One. Two."),
])
def test_each_smol_rule_tells_an_answer_that_meets_it_from_one_that_does_not(kind, value, good, bad):
    assert smol.meets(kind, value, good) and not smol.meets(kind, value, bad)


def test_smol_prompts_are_fixed_distinct_and_free_of_clashing_rules():
    prompts = smol.prompts()
    assert prompts == smol.prompts() and len(set(prompts)) == len(prompts) > 1000
    for prompt in prompts:
        kinds = [k for k, _ in smol.rules_of(prompt)]
        assert 2 <= len(kinds) <= 3
        assert not any(frozenset((a, b)) in smol.CLASHES for a in kinds for b in kinds if a != b)
    train, held = smol.spec(0, quick=False).train, smol.spec(0, quick=False).eval
    assert set(train).isdisjoint(held) and smol.spec(1, quick=False).train != train  # each seed its own split


def test_review_rewards_positive_sentiment_and_refuses_degenerate_text():
    assert review.gold_reward("p", "A wonderful, moving film with brilliant acting.") > 0.5
    assert review.gold_reward("p", "A dull, boring and awful film.") < -0.5
    assert review.gold_reward("p", "") == -1.0
    assert review.gold_reward("p", "great great great great great") == -1.0  # repetition does not pay
    assert is_degenerate("good film good film good film good film") and not is_degenerate("A good film with a fine cast.")


GOLD_MODULE = '''
def length_target(prompt, response):
    """1 when the response has as many characters as the prompt, less the further it is."""
    return -abs(len(response) - len(prompt)) / 10

def raises(prompt, response):
    raise KeyError("no rubric for this prompt")

def not_a_number(prompt, response):
    return "high"

def nan(prompt, response):
    return float("nan")

NOT_CALLABLE = 3
'''


@pytest.fixture
def custom_files(tmp_path, monkeypatch):
    (tmp_path / "my_gold.py").write_text(GOLD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"say {c}{c}?"}) + "\n" for c in "abcdefghijkl"))
    monkeypatch.setenv("FRUGALIGN_CACHE", str(tmp_path / "cache"))
    yield tmp_path, prompts
    sys.modules.pop("my_gold", None)


def test_bench_dpo_on_a_custom_task_with_a_tiny_model(custom_files, tiny_model_dir):
    from frugalign.bench import dpo as dpo_bench

    tmp_path, prompts = custom_files
    out = tmp_path / "custom.json"
    parser = argparse.ArgumentParser()
    dpo_bench.add_arguments(parser)
    args = parser.parse_args(["--task", "custom", "--prompts", str(prompts), "--gold-reward", "my_gold:length_target",
                              "--model", str(tiny_model_dir), "--quick", "--learning-rate", "1e-3", "--out", str(out)])
    assert dpo_bench.run(args) == 0
    result = json.loads(out.read_text())
    assert result["task"] == "custom" and result["config"]["gold_reward"] == "my_gold:length_target"
    base, dpo = result["runs"]
    assert base["method"] == "base" and dpo["method"] == "dpo" and dpo["queries"] > 0 and dpo["kl"] > 0
    assert base["gold_reward"] <= 0  # the function's values, not a built-in task's
    cache = list((tmp_path / "cache" / "tasks").glob("custom-*-seed0-v1/pool.json"))
    assert len(cache) == 1  # sampled once, reused by the next run
    before = cache[0].stat().st_mtime_ns
    assert dpo_bench.run(args) == 0 and cache[0].stat().st_mtime_ns == before


@pytest.mark.parametrize(("gold", "message"), [
    ("my_gold:raises", "raised KeyError: 'no rubric for this prompt'"),
    ("my_gold:not_a_number", "returned 'high'"),
    ("my_gold:nan", "returned nan"),
    ("my_gold:missing", "has no attribute 'missing'"),
    ("my_gold:NOT_CALLABLE", "is a int, not a function"),
    ("no_such_module:f", "does not import: ModuleNotFoundError"),
    ("my_gold", "expected MODULE:FUNCTION"),
])
def test_custom_task_bad_gold_functions_are_one_line_before_any_model_loads(custom_files, capsys, gold, message):
    tmp_path, prompts = custom_files
    # the model does not exist: an error about it would mean the function was checked too late
    code = main(["bench", "dpo", "--task", "custom", "--prompts", str(prompts), "--gold-reward", gold,
                 "--model", str(tmp_path / "no-model"), "--quick", "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and "no-model" not in err
    assert len(err.strip().splitlines()) == 1


def test_custom_task_bad_prompt_files_name_the_file_and_row(custom_files, capsys):
    tmp_path, _ = custom_files
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    no_column = tmp_path / "no_column.jsonl"
    no_column.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"question": "x"}) + "\n")
    blank = tmp_path / "blank.jsonl"
    blank.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"prompt": "  "}) + "\n")
    for path, message in [(empty, "no rows"), (no_column, "row 2: no 'prompt' column"),
                          (blank, "row 2: field 'prompt'")]:
        code = main(["bench", "adpo", "--task", "custom", "--prompts", str(path), "--gold-reward", "my_gold:length_target",
                     "--quick", "--out", str(tmp_path / "x.json")])
        err = capsys.readouterr().err
        assert code == 2 and str(path) in err and message in err, err
    code = main(["bench", "dpo", "--task", "custom", "--gold-reward", "my_gold:length_target", "--quick"])
    assert code == 2 and "needs --prompts FILE and --gold-reward" in capsys.readouterr().err
    code = main(["bench", "dpo", "--task", "arith", "--prompts", str(blank), "--quick"])
    assert code == 2 and "use them with --task custom" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["review", "smol"])
def test_smollm2_task_is_deterministic_cached_and_has_headroom(name, tmp_path):
    """On a reduced size: 8 train and 8 held-out prompts of the task, the embedded SmolLM2 as it is."""
    from frugalign.evaluate.gold import gold_eval
    from frugalign.tasks.lm import LMTaskSpec, build_lm_task

    module = {"review": review, "smol": smol}[name]
    full = module.spec(0, quick=True)
    spec = LMTaskSpec(name, None, full.train[:8], full.eval[:8], full.gold, full.max_new_tokens, full.settings)
    task = build_lm_task(spec, seed=0, cache=tmp_path)
    assert task.train_prompts[0].startswith("<|im_start|>")  # the instruct model reads its chat template
    assert len(task.pair_pool) >= 6 and all(p["response_a"] != p["response_b"] for p in task.pair_pool)
    again = build_lm_task(spec, seed=0, cache=tmp_path)
    assert again.pair_pool == task.pair_pool  # from the cache
    demos = task.demonstrations
    assert len(demos) == 8
    best = [task.gold_reward(d["prompt"], d["completion"]) for d in demos]
    pooled = [np.mean([task.gold_reward(p["prompt"], p["response_a"]), task.gold_reward(p["prompt"], p["response_b"])])
              for p in task.pair_pool]
    assert np.mean(best) >= np.mean(pooled)  # best of four by gold reward
    base = gold_eval(task, task.model, task.eval_prompts, ref_model=again.model, samples_per_prompt=2, progress=False)
    assert base.mean < 0.8  # far from the best reward (1): room for alignment
    assert base.kl == pytest.approx(0.0, abs=1e-3)


class GoldJudge:
    """A judge server that answers from a task's gold reward, in text or as log-probabilities; `wrong`
    flips every answer."""

    def __init__(self, gold, wrong=False):
        import re
        from http.server import BaseHTTPRequestHandler

        parts = re.compile(r"\[Request\]\n(.*)\n\n\[Response A\]\n(.*)\n\n\[Response B\]\n(.*)", re.S)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send(self, body):
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                self.send({"data": [{"id": "gold-judge"}]})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt, a, b = parts.search(body["messages"][-1]["content"]).groups()
                first = (gold(prompt, a) > gold(prompt, b)) != wrong
                if body.get("logprobs"):
                    top = [{"token": "A", "logprob": math.log(0.8 if first else 0.2)},
                           {"token": "B", "logprob": math.log(0.2 if first else 0.8)}]
                    choice = {"message": {"content": top[0]["token"]},
                              "logprobs": {"content": [{"token": "A", "logprob": top[0]["logprob"], "top_logprobs": top}]}}
                    usage = {"prompt_tokens": 50, "completion_tokens": 1}
                else:
                    choice = {"message": {"content": "Because.\nAnswer: " + ("A" if first else "B")}}
                    usage = {"prompt_tokens": 50, "completion_tokens": 5}
                self.send({"choices": [choice], "usage": usage})

        from http.server import ThreadingHTTPServer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("wrong", [False, True])
def test_bench_judge_measures_agreement_with_the_gold_preference(custom_files, tiny_model_dir, wrong):
    from frugalign.bench import judge as judge_bench

    tmp_path, prompts = custom_files
    import my_gold

    server = GoldJudge(my_gold.length_target, wrong=wrong)
    parser = argparse.ArgumentParser()
    judge_bench.add_arguments(parser)
    out = tmp_path / "judge.json"
    try:
        args = parser.parse_args(["--task", "custom", "--prompts", str(prompts), "--gold-reward", "my_gold:length_target",
                                  "--model", str(tiny_model_dir), "--quick", "--judge-url", server.url, "--out", str(out)])
        assert judge_bench.run(args) == 0
    finally:
        server.close()
    summary = json.loads(out.read_text())["summary"]
    for mode in ("text", "logprobs"):
        s = summary[mode]
        assert 3 <= s["pairs"] <= 8 and s["verdicts"] == s["pairs"] and s["failed"] == 0
        assert s["agreement"] == (0.0 if wrong else 1.0)
        assert s["agreement_ci95"][0] - 1e-9 <= s["agreement"] <= s["agreement_ci95"][1] + 1e-9
        assert s["agreement_ci95"][1] - s["agreement_ci95"][0] > 0.2  # 8 pairs decide little
    assert summary["logprobs"]["completion_tokens_per_pair"] == 2 and summary["text"]["completion_tokens_per_pair"] == 10
    assert summary["logprobs"]["brier"] == pytest.approx(0.64 if wrong else 0.04)
    assert out.with_suffix(".png").exists()


def test_bench_generation_times_a_custom_tasks_prompts_on_its_policy(custom_files, tiny_model_dir, capsys):
    from frugalign.bench import generation as generation_bench

    tmp_path, prompts = custom_files
    out = tmp_path / "generation.json"
    parser = argparse.ArgumentParser()
    generation_bench.add_arguments(parser)
    args = parser.parse_args(["--task", "custom", "--prompts", str(prompts), "--gold-reward", "my_gold:length_target",
                              "--model", str(tiny_model_dir), "--quick", "--max-new-tokens", "4", "--out", str(out)])
    assert generation_bench.run(args) == 0
    result = json.loads(out.read_text())
    assert result["task"] == "custom" and result["config"]["prompt_file"] == str(prompts)
    assert result["config"]["prompts"] == 8 and result["config"]["max_new_tokens"] == 4
    (name,) = result["config"]["models"]
    assert name == f"custom/{tiny_model_dir}" and set(result["summary"][f"{name}/hf"]) == {"1", "4"}
    assert all(r["tokens"] > 0 for r in result["runs"])
    # a count where a file is meant, and a task's option without the task: one line, before any model loads
    assert main(["bench", "generation", "--prompts", "many", "--quick", "--out", str(out)]) == 2
    assert "a number of prompts" in capsys.readouterr().err
    assert main(["bench", "generation", "--model", str(tmp_path / "no-model"), "--quick", "--out", str(out)]) == 2
    assert "go with --task" in capsys.readouterr().err
