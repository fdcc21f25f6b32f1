"""`frugalign bench generation`: tokens per second of each generation backend (Hugging Face `generate`,
vLLM) against batch size.

Online methods spend most of their time generating (OPTune's paper: 71.8%), so how generation scales
with the batch decides what regenerating fewer prompts saves. The same prompts (synthetic text of a
fixed token length) are sampled at each batch size, `batch size` prompts per call; a warm-up call comes
first, untimed.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

from frugalign.bench.results import machine_info, write_results
from frugalign.bench.throughput import load_model, make_text
from frugalign.console import console, summary_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", choices=["tiny-llama", "smollm2"], default=None,
                        help="models to time (default: both; quick: tiny-llama)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not evidence")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="prompts per generate call "
                        "(default 1 2 4 8 16 32 64; quick 1 4)")
    parser.add_argument("--prompts", type=int, default=None, help="prompts sampled at each batch size (default 64; quick 8)")
    parser.add_argument("--prompt-tokens", type=int, default=64, help="tokens per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="tokens sampled per response (default 64; quick 8)")
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


def run(args: argparse.Namespace) -> int:
    import torch

    from frugalign import models
    from frugalign.generation import open_generator

    names = args.models or (["tiny-llama"] if args.quick else ["tiny-llama", "smollm2"])
    batch_sizes = sorted(args.batch_sizes or ([1, 4] if args.quick else [1, 2, 4, 8, 16, 32, 64]))
    n_prompts = args.prompts or (8 if args.quick else 64)
    max_new_tokens = args.max_new_tokens or (8 if args.quick else 64)
    tokenizer = models.load_tokenizer(None)  # SmolLM2's tokenizer for both models
    rng = random.Random(0)
    prompts = [make_text(rng, tokenizer, args.prompt_tokens) for _ in range(n_prompts)]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runs = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in names:
            model = load_model(name, tokenizer).to(device)
            params = {"model": name, "parameters": sum(p.numel() for p in model.parameters())}
            for backend in args.backends:
                generator = open_generator(backend, model, tokenizer, Path(workdir))
                runs += [{"method": backend, "seed": 0, "params": {**params, "batch_size": r["batch_size"]}, **r}
                         for r in measure(generator, prompts, batch_sizes, max_new_tokens)]
                generator.close()
            del model
    result = {"bench": "generation", "task": "synthetic-prompts", "mode": "quick" if args.quick else "full", "seeds": [0],
              "config": {"models": names, "batch_sizes": batch_sizes, "prompts": n_prompts,
                         "prompt_tokens": args.prompt_tokens, "max_new_tokens": max_new_tokens, "backends": args.backends,
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
