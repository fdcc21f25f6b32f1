"""Annotators: whoever answers "which response is better?". One small interface:

    submit(pairs)  ask for labels (may return before any answer exists)
    collect()      {pair_id: label} for answers that arrived since the last call; never blocks
    close()

A label is +1 (response_a wins), -1 (response_b wins) or 0 (tie), relative to the pair as submitted.
The recipe writes every collected label to the ledger before it uses it.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from frugalign.active.ledger import LabelLedger, _canonical, pair_id
from frugalign.data.formats import UnlabelledPair
from frugalign.errors import UserError
from frugalign.stats import simulate_preference


class Annotator(Protocol):
    name: str
    records_in_ledger: bool  # its answers are in the ledger already when collected (people, through the app)

    def submit(self, pairs: list[UnlabelledPair], priorities: list[float] | None = None) -> None: ...

    def collect(self) -> dict[str, int]: ...

    def close(self) -> None: ...


def _id(pair: UnlabelledPair) -> str:
    return pair_id(pair.prompt, pair.response_a, pair.response_b)


class _Synchronous:
    """Annotators that answer at once: `submit` computes, `collect` hands the answers over."""

    name = "synchronous"
    records_in_ledger = False

    def __init__(self):
        self._ready: dict[str, int] = {}

    def answer(self, pairs: list[UnlabelledPair]) -> list[int]:
        raise NotImplementedError

    def submit(self, pairs: list[UnlabelledPair], priorities: list[float] | None = None) -> None:
        for pair, label in zip(pairs, self.answer(pairs)):
            self._ready[_id(pair)] = int(label)

    def collect(self) -> dict[str, int]:
        ready, self._ready = self._ready, {}
        return ready

    def close(self) -> None:
        pass


class StoredLabels(_Synchronous):
    """A labelled dataset whose labels stay hidden until asked (simulation: each ask is a query)."""

    name = "stored-labels"

    def __init__(self, pairs: list[UnlabelledPair], labels: list[int]):
        super().__init__()
        self.truth = {_id(p): (p, label) for p, label in zip(pairs, labels)}

    def answer(self, pairs):
        out = []
        for pair in pairs:
            stored, label = self.truth[_id(pair)]
            out.append(label if stored.response_a == pair.response_a else -label)
        return out


class GoldOracle(_Synchronous):
    """A simulated Bradley-Terry annotator on a gold reward (benchmarks): P(a wins) = sigma((r_a - r_b)/tau).
    Its randomness per pair comes from (seed, pair id), so an answer does not depend on asking order."""

    name = "gold-oracle"

    def __init__(self, reward_fn: Callable[[str, str], float], tau: float = 0.0, seed: int = 0):
        super().__init__()
        self.reward_fn, self.tau, self.seed = reward_fn, tau, seed

    def answer(self, pairs):
        out = []
        for pair in pairs:
            first, _, orientation = _canonical(pair)
            rng = np.random.default_rng([self.seed, int(_id(pair)[:12], 16)])
            r_first = self.reward_fn(pair.prompt, first)
            r_second = self.reward_fn(pair.prompt, pair.response_b if first == pair.response_a else pair.response_a)
            out.append(simulate_preference(r_first, r_second, self.tau, rng) * orientation)
        return out


class RewardModelJudge(_Synchronous):
    """A sequence-classification reward model: the higher score wins; equal scores tie."""

    name = "reward-model"

    def __init__(self, model, tokenizer, batch_size: int = 16, max_length: int = 512):
        super().__init__()
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size, self.max_length = batch_size, max_length

    def answer(self, pairs):
        from frugalign.training.reward import score

        prompts = [p.prompt for p in pairs]
        a = score(self.model, self.tokenizer, prompts, [p.response_a for p in pairs], self.batch_size, self.max_length)
        b = score(self.model, self.tokenizer, prompts, [p.response_b for p in pairs], self.batch_size, self.max_length)
        return [int(np.sign(x - y)) for x, y in zip(a, b)]


class HumanQueue:
    """People label through frugalign's annotation app: `submit` puts pairs on the ledger's queue (the
    most uncertain first), `collect` returns the answers that have reached the ledger since."""

    name = "human"
    records_in_ledger = True

    def __init__(self, ledger: LabelLedger):
        self.ledger = ledger
        self.submitted: dict[str, UnlabelledPair] = {}
        self.since = 0.0

    def submit(self, pairs, priorities=None):
        for k, pair in enumerate(pairs):
            self.submitted[_id(pair)] = pair
            # a smaller |confidence| is more useful to ask: it gets a higher priority
            self.ledger.enqueue(pair, priorities[k] if priorities else 0.0)

    def collect(self) -> dict[str, int]:
        """Each submitted pair's label once: an answer reopened and given again later (the app's undo)
        is not handed over a second time; the run keeps what it read."""
        out = {}
        for pid, _, first, _, label, answered_at in self.ledger.answered_since(self.since):
            self.since = max(self.since, answered_at)
            pair = self.submitted.pop(pid, None)
            if pair is not None:
                out[pid] = label * (1 if pair.response_a == first else -1)
        return out

    def close(self) -> None:
        pass


_PAIR = """

[Request]
{prompt}

[Response A]
{a}

[Response B]
{b}"""
JUDGE_PROMPT = """You are comparing two responses to the same user request. Judge which one is more helpful, \
correct and harmless. Reply with a brief reason, then a final line that is exactly "Answer: A", "Answer: B" or \
"Answer: tie".""" + _PAIR
_ANSWER = re.compile(r"answer\s*:\s*\**\s*(a|b|tie)\b", re.IGNORECASE)

# the question for a verdict read from log-probabilities: one token, A or B, whose probabilities are the answer
LOGPROB_PROMPT = """You are comparing two responses to the same user request. Which one is more helpful, correct \
and harmless? Reply with one letter: A or B.""" + _PAIR
TOP_LOGPROBS = 20  # the most OpenAI's API and vLLM's server give by default


def preference_from_logprobs(top: list[dict]) -> float | None:
    """P(A is better) from the first answer token's top log-probabilities: the probability of the tokens
    that read "A" against those that read "B" (" A" counts; lowercase does not: "a" is also an article);
    None when neither is among them."""
    mass = {"A": 0.0, "B": 0.0}
    for entry in top:
        letter = str(entry.get("token", "")).strip()
        if letter in mass:
            mass[letter] += float(np.exp(entry["logprob"]))
    total = mass["A"] + mass["B"]
    return mass["A"] / total if total > 0 else None


def parse_verdict(text: str) -> int | None:
    """+1 (A), -1 (B), 0 (tie) from the judge's text, or None when it is not an answer: the last
    'Answer: X' line counts; a reply that is only 'A', 'B' or 'tie' counts too."""
    found = _ANSWER.findall(text or "")
    if found:
        choice = found[-1].lower()
    elif (text or "").strip().strip(".").lower() in ("a", "b", "tie"):
        choice = text.strip().strip(".").lower()
    else:
        return None
    return {"a": 1, "b": -1, "tie": 0}[choice]


class JudgeError(UserError):
    """The judge endpoint kept failing; no label was made up."""


def server_message(e: urllib.error.HTTPError) -> str:
    """`HTTP 404: <the server's own message>`: OpenAI puts it in {"error": {"message"}}, vLLM in {"message"};
    any other body is quoted (its start)."""
    try:
        raw = e.read().decode(errors="replace")
    except OSError:
        raw = ""
    try:
        body = json.loads(raw)
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else error or body.get("message")
    except (ValueError, AttributeError):
        message = None
    message = str(message or raw.strip()[:300])
    return f"HTTP {e.code}: {message}" if message else f"HTTP {e.code}"


@dataclass
class JudgeStats:
    requests: int = 0
    retries: int = 0
    failures: int = 0
    garbage: int = 0
    rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    errors: list[str] = field(default_factory=list)


class LLMJudge:
    """An LLM judge behind any OpenAI-compatible /v1/chat/completions endpoint. Each pair is judged in
    both orders, which cancels position bias. Two ways to read a verdict (`verdict_from`):
    - "text": the judge writes a reason and a final answer, parsed (`parse`); a response wins if it wins
      once and does not lose the other time, a disagreement is a tie;
    - "logprobs": the judge is asked for one token, A or B, and the verdict is the probability of A
      against B among the token's top log-probabilities (`preference`), averaged over both orders: one
      generated token per question instead of hundreds, and a preference probability, usable as a
      confidence. It needs a server that returns log-probabilities (OpenAI's API, vLLM's server,
      `frugalign serve`); one that does not is an error that says so.
    Timeouts, refused connections, 5xx, 429 (Retry-After honoured) and unparsable text answers are
    retried with exponential backoff, and counted; when retries run out, `collect` raises JudgeError.
    With no `model`, the server is asked for its models (GET /v1/models) and its one model is used
    (vLLM's server answers 404 to any other name). Requests run in a thread pool of `concurrency`.
    `template` (with {prompt}, {a}, {b}), `system` and `parse` (reply text -> +1 / -1 / 0, or None for no
    verdict) set the question asked in text mode: by default a preference question; the win score uses
    a rating prompt."""

    name = "llm-judge"
    records_in_ledger = False

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None, timeout: float = 30.0,
                 max_retries: int = 4, concurrency: int = 4, backoff: float = 1.0, price_per_1k_tokens: float = 0.0,
                 template: str = JUDGE_PROMPT, system: str | None = None,
                 parse: Callable[[str], int | None] = parse_verdict, max_tokens: int = 256, verdict_from: str = "text"):
        if verdict_from not in ("text", "logprobs"):
            raise UserError(f"verdict_from must be text or logprobs, got {verdict_from!r}")
        self.verdict_from = verdict_from
        base = base_url.rstrip("/")
        base = base if base.endswith("/v1") else base + "/v1"
        self.url, self.models_url = base + "/chat/completions", base + "/models"
        self.model_lock = threading.Lock()
        self.model, self.api_key, self.timeout = model, api_key, timeout
        self.max_retries, self.backoff, self.price = max_retries, backoff, price_per_1k_tokens
        self.template, self.system, self.parse, self.max_tokens = template, system, parse, max_tokens
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency)
        self.futures: dict[str, concurrent.futures.Future] = {}
        self.stats = JudgeStats()

    def _call(self, url: str, body: bytes | None = None) -> dict:
        """The JSON reply of a GET (no body) or POST."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=self.timeout) as r:
            return json.loads(r.read())

    def model_name(self) -> str:
        """The model asked: the one given, or the server's only one (asked once, GET /v1/models)."""
        with self.model_lock:
            if self.model is None:
                try:
                    served = [m["id"] for m in self._call(self.models_url)["data"]]
                except urllib.error.HTTPError as e:
                    raise JudgeError(f"judge {self.url} failed: GET {self.models_url} (to find the model to ask): "
                                     f"{server_message(e)}; name the model with --judge-model") from None
                except (urllib.error.URLError, OSError, KeyError, TypeError, ValueError) as e:
                    raise JudgeError(f"judge {self.url} failed: GET {self.models_url} (to find the model to ask): "
                                     f"{type(e).__name__}: {e}") from None
                if len(served) != 1:
                    raise JudgeError(f"judge {self.url}: the server serves {len(served)} models "
                                     f"({', '.join(served) or 'none'}); choose one with --judge-model")
                self.model = served[0]
            return self.model

    def verdict(self, prompt: str, a: str, b: str) -> int:
        """+1 if the judge prefers `a` (shown first), -1 for `b`, 0 for a tie: one request, retried."""
        if self.verdict_from == "logprobs":
            return int(np.sign(self.preference(prompt, a, b) - 0.5))
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": self.template.format(prompt=prompt, a=a, b=b)})
        return self._ask({"max_tokens": self.max_tokens, "messages": messages},
                         lambda reply: self.parse(reply["choices"][0]["message"]["content"]))

    def preference(self, prompt: str, a: str, b: str) -> float:
        """P(`a`, shown first, is better than `b`) from the log-probabilities of a one-token answer."""
        messages = [{"role": "user", "content": LOGPROB_PROMPT.format(prompt=prompt, a=a, b=b)}]

        def read(reply: dict) -> float | None:
            logprobs = reply["choices"][0].get("logprobs")
            if not logprobs or not logprobs.get("content"):
                raise JudgeError(f"judge {self.url} returned no log-probabilities; this server cannot give "
                                 "verdicts from them: use text verdicts (--judge-verdict text)")
            return preference_from_logprobs(logprobs["content"][0].get("top_logprobs") or [])

        # temperature 0, one token: a reply without A or B would come back the same; it is not asked again
        return self._ask({"max_tokens": 1, "logprobs": True, "top_logprobs": TOP_LOGPROBS, "messages": messages}, read,
                         retry_no_verdict=False)

    def _ask(self, request: dict, read: Callable[[dict], float | int | None], retry_no_verdict: bool = True):
        """`read` of the server's reply to `request` (model and temperature 0 added), retried while the
        server fails or (`retry_no_verdict`) the reply holds no verdict."""
        try:
            model = self.model_name()
        except JudgeError as e:
            self._failed(str(e))
            raise
        body = json.dumps({"model": model, "temperature": 0.0, **request}).encode()
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats.retries += 1
            self.stats.requests += 1
            wait = self.backoff * 2 ** attempt
            try:
                reply = self._call(self.url, body)
                usage = reply.get("usage") or {}
                self.stats.prompt_tokens += int(usage.get("prompt_tokens", 0))
                self.stats.completion_tokens += int(usage.get("completion_tokens", 0))
                self.stats.cost = self.price * (self.stats.prompt_tokens + self.stats.completion_tokens) / 1000
                verdict = read(reply)
                if verdict is not None:
                    return verdict
                self.stats.garbage += 1
                last = "an answer without a verdict"
                if not retry_no_verdict:
                    break
            except JudgeError as e:
                self._failed(str(e))
                raise
            except urllib.error.HTTPError as e:
                last = server_message(e)
                if e.code == 429:
                    self.stats.rate_limited += 1
                    wait = float(e.headers.get("Retry-After") or wait)
                elif e.code < 500:
                    break  # a client error will not fix itself
            except (urllib.error.URLError, TimeoutError, OSError, KeyError, IndexError, ValueError) as e:
                last = f"{type(e).__name__}: {e}"
            if attempt < self.max_retries:
                time.sleep(wait)
        attempts = attempt + 1  # fewer than max_retries + 1 when a client error stopped the retries
        message = f"judge {self.url} failed after {attempts} attempt{'s' * (attempts > 1)}: {last}"
        self._failed(message)
        raise JudgeError(message)

    def _failed(self, message: str) -> None:
        self.stats.failures += 1
        if message not in self.stats.errors:  # the distinct reasons, for the run's summary
            self.stats.errors.append(message)

    def label(self, pair: UnlabelledPair) -> int:
        """The pair's label from both orders (see the class's docstring)."""
        if self.verdict_from == "logprobs":
            return int(np.sign(self.probability(pair) - 0.5))
        forward = self.verdict(pair.prompt, pair.response_a, pair.response_b)
        backward = -self.verdict(pair.prompt, pair.response_b, pair.response_a)
        return int(np.sign(forward + backward))

    def probability(self, pair: UnlabelledPair) -> float:
        """P(response_a is better), from log-probabilities, averaged over both orders (position bias cancels)."""
        forward = self.preference(pair.prompt, pair.response_a, pair.response_b)
        backward = self.preference(pair.prompt, pair.response_b, pair.response_a)
        return (forward + 1.0 - backward) / 2

    def submit(self, pairs, priorities=None):
        for pair in pairs:
            self.futures[_id(pair)] = self.pool.submit(self.label, pair)

    def collect(self) -> dict[str, int]:
        out, error = {}, None
        for pid, future in list(self.futures.items()):
            if not future.done():
                continue
            del self.futures[pid]
            if future.cancelled():  # never started (close): the pair stays asked, unanswered, in the ledger
                continue
            try:
                out[pid] = future.result()
            except JudgeError as e:
                error = e
        if error is not None:
            # the answers that did arrive are handed over first, through the exception
            error.labels = out
            raise error
        return out

    def close(self) -> None:
        """Waits for the requests already under way (their answers are paid for), cancels the rest; a
        `collect` afterwards returns what arrived."""
        self.pool.shutdown(wait=True, cancel_futures=True)
