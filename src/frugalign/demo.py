"""`frugalign demo`: a few minutes, end to end, on what ships with the package.

Part 1 aligns the `arith` gold-oracle task's base policy with DPO on its labelled pair pool and shows
the gold reward before and after (table + plot): the true reward is known, so the gain is measured,
not claimed. Part 2 runs `frugalign dpo` for a few steps on the embedded SmolLM2-135M-Instruct with a
handful of preference pairs, the way a user would on their own data.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from frugalign.console import console, summary_table

# A handful of real preference pairs for part 2, in TRL's conversational format.
PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris.", "France is a country in Europe."),
    ("Name a primary colour.", "Red is a primary colour.", "Colours are nice."),
    ("How many legs does a spider have?", "A spider has eight legs.", "Spiders are scary."),
    ("What is 2 + 2?", "2 + 2 = 4.", "It is a number."),
    ("Say hello in Spanish.", "Hola.", "Hello."),
    ("What does a thermometer measure?", "A thermometer measures temperature.", "It measures things."),
    ("Which planet is closest to the Sun?", "Mercury is the closest planet to the Sun.", "Planets orbit stars."),
    ("What is the boiling point of water at sea level?", "100 degrees Celsius.", "Water is wet."),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="runs/demo", help="where the plot, results and models go")
    parser.add_argument("--skip-smollm2", action="store_true", help="run part 1 only (no 135M model)")


def write_pairs(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for prompt, chosen, rejected in PAIRS:
            f.write(json.dumps({
                "prompt": [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }) + "\n")
    return path


def run(args: argparse.Namespace) -> int:
    from frugalign.bench import dpo as dpo_bench
    from frugalign.config import load_config
    from frugalign.recipes import dpo

    out = Path(args.output_dir)
    began = time.perf_counter()
    console.rule("[bold]frugalign demo, part 1: DPO on the arith gold-oracle task")
    console.print("A tiny model answers additions like '23+58='; the gold reward grades its answers. "
                  "We label its sampled answer pairs with a simulated annotator and train DPO on them.")
    # the bench's own parser: the demo runs `frugalign bench dpo` with these flags and every other option's default
    parser = argparse.ArgumentParser()
    dpo_bench.add_arguments(parser)
    dpo_bench.run(parser.parse_args(["--task", "arith", "--seeds", "0", "--curve-points", "4",
                                     "--out", str(out / "arith-dpo.json")]))

    if not args.skip_smollm2:
        console.rule("[bold]part 2: `frugalign dpo` on the embedded SmolLM2-135M-Instruct")
        data = write_pairs(out / "pairs.jsonl")
        command = (f"frugalign dpo --dataset {data} --output-dir {out / 'smollm2-dpo'} --max-steps 4 --batch-size 2 "
                   "--learning-rate 5e-6 --eval-fraction 0.25")
        console.print(f"equivalent command: [cyan]{command}[/]")
        config = load_config(dpo.DPOConfig, None, dataset=str(data), output_dir=str(out / "smollm2-dpo"),
                             max_steps=4, batch_size=2, learning_rate=5e-6, eval_fraction=0.25, warmup_ratio=0.0,
                             max_prompt_length=64, max_response_length=32)
        dpo.run(config)
    console.print(summary_table("demo done", {
        "minutes": (time.perf_counter() - began) / 60,
        "arith results": str(out / "arith-dpo.json"),
        "arith plot": str(out / "arith-dpo.png"),
    }))
    return 0
