"""`frugalign eval reward`: a reward model's accuracy on held-out preference pairs (the chosen response
must get the higher reward), with a 95% interval over pairs."""

from __future__ import annotations

import argparse

import numpy as np

from frugalign.console import console, summary_table
from frugalign.data import load_rows, preference_examples
from frugalign.results import write_results
from frugalign.stats import wilson_interval


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reward-model", required=True, help="a `frugalign reward` checkpoint (or any one-output classifier)")
    parser.add_argument("--dataset", required=True, help="held-out preference pairs (TRL preference format)")
    parser.add_argument("--split", default="train", help="dataset split")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs scored at once")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per prompt + response")
    parser.add_argument("--out", default=None, help="result JSON")


def accuracy(model, tokenizer, examples, batch_size: int = 32, max_length: int = 512
             ) -> tuple[float, tuple[float, float], np.ndarray]:
    """(accuracy, its 95% Wilson interval over the pairs, per-pair reward margins). A tie counts as wrong."""
    from frugalign.training.reward import score

    prompts = [e.prompt for e in examples]
    chosen = score(model, tokenizer, prompts, [e.chosen for e in examples], batch_size, max_length)
    rejected = score(model, tokenizer, prompts, [e.rejected for e in examples], batch_size, max_length)
    margins = chosen - rejected
    correct = int((margins > 0).sum())
    # Wilson's interval, not the normal one: a small held-out set with every pair right is not certain
    return correct / len(margins), wilson_interval(correct, len(margins)), margins


def run(args: argparse.Namespace) -> int:
    from frugalign import models  # here, not above: `--help` must not load torch (cli.py)

    examples = preference_examples(load_rows(args.dataset, args.split), args.dataset)  # bad rows fail before loading
    model, tokenizer = models.load_reward_model(args.reward_model), models.load_tokenizer(args.reward_model)
    acc, (low, high), margins = accuracy(model, tokenizer, examples, args.batch_size, args.max_length)
    rows = {"pairs": len(examples), "accuracy": f"{acc:.3f} (95% interval {low:.3f}-{high:.3f})",
            "mean reward margin": f"{margins.mean():.3f}"}
    if args.out:
        write_results(args.out, {"reward_model": args.reward_model, "dataset": args.dataset, "pairs": len(examples),
                                 "accuracy": acc, "accuracy_ci95": [low, high], "mean_margin": float(margins.mean())})
        rows["results"] = args.out
    console.print(summary_table("eval reward", rows))
    return 0
