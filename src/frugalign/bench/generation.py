"""`frugalign bench generation`: tokens per second of each generation backend (Hugging Face `generate`,
vLLM) against batch size.

Online methods spend most of their time generating (OPTune's paper: 71.8%), so how generation scales
with the batch decides what regenerating fewer prompts saves. The same prompts are sampled at each batch
size, `batch size` prompts per call; a warm-up call comes first, untimed. The prompts are synthetic text
of a fixed token length on two models (`--models`), or a task's train prompts on its policy, rendered
and answered at the length its benches use (`--task review`, or the user's `--task custom`).
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

from frugalign.bench.throughput import load_model, make_text
from frugalign.console import console, summary_table
from frugalign.errors import UserError
from frugalign.results import machine_info, write_results
from frugalign.tasks import TASKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=("synthetic", *TASKS), default="synthetic",
                        help="synthetic: text of --prompt-tokens tokens on --models; a task: its train prompts on its "
                             "policy (review, smol, custom: the embedded SmolLM2 or --model)")
    parser.add_argument("--model", default=None, help="review, smol, custom: the policy (hub id or local checkpoint)")
    parser.add_argument("--gold-reward", default=None, metavar="MODULE:FUNCTION",
                        help="custom: the task's FUNCTION(prompt, response) -> float (checked, not used for timing)")
    parser.add_argument("--models", nargs="+", choices=["tiny-llama", "smollm2"], default=None,
                        help="synthetic: models to time (default: both; quick: tiny-llama)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not evidence")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="prompts per generate call "
                        "(default 1 2 4 8 16 32 64; quick 1 4)")
    parser.add_argument("--prompts", default=None, metavar="N|FILE",
                        help="a number: prompts sampled at each batch size (default 64; quick 8); with --task custom: "
                             "the prompts file (JSONL, JSON, CSV, Parquet; its first 64 train prompts are timed)")
    parser.add_argument("--prompt-tokens", type=int, default=64, help="synthetic: tokens per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="tokens sampled per response (default: the task's; synthetic 64; quick 8)")
    parser.add_argument("--backends", nargs="+", choices=["hf", "vllm"], default=["hf"],
                        help="generation backends to time (vllm: needs vLLM installed)")
    parser.add_argument("--out", default="bench-generation.json", help="result JSON (a PNG is written beside it)")


def measure(generator, prompts: list[str], batch_sizes: list[int], max_new_tokens: int) -> list[dict]:
    """One run per batch size: tokens generated, seconds, tokens per second (sampling, temperature 1)."""
    import torch  # here, not above: `--help` must not load torch (cli.py)

    generator.generate(prompts[: max(batch_sizes)], 1, max_new_tokens, 1.0, 1.0, max(batch_sizes), seed=0,
                       progress=False)  # warm-up: kernels, allocator, caches
    runs = []
    for size in batch_sizes:
        tokens, seconds = 0, 0.0
        for start in range(0, len(prompts), size):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            gens = generator.generate(prompts[start:start + size], 1, max_new_tokens, 1.0, 1.0, size, seed=start,
                                      progress=False)
            tokens, seconds = tokens + gens.num_tokens, seconds + gens.seconds
        runs.append({"batch_size": size, "tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds})
        console.print(f"{generator.name}, batch {size}: {tokens / seconds:,.0f} tokens/s ({tokens} tokens, {seconds:.1f} s)")
    return runs


def prompt_count(args: argparse.Namespace) -> int:
    """How many prompts are timed: --prompts N, or the default (with --task custom, --prompts is the file)."""
    default = 8 if args.quick else 64
    if args.task == "custom" or args.prompts is None:
        return default
    if not args.prompts.isdigit() or int(args.prompts) < 1:
        raise UserError(f"--prompts {args.prompts!r}: a number of prompts (a prompts file goes with --task custom)")
    return int(args.prompts)


def timed_models(args: argparse.Namespace, n_prompts: int):
    """(label, model, tokenizer, prompts, max_new_tokens) per model to time."""
    from frugalign import models
    from frugalign.tasks import load_task

    if args.task != "synthetic":
        if args.models:
            raise UserError("--models picks the synthetic bench's models: with --task, --model sets the policy")
        task = load_task(args.task, seed=0, quick=args.quick, model=args.model,
                         prompts=args.prompts if args.task == "custom" else None, gold=args.gold_reward)
        prompts = (task.train_prompts * n_prompts)[:n_prompts]  # a short prompt set is repeated, never cut short
        yield (f"{args.task}/{args.model or ('tiny policy' if args.task in ('arith', 'sentiment') else 'smollm2')}",
               task.model, task.tokenizer, prompts, args.max_new_tokens or task.max_new_tokens)
        return
    if args.model or args.gold_reward:
        raise UserError("--model and --gold-reward go with --task (the synthetic bench times --models)")
    tokenizer = models.load_tokenizer(None)  # SmolLM2's tokenizer for both models
    rng = random.Random(0)
    prompts = [make_text(rng, tokenizer, args.prompt_tokens) for _ in range(n_prompts)]
    for name in args.models or (["tiny-llama"] if args.quick else ["tiny-llama", "smollm2"]):
        yield name, load_model(name, tokenizer), tokenizer, prompts, args.max_new_tokens or (8 if args.quick else 64)


def run(args: argparse.Namespace) -> int:
    import torch

    from frugalign.generation import open_generator

    batch_sizes = sorted(args.batch_sizes or ([1, 4] if args.quick else [1, 2, 4, 8, 16, 32, 64]))
    n_prompts = prompt_count(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runs, names, lengths = [], [], {}
    with tempfile.TemporaryDirectory() as workdir:
        for name, model, tokenizer, prompts, max_new_tokens in timed_models(args, n_prompts):
            names.append(name)
            lengths[name] = max_new_tokens
            model = model.to(device)
            params = {"model": name, "parameters": sum(p.numel() for p in model.parameters())}
            for backend in args.backends:
                generator = open_generator(backend, model, tokenizer, Path(workdir))
                runs += [{"method": backend, "seed": 0, "params": {**params, "batch_size": r["batch_size"]}, **r}
                         for r in measure(generator, prompts, batch_sizes, max_new_tokens)]
                generator.close()
            del model
    result = {"bench": "generation", "task": "synthetic-prompts" if args.task == "synthetic" else args.task,
              "mode": "quick" if args.quick else "full", "seeds": [0],
              "config": {"models": names, "batch_sizes": batch_sizes, "prompts": n_prompts,
                         "prompt_tokens": args.prompt_tokens if args.task == "synthetic" else None,
                         "max_new_tokens": lengths[names[0]], "backends": args.backends,
                         "prompt_file": args.prompts if args.task == "custom" else None,
                         "sampling": {"temperature": 1.0, "top_p": 1.0}},
              "machine": machine_info(), "runs": runs,
              "summary": {f"{name}/{backend}": {str(r["batch_size"]): r["tokens_per_second"] for r in runs
                                                 if r["params"]["model"] == name and r["method"] == backend}
                          for name in names for backend in args.backends}}
    out = write_results(args.out, result)
    plot(result, out.with_suffix(".png"))
    table = {f"{name}, batch {size}": f"{tps:,.0f} tokens/s" for name, by in result["summary"].items()
             for size, tps in by.items()}
    console.print(summary_table("bench generation", {**table, "results": str(out)}))
    return 0


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, by in result["summary"].items():
        sizes = [int(k) for k in by]
        ax.plot(sizes, list(by.values()), marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("prompts per generate call")
    ax.set_ylabel("tokens per second")
    ax.set_title(f"generation throughput, {result['machine']['device']}, {result['config']['max_new_tokens']} new tokens")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
