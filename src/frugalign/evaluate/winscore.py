"""`frugalign eval winscore`: the OPTune paper's win score (its eq. 7; docs/algorithms.md, section 6).

For each prompt a judge compares the model's answer with the baseline's twice, once in each order.
Win: at least one win and no loss; loss: at least one loss and no win; otherwise a tie.
win score = 50 + 100 * (wins - losses) / n, from -50 (always loses) to 150 (always wins); 50 is a draw.
A judgement the judge could not give (garbage, refusals, timeouts after retries) is counted as failed
and the prompt is left out of n: it is never read as a verdict. LLM verdicts are cached on disk, so a
rerun asks nothing again.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import re
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from frugalign.active.annotators import JudgeError, LLMJudge
from frugalign.console import console, summary_table
from frugalign.errors import UserError
from frugalign.evaluate.generate import read_answers
from frugalign.results import write_results

Judge = Callable[[str, str, str], int]  # (prompt, first answer, second answer) -> +1 first better, -1, 0

# The GPT-4 rating prompt of the Vicuna blog post, as the OPTune paper gives it (its Appendix F).
RATING_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answers."
RATING_PROMPT = """[Question]
{prompt}

[The Start of Assistant 1's Answer]
{a}

[The End of Assistant 1's Answer]

[The Start of Assistant 2's Answer]
{b}

[The End of Assistant 2's Answer]

We would like to request your feedback on the performance of two AI assistants in response to the user \
question displayed above. Please rate the helpfulness, relevance, accuracy, and level of details of their \
responses. Each assistant receives an overall score on a scale of 1 to 10, where a higher score indicates better \
overall performance. Please first output a single line containing only two values indicating the scores for \
Assistant 1 and 2, respectively. The two scores are separated by a space. In the subsequent line, please provide \
a comprehensive explanation of your evaluation, avoiding any potential bias and ensuring that the order in which \
the responses were presented does not affect your judgment."""
_TWO_SCORES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[ ,/]\s*(\d+(?:\.\d+)?)\s*$")


def parse_rating(text: str) -> int | None:
    """+1 / -1 / 0 from the first line of the rating reply ("8 6"), or None when it holds no two scores
    in 1..10."""
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    match = _TWO_SCORES.match(first)
    if not match:
        return None
    a, b = float(match.group(1)), float(match.group(2))
    if not (1 <= a <= 10 and 1 <= b <= 10):
        return None
    return int(np.sign(a - b))


def outcome(first: int, second: int) -> int:
    """The model's result from its two judgements (each +1 model better, -1 baseline better, 0 tie)."""
    if max(first, second) == 1 and min(first, second) >= 0:
        return 1
    if min(first, second) == -1 and max(first, second) <= 0:
        return -1
    return 0


def win_score(outcomes: list[int]) -> float:
    n = len(outcomes)
    return 50.0 + 100.0 * (outcomes.count(1) - outcomes.count(-1)) / n


def bootstrap_interval(outcomes: list[int], samples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the win score, resampling prompts."""
    values = np.asarray(outcomes)
    draws = np.random.default_rng(seed).integers(0, len(values), (samples, len(values)))
    scores = 50.0 + 100.0 * (values[draws] == 1).mean(1) - 100.0 * (values[draws] == -1).mean(1)
    return float(np.percentile(scores, 2.5)), float(np.percentile(scores, 97.5))


class VerdictCache:
    """Verdicts on disk (SQLite), keyed by the judge and the exact texts it saw. Thread-safe."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, verdict INTEGER NOT NULL)")
        self.lock = threading.Lock()

    def wrap(self, judge: Judge, judge_id: str) -> Judge:
        def cached(prompt: str, first: str, second: str) -> int:
            key = hashlib.sha256(json.dumps([judge_id, prompt, first, second]).encode()).hexdigest()
            with self.lock:
                hit = self.db.execute("SELECT verdict FROM verdicts WHERE key = ?", (key,)).fetchone()
            if hit is not None:
                return hit[0]
            verdict = judge(prompt, first, second)
            with self.lock, self.db:
                self.db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", (key, verdict))
            return verdict
        return cached


def compare(prompts: list[str], model: list[str], baseline: list[str], judge: Judge, concurrency: int = 4) -> list[dict]:
    """Per-prompt records: both judgements from the model's side, the outcome, or the failure."""
    def one(i: int) -> dict:
        record = {"prompt": prompts[i], "model": model[i], "baseline": baseline[i]}
        try:
            first = judge(prompts[i], model[i], baseline[i])
            second = -judge(prompts[i], baseline[i], model[i])
        except JudgeError as e:
            return {**record, "failed": str(e)}
        return {**record, "model_first": first, "baseline_first": second, "outcome": outcome(first, second)}

    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, range(len(prompts))))


def summarise(records: list[dict]) -> dict:
    outcomes = [r["outcome"] for r in records if "outcome" in r]
    failed = sum("failed" in r for r in records)
    if not outcomes:
        raise UserError(f"the judge gave no usable verdict on any of the {len(records)} prompts ({failed} failed); "
                        "see the judge's counts above")
    low, high = bootstrap_interval(outcomes)
    return {"win_score": win_score(outcomes), "ci95": [low, high], "wins": outcomes.count(1), "ties": outcomes.count(0),
            "losses": outcomes.count(-1), "judged": len(outcomes), "failed": failed}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the model's answers (an `eval generate` file, AlpacaEval format)")
    parser.add_argument("--baseline", required=True, help="the baseline's answers, for the same prompts")
    parser.add_argument("--judge", choices=["llm", "reward-model", "gold"], required=True,
                        help="llm: an OpenAI-compatible endpoint with the rating prompt; reward-model: higher reward "
                             "wins; gold: a task's gold reward")
    parser.add_argument("--judge-url", default=None, help="llm: OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1)")
    parser.add_argument("--judge-model", default=None,
                        help="llm: model name sent to the endpoint (default: the server's model, when it serves one)")
    parser.add_argument("--judge-verdict", choices=["text", "logprobs"], default="text",
                        help="llm: text: the rating prompt, parsed; logprobs: one token, A or B, read from its "
                             "log-probabilities (needs a server that returns them)")
    parser.add_argument("--api-key", default=None, help="llm: bearer token for the endpoint")
    parser.add_argument("--concurrency", type=int, default=4, help="llm: requests in flight")
    parser.add_argument("--timeout", type=float, default=60.0, help="llm: seconds per request")
    parser.add_argument("--max-retries", type=int, default=3, help="llm: retries per judgement (backoff, Retry-After)")
    parser.add_argument("--reward-model", default=None, help="reward-model: checkpoint (default: the embedded MiniLM)")
    parser.add_argument("--task", choices=["arith", "sentiment"], default=None, help="gold: the task whose reward judges")
    parser.add_argument("--out", required=True, help="output directory: records.jsonl, winscore.json, winscore.png")


def make_judge(args: argparse.Namespace, out: Path) -> tuple[Judge, LLMJudge | None]:
    if args.judge == "llm":
        if not args.judge_url:
            raise UserError("--judge llm needs --judge-url (an OpenAI-compatible endpoint)")
        llm = LLMJudge(args.judge_url, args.judge_model, api_key=args.api_key, timeout=args.timeout,
                       max_retries=args.max_retries, concurrency=args.concurrency, template=RATING_PROMPT,
                       system=RATING_SYSTEM, parse=parse_rating, max_tokens=512, verdict_from=args.judge_verdict)
        cache = VerdictCache(out / "verdicts.sqlite")
        # the cache is keyed by the model that answers and the question, so the server is asked for it now
        question = "rating-v1" if args.judge_verdict == "text" else "logprobs-v1"
        return cache.wrap(llm.verdict, f"{llm.url}|{llm.model_name()}|{question}"), llm
    if args.judge == "gold":
        if not args.task:
            raise UserError("--judge gold needs --task (arith or sentiment)")
        from frugalign.tasks import gold_reward

        reward = gold_reward(args.task)
        return (lambda p, a, b: int(np.sign(reward(p, a) - reward(p, b)))), None
    from frugalign import models
    from frugalign.training.reward import score

    rm, tok = models.load_reward_model(args.reward_model), models.load_tokenizer(args.reward_model or models.MINILM)
    def by_reward(prompt: str, first: str, second: str) -> int:
        r = score(rm, tok, [prompt, prompt], [first, second])
        return int(np.sign(r[0] - r[1]))
    return by_reward, None


def run(args: argparse.Namespace) -> int:
    model, baseline = read_answers(args.model), read_answers(args.baseline)
    prompts = [p for p in model if p in baseline]
    if not prompts:
        raise UserError(f"{args.model} and {args.baseline} share no prompt: answer the same prompt set with both")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    judge, llm = make_judge(args, out)
    records = compare(prompts, [model[p] for p in prompts], [baseline[p] for p in prompts], judge, args.concurrency)
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if llm is not None:
        counts = {k: v for k, v in vars(llm.stats).items() if k != "errors"}
        console.print(summary_table("judge requests", counts))
    summary = summarise(records)
    result = {"model": args.model, "baseline": args.baseline, "judge": args.judge, "prompts": len(prompts), **summary,
              "judge_requests": vars(llm.stats) if llm is not None else None}
    write_results(out / "winscore.json", result)
    plot(summary, out / "winscore.png", f"{Path(args.model).stem} vs {Path(args.baseline).stem} ({args.judge} judge)")
    console.print(summary_table("win score", {
        "win score": f"{summary['win_score']:.1f} (95% interval {summary['ci95'][0]:.1f} to {summary['ci95'][1]:.1f})",
        "wins / ties / losses": f"{summary['wins']} / {summary['ties']} / {summary['losses']}",
        "failed judgements": summary["failed"], "results": str(out)}))
    return 0


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2), gridspec_kw={"width_ratios": [3, 1]})
    n = summary["judged"]
    parts = [("wins", summary["wins"], "#2ca02c"), ("ties", summary["ties"], "#bbbbbb"), ("losses", summary["losses"], "#d62728")]
    start = 0.0
    for label, count, color in parts:
        left.barh([0], [count / n], left=[start], color=color, label=f"{label} {count}")
        start += count / n
    left.set_xlim(0, 1)
    left.set_yticks([])
    left.set_xlabel(f"share of {n} judged prompts")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3, frameon=False)
    low, high = summary["ci95"]
    right.errorbar([0], [summary["win_score"]], yerr=[[summary["win_score"] - low], [high - summary["win_score"]]],
                   fmt="o", capsize=6)
    right.axhline(50, color="#888888", linestyle="--", linewidth=1)
    right.set_xticks([])
    right.set_ylabel("win score (50: draw)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
