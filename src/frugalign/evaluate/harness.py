"""`frugalign eval lm-eval`: a checkpoint through EleutherAI's lm-evaluation-harness (its Python API),
on the benchmarks the ADPO and OPTune papers report, or on any task the harness or a local task
directory (`--include-path`) defines. Optional: `pip install 'frugalign[lm-eval]'`."""

from __future__ import annotations

import argparse

from frugalign.console import console
from frugalign.errors import UserError
from frugalign.results import write_results

# ARC, HellaSwag, TruthfulQA (mc2), MMLU, GSM8K, Winogrande: the papers' tables
PAPER_TASKS = ("arc_easy", "arc_challenge", "hellaswag", "truthfulqa_mc2", "mmlu", "gsm8k", "winogrande")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="checkpoint (hub id or local path; default: the embedded SmolLM2)")
    parser.add_argument("--tasks", nargs="+", default=list(PAPER_TASKS), help="harness task names (default: the papers')")
    parser.add_argument("--include-path", default=None, help="a directory of task YAML files of your own")
    parser.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: each task's own)")
    parser.add_argument("--limit", type=float, default=None, help="examples per task (a fraction if < 1): a quick look")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    parser.add_argument("--chat-template", action="store_true", help="wrap prompts in the tokenizer's chat template")
    parser.add_argument("--seed", type=int, default=0, help="the harness's random seeds")
    parser.add_argument("--out", default=None, help="result JSON (the harness's metrics per task)")


def evaluate(model, tokenizer, tasks: list[str], include_path: str | None = None, num_fewshot: int | None = None,
             limit: float | None = None, batch_size: int = 8, chat_template: bool = False, seed: int = 0) -> dict:
    """{task: {metric: value}} from the harness, for an in-memory model."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError("frugalign eval lm-eval needs the harness: pip install 'frugalign[lm-eval]'") from None
    manager = TaskManager(include_path=include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(f"unknown lm-eval task(s): {', '.join(unknown)} (see `lm-eval ls tasks`, or --include-path)")
    import torch  # here, not above: `frugalign eval lm-eval --help` must not load torch (cli.py)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    lm = HFLM(pretrained=model.to(device), tokenizer=tokenizer, device=device, batch_size=batch_size)
    out = simple_evaluate(model=lm, tasks=tasks, task_manager=manager, num_fewshot=num_fewshot, limit=limit,
                          apply_chat_template=chat_template, log_samples=False, random_seed=seed, numpy_random_seed=seed,
                          torch_random_seed=seed, fewshot_random_seed=seed, bootstrap_iters=1000)
    return {task: {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "alias"}
            for task, metrics in out["results"].items()}


def run(args: argparse.Namespace) -> int:
    from frugalign import models

    tokenizer = models.load_tokenizer(args.model)
    model = models.load_causal_lm(args.model)
    results = evaluate(model, tokenizer, args.tasks, args.include_path, args.num_fewshot, args.limit, args.batch_size,
                       args.chat_template, args.seed)
    from rich.table import Table

    table = Table(title=f"lm-eval · {args.model or 'smollm2-135m-instruct'}")
    for column in ("task", "metric", "value"):
        table.add_column(column)
    for task, metrics in results.items():
        for metric, value in metrics.items():
            table.add_row(task, metric, f"{value:.4f}")
    console.print(table)
    if args.out:
        write_results(args.out, {"model": args.model, "tasks": args.tasks, "limit": args.limit,
                                 "num_fewshot": args.num_fewshot, "results": results})
    return 0
