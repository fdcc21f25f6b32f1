"""Annotators, the LLM judge against a real HTTP server on loopback: garbage is never a verdict."""

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from frugalign.active.annotators import GoldOracle, HumanQueue, JudgeError, LLMJudge, StoredLabels, parse_verdict
from frugalign.active.ledger import LabelLedger, pair_id
from frugalign.data import UnlabelledPair

PAIR = UnlabelledPair("Which is bigger, 3 or 7?", "7 is bigger.", "3 is bigger.")


def pid(p):
    return pair_id(p.prompt, p.response_a, p.response_b)


def test_parse_verdict():
    assert parse_verdict("B is vague.\nAnswer: A") == 1
    assert parse_verdict("answer: **b**") == -1
    assert parse_verdict("Answer: tie") == 0
    assert parse_verdict("tie.") == 0
    assert parse_verdict("I cannot decide") is None
    assert parse_verdict("Answer: maybe") is None


def test_stored_labels_and_gold_oracle_follow_pair_order():
    stored = StoredLabels([PAIR], [1])
    swapped = UnlabelledPair(PAIR.prompt, PAIR.response_b, PAIR.response_a)
    stored.submit([PAIR, swapped])
    assert stored.collect() == {pid(PAIR): -1}  # same id: the later (swapped) answer
    oracle = GoldOracle(lambda p, r: 1.0 if r.startswith("7") else 0.0, tau=0.0)
    oracle.submit([swapped])
    assert oracle.collect() == {pid(PAIR): -1}
    assert oracle.collect() == {}


class Judge(BaseHTTPRequestHandler):
    script: list = []  # what to do for each request, in order

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        action = Judge.script.pop(0) if Judge.script else "good"
        Judge.seen.append(prompt)
        if action == "429":
            self.send_response(429)
            self.send_header("Retry-After", "0")
            self.end_headers()
            return
        if action == "500":
            self.send_response(500)
            self.end_headers()
            return
        if action == "slow":
            import time

            time.sleep(1.5)
        # a judge that knows 7 > 3, wherever the right answer is shown
        text = "Answer: A" if "[Response A]\n7" in prompt else "Answer: B"
        if body.get("logprobs") and action != "no-logprobs":
            # it knows too, but leans to whatever is shown first: enough to be wrong when 7 is shown second
            right, wrong, lean = 0.6, 0.3, 0.4
            a, b = (right + lean, wrong) if "[Response A]\n7" in prompt else (wrong + lean, right)
            top = [{"token": " A", "logprob": math.log(a)}, {"token": "B", "logprob": math.log(b)},
                   {"token": "The", "logprob": math.log(0.05)}]
            if action == "garbage":
                top = [{"token": "I", "logprob": math.log(0.9)}]
            payload = json.dumps({"choices": [{"message": {"content": "A"}, "logprobs": {"content": [
                {"token": top[0]["token"], "logprob": top[0]["logprob"], "top_logprobs": top}]}}],
                                  "usage": {"prompt_tokens": 10, "completion_tokens": 1}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if action == "garbage":
            text = "I refuse to judge."
        payload = json.dumps({"choices": [{"message": {"content": text}}],
                              "usage": {"prompt_tokens": 10, "completion_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def server():
    Judge.script, Judge.seen = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def wait_for(judge):
    for future in list(judge.futures.values()):
        future.exception(timeout=30)
    return judge.collect()


def test_judge_asks_both_orders_and_labels(server):
    judge = LLMJudge(server, "m", backoff=0.01)
    judge.submit([PAIR])
    assert wait_for(judge) == {pid(PAIR): 1}
    assert len(Judge.seen) == 2 and "[Response A]\n7" in Judge.seen[0] and "[Response A]\n3" in Judge.seen[1]
    assert judge.stats.prompt_tokens == 20 and judge.stats.requests == 2


def test_judge_retries_rate_limits_errors_timeouts_and_garbage(server):
    Judge.script = ["429", "500", "garbage", "slow"]
    judge = LLMJudge(server, "m", backoff=0.01, timeout=0.5, max_retries=5)
    judge.submit([PAIR])
    assert wait_for(judge) == {pid(PAIR): 1}
    s = judge.stats
    assert s.rate_limited == 1 and s.garbage == 1 and s.retries == 4 and s.failures == 0


def test_judge_gives_up_with_a_clear_error_and_no_label(server):
    Judge.script = ["garbage"] * 10
    judge = LLMJudge(server, "m", backoff=0.01, max_retries=2)
    judge.submit([PAIR])
    with pytest.raises(JudgeError, match="failed after 3 attempts: an answer without a verdict") as err:
        wait_for(judge)
    assert err.value.labels == {}
    assert judge.stats.garbage == 3


def test_judge_connection_refused():
    judge = LLMJudge("http://127.0.0.1:9", "m", backoff=0.01, max_retries=1, timeout=1)
    judge.submit([PAIR])
    with pytest.raises(JudgeError, match="URLError"):
        wait_for(judge)


def test_human_queue_round_trip(tmp_path):
    ledger = LabelLedger(tmp_path / "l.sqlite")
    queue = HumanQueue(ledger)
    ledger.ask(PAIR, "human", "run")
    queue.submit([PAIR], priorities=[-0.2])
    assert queue.collect() == {}
    assert ledger.db.execute("SELECT COUNT(*) FROM queue").fetchone()[0] == 1
    ledger.record(UnlabelledPair(PAIR.prompt, PAIR.response_b, PAIR.response_a), -1, "alice")  # the app's write
    assert queue.collect() == {pid(PAIR): 1}
    assert ledger.db.execute("SELECT COUNT(*) FROM queue").fetchone()[0] == 0


def test_close_waits_for_requests_under_way_and_cancels_the_rest(server):
    """Answers already being paid for are kept; questions never sent are not answered by anyone."""
    other = UnlabelledPair("Which is bigger, 2 or 7?", "7 is bigger.", "2 is bigger.")
    Judge.script = ["slow", "good"]  # the first pair's first request takes 1.5 s
    judge = LLMJudge(server, "m", backoff=0.01, concurrency=1)
    judge.submit([PAIR, other])
    judge.close()  # returns once the first pair's two requests are done; the second pair never starts
    assert judge.collect() == {pid(PAIR): 1}
    assert len(Judge.seen) == 2 and judge.futures == {}


def test_judge_without_a_model_asks_the_server_for_its_only_model(vllm_like):
    """vLLM answers 404 to any name but the one it serves: with no model given, the judge uses that one."""
    vllm_like.answer = staticmethod(lambda prompt: "Answer: A" if "[Response A]\n7" in prompt else "Answer: B")
    judge = LLMJudge(vllm_like.url, backoff=0.01)
    judge.submit([PAIR])
    assert wait_for(judge) == {pid(PAIR): 1}
    assert vllm_like.models_seen == [vllm_like.served[0]] * 2 and judge.model == vllm_like.served[0]


def test_judge_error_shows_the_servers_message_and_the_attempts_made(vllm_like):
    """A 404 is not retried: one attempt, said so, with vLLM's own explanation."""
    judge = LLMJudge(vllm_like.url, "judge", backoff=0.01, max_retries=1)
    judge.submit([PAIR])
    with pytest.raises(JudgeError, match=r"failed after 1 attempt: HTTP 404: The model `judge` does not exist\."):
        wait_for(judge)
    assert judge.stats.requests == 1 and judge.stats.failures == 1 and len(judge.stats.errors) == 1


def test_judge_on_a_server_with_several_models_names_them(vllm_like):
    vllm_like.served = ["big", "small"]
    judge = LLMJudge(vllm_like.url, backoff=0.01)
    judge.submit([PAIR])
    with pytest.raises(JudgeError, match=r"serves 2 models \(big, small\); choose one with --judge-model"):
        wait_for(judge)
    assert vllm_like.models_seen == []  # nothing was asked under a guessed name


def test_preference_from_logprobs_weighs_a_against_b():
    from frugalign.active.annotators import preference_from_logprobs

    top = [{"token": " A", "logprob": math.log(0.3)}, {"token": "a", "logprob": math.log(0.1)},
           {"token": "B", "logprob": math.log(0.4)}, {"token": "Both", "logprob": math.log(0.2)}]
    assert preference_from_logprobs(top) == pytest.approx(0.3 / 0.7)  # "a" is not A: it may be the article
    assert preference_from_logprobs(top[:2]) == pytest.approx(1.0)
    assert preference_from_logprobs([{"token": "Sure", "logprob": 0.0}]) is None


def test_logprob_judge_asks_one_token_and_cancels_position_bias(server):
    judge = LLMJudge(server, "m", backoff=0.01, verdict_from="logprobs")
    # shown second, the better answer loses this judge's single question: its lean to A is that strong
    assert judge.preference("q", "3", "7") > 0.5
    # both orders averaged: the lean cancels and the better answer wins
    assert judge.probability(PAIR) == pytest.approx((1.0 / 1.3 + 1 - 0.7 / 1.3) / 2)
    judge.submit([PAIR])
    assert wait_for(judge) == {pid(PAIR): 1}
    assert judge.stats.completion_tokens == 5  # five questions asked, one token each


def test_logprob_judge_on_a_server_without_logprobs_says_so(server):
    Judge.script = ["no-logprobs"]
    judge = LLMJudge(server, "m", backoff=0.01, verdict_from="logprobs")
    with pytest.raises(JudgeError, match="returned no log-probabilities.*--judge-verdict text"):
        judge.preference("q", "7", "3")
    Judge.script = ["garbage"] * 3
    judge = LLMJudge(server, "m", backoff=0.01, max_retries=2, verdict_from="logprobs")
    # neither A nor B among the top tokens: at temperature 0 the same reply would come back, so no retry
    with pytest.raises(JudgeError, match="after 1 attempt: an answer without a verdict"):
        judge.preference("q", "7", "3")
    assert judge.stats.garbage == 1 and judge.stats.requests == 1


def test_human_queue_hands_each_label_over_once_even_after_an_undo(tmp_path):
    ledger = LabelLedger(tmp_path / "l.sqlite")
    ledger.add_annotator("ann")
    queue = HumanQueue(ledger)
    ledger.ask(PAIR, "human", "run")
    queue.submit([PAIR])
    assigned = ledger.assign("ann")
    ledger.submit("ann", assigned["pair_id"], "A" if assigned["a"] == PAIR.response_a else "B")  # a wins
    assert queue.collect() == {pid(PAIR): 1}
    ledger.undo("ann")  # a mis-click, reopened after the run read it ...
    ledger.submit("ann", assigned["pair_id"], "B" if assigned["a"] == PAIR.response_a else "A")  # ... answered again
    assert queue.collect() == {}  # the run keeps what it read and trained on
    assert ledger.label(PAIR) == -1  # the ledger holds the corrected answer
