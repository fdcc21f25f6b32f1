"""`frugalign bench judge`: how often an LLM judge agrees with a task's gold reward, and what its verdicts
cost. The judge behind `--judge-url` (any OpenAI-compatible server: vLLM's, `frugalign serve`, a hosted
API) labels pairs of the task's pool in both orders, once per verdict mode:
- `text`: a reason and "Answer: A|B|tie", parsed (the default of `adpo --annotator llm-judge`);
- `logprobs`: one token, the probability of A against B among its top log-probabilities.
Gold: the noiseless gold preference; pairs the gold reward ties are left out. Reported per mode:
agreement on the pairs given a verdict (Wilson 95% interval), the share given one, failures, tokens
and seconds per pair; for `logprobs` also the Brier score of its probability and the agreement on the
half of the pairs it is surest of (is the probability usable as a confidence?)."""

from __future__ import annotations

import argparse
import time

import numpy as np

from frugalign.bench.common import add_task_arguments, bench_task
from frugalign.console import console, progress_bar, progress_line, summary_table
from frugalign.data import UnlabelledPair
from frugalign.results import machine_info, write_results
from frugalign.stats import wilson_interval

MODES = ("text", "logprobs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_arguments(parser, default="review", default_seeds="0: one pool", resumable=False)
    parser.add_argument("--judge-url", required=True, help="OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1)")
    parser.add_argument("--judge-model", default=None, help="model name (default: the server's, when it serves one)")
    parser.add_argument("--verdicts", nargs="+", choices=MODES, default=list(MODES), help="verdict modes to measure")
    parser.add_argument("--pairs", type=int, default=None, help="pairs per seed, gold ties left out (default 64; quick 8)")
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--out", default="bench-judge.json", help="result JSON (a PNG is written beside it)")


def gold_pairs(task, n: int) -> list[tuple[UnlabelledPair, int]]:
    """The first `n` pairs of the pool that the gold reward does not tie, with the gold label."""
    out = []
    for row in task.pair_pool:
        gap = task.gold_reward(row["prompt"], row["response_a"]) - task.gold_reward(row["prompt"], row["response_b"])
        if gap != 0:
            out.append((UnlabelledPair(row["prompt"], row["response_a"], row["response_b"]), int(np.sign(gap))))
        if len(out) == n:
            break
    return out


def judge_pairs(judge, pairs: list[tuple[UnlabelledPair, int]], mode: str, concurrency: int) -> list[dict]:
    """One record per pair: gold, the judge's label (None: it gave none), its probability (logprobs)."""
    from concurrent.futures import ThreadPoolExecutor

    from frugalign.active.annotators import JudgeError

    def one(item):
        pair, gold = item
        try:
            if mode == "logprobs":
                probability = judge.probability(pair)
                return {"gold": gold, "label": int(np.sign(probability - 0.5)), "probability": probability}
            return {"gold": gold, "label": judge.label(pair), "probability": None}
        except JudgeError as e:
            return {"gold": gold, "label": None, "probability": None, "error": str(e)[:300]}

    records, began = [], time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool, progress_bar() as bar:
        task = bar.add_task(f"judge ({mode})", total=len(pairs))
        for record in pool.map(one, pairs):
            records.append(record)
            bar.advance(task)
            progress_line(f"judge ({mode})", len(records), len(pairs), time.perf_counter() - began)
    return records


def summarise(records: list[dict], stats, seconds: float) -> dict:
    given = [r for r in records if r["label"] not in (None, 0)]
    agree = sum(r["label"] == r["gold"] for r in given)
    low, high = wilson_interval(agree, len(given))
    out = {"pairs": len(records), "verdicts": len(given), "ties": sum(r["label"] == 0 for r in records),
           "failed": sum(r["label"] is None for r in records),
           "agreement": agree / len(given) if given else None, "agreement_ci95": [low, high],
           "requests": stats.requests, "prompt_tokens_per_pair": stats.prompt_tokens / max(1, len(records)),
           "completion_tokens_per_pair": stats.completion_tokens / max(1, len(records)),
           "seconds_per_pair": seconds / max(1, len(records))}
    scored = [r for r in records if r["probability"] is not None]
    if scored:
        out["brier"] = float(np.mean([(r["probability"] - (r["gold"] > 0)) ** 2 for r in scored]))
        surest = sorted(scored, key=lambda r: -abs(r["probability"] - 0.5))[: max(1, len(scored) // 2)]
        sure = [r for r in surest if r["label"] != 0]
        out["agreement_surest_half"] = (sum(r["label"] == r["gold"] for r in sure) / len(sure)) if sure else None
    return out


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in MODES if m in result["summary"]]
    s = result["summary"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for i, mode in enumerate(modes):
        value, (low, high) = s[mode]["agreement"], s[mode]["agreement_ci95"]
        if value is None:  # no verdict at all: nothing to draw, say so
            left.text(i, 0.05, f"no verdict\n(0 of {s[mode]['pairs']})", ha="center")
            continue
        left.bar(i, value, yerr=[[value - low], [high - value]], capsize=4, color=["#1f77b4", "#ff7f0e"][i % 2])
    left.set_xticks(range(len(modes)), modes)
    left.set_xlim(-0.6, len(modes) - 0.4)
    left.axhline(0.5, color="grey", ls=":", lw=1, label="chance")
    left.set_ylim(0, 1)
    left.set_ylabel("agreement with the gold preference")
    left.set_title(f"{result['task']}: {s[modes[0]]['pairs']} pairs (Wilson 95%)")
    left.legend()
    tokens = [s[m]["completion_tokens_per_pair"] for m in modes]
    right.bar(modes, tokens, color=["#1f77b4", "#ff7f0e"][: len(modes)])
    right.set_ylabel("generated tokens per pair (both orders)")
    right.set_title(f"judge: {result['config']['judge_model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from frugalign.active.annotators import LLMJudge

    seeds = args.seeds or [0]  # a judge's agreement: one pool is enough unless asked for more
    n = args.pairs or (8 if args.quick else 64)
    began = time.perf_counter()
    pairs = [item for seed in seeds for item in gold_pairs(bench_task(args, seed), n)]
    runs, summary, model = [], {}, args.judge_model
    for mode in args.verdicts:
        judge = LLMJudge(args.judge_url, args.judge_model, timeout=args.timeout, concurrency=1, verdict_from=mode)
        model = judge.model_name()  # asked now, so that a bad URL or model fails before the pairs
        start = time.perf_counter()
        records = judge_pairs(judge, pairs, mode, args.concurrency)
        summary[mode] = summarise(records, judge.stats, time.perf_counter() - start)
        runs.append({"method": f"llm-judge/{mode}", "records": records, "errors": judge.stats.errors})
        judge.close()
    result = {"bench": "judge", "task": args.task, "mode": "quick" if args.quick else "full", "seeds": seeds,
              "config": {"judge_url": args.judge_url, "judge_model": model, "verdicts": args.verdicts, "pairs": n,
                         "model": args.model, "prompts": args.prompts, "gold_reward": args.gold_reward},
              "bench_seconds": time.perf_counter() - began, "machine": machine_info(), "runs": runs,
              "summary": summary}
    out = write_results(args.out, result)
    plot(result, out.with_suffix(".png"))
    rows = {}
    for mode, s in summary.items():
        agreement = "none" if s["agreement"] is None else (
            f"{s['agreement']:.2f} [{s['agreement_ci95'][0]:.2f}, {s['agreement_ci95'][1]:.2f}]")
        rows[mode] = (f"agreement {agreement} on {s['verdicts']} of {s['pairs']} pairs ({s['ties']} ties, "
                      f"{s['failed']} failed), {s['completion_tokens_per_pair']:.0f} generated tokens and "
                      f"{s['seconds_per_pair']:.1f} s per pair")
        if "brier" in s:
            rows[f"{mode}: Brier, surest half"] = f"{s['brier']:.3f}, agreement {s['agreement_surest_half']}"
    console.print(summary_table(f"bench judge · {args.task} · {model}", {**rows, "results": str(out)}))
    return 0
