"""`frugalign eval generate`: a checkpoint's answers to a prompt set, in the files AlpacaEval and
MT-Bench read, and the answer files the win score compares."""

from __future__ import annotations

import argparse
import json
import typing
from pathlib import Path

from frugalign.data import load_rows
from frugalign.data.formats import render_prompt, renders_strings
from frugalign.errors import DataError
from frugalign.options import GenerationBackend

TASKS = ("arith", "sentiment")
PROMPT_COLUMNS = ("prompt", "instruction", "question", "turns")  # TRL, AlpacaEval, MT-Bench question files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="checkpoint (hub id or local path; default: the embedded SmolLM2)")
    parser.add_argument("--prompts", required=True, help="a task's held-out prompts (arith, sentiment), a "
                        "JSON/JSONL/CSV/Parquet file, a save_to_disk directory or a hub dataset, with a "
                        f"{' / '.join(PROMPT_COLUMNS)} column")
    parser.add_argument("--split", default="train", help="dataset split (files and hub datasets)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    parser.add_argument("--out", required=True, help="answers file (.jsonl)")
    parser.add_argument("--format", choices=["alpaca", "mtbench"], default="alpaca",
                        help="alpaca: {instruction, output, generator}; mtbench: {question_id, model_id, choices}")
    parser.add_argument("--generator", default=None, help="the model's name in the file (default: --model)")
    parser.add_argument("--chat-template", choices=["auto", "on", "off"], default="auto",
                        help="the rule of every command: auto: each prompt as a user turn of the tokenizer's chat "
                             "template when it has one (a prompt rendered already is left as it is); on; off")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="tokens per answer")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (the default for evaluation)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling when temperature > 0")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per generate call")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--generation-backend", choices=typing.get_args(GenerationBackend), default="auto",
                        help="hf: Hugging Face generate; vllm: vLLM in this process (its CPU or GPU build); auto: vllm "
                             "when it is installed and a GPU is present")


def load_prompts(source: str, split: str = "train", limit: int | None = None) -> list[str]:
    """Prompt strings from a task name or any dataset `load_rows` reads; a bad row names its number."""
    if source in TASKS:
        from frugalign.tasks import load_task

        prompts = load_task(source).eval_prompts
    else:
        prompts = []
        for number, row in enumerate(load_rows(source, split), start=1):
            column = next((c for c in PROMPT_COLUMNS if c in row), None)
            if column is None:
                raise DataError(source, f"no prompt column (expected one of {', '.join(PROMPT_COLUMNS)})", number)
            value = row[column]
            if column == "turns" and isinstance(value, list) and value:
                value = value[0]  # MT-Bench: the first turn
            if not isinstance(value, str) or not value.strip():
                raise DataError(source, "expected a non-empty string", number, column)
            prompts.append(value)
    return prompts[:limit] if limit else prompts


def answer(generator, tokenizer, prompts: list[str], chat: bool, max_new_tokens: int, temperature: float = 0.0,
           top_p: float = 1.0, batch_size: int = 16, seed: int = 0) -> list[str]:
    """One answer per prompt from `generator` (`frugalign.generation.open_generator`)."""
    # a prompt rendered already (a SmolLM2 task's) is left as it is
    texts = [render_prompt(tokenizer, p) if chat else p for p in prompts]
    gens = generator.generate(texts, 1, max_new_tokens, temperature, top_p, batch_size, seed=seed,
                              description="answering")
    return [group[0].strip() for group in gens.texts]


def write_answers(path: str | Path, prompts: list[str], outputs: list[str], generator: str, fmt: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "alpaca":
        rows = [{"instruction": p, "output": o, "generator": generator} for p, o in zip(prompts, outputs)]
    else:
        rows = [{"question_id": i + 1, "model_id": generator, "choices": [{"index": 0, "turns": [o]}]}
                for i, o in enumerate(outputs)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def generator_name(path: str | Path) -> str:
    """The model that wrote an answers file: its rows' `generator` field, or the file's name without suffix."""
    for row in load_rows(str(path)):
        if isinstance(row.get("generator"), str) and row["generator"].strip():
            return row["generator"]
        break
    return Path(path).stem


def read_answers(path: str | Path) -> dict[str, str]:
    """{prompt: answer} from an AlpacaEval-format answers file (what `eval generate` writes)."""
    out = {}
    for number, row in enumerate(load_rows(str(path)), start=1):
        for field in ("instruction", "output"):
            if not isinstance(row.get(field), str):
                raise DataError(str(path), "expected a string (an AlpacaEval answers file)", number, field)
        out[row["instruction"]] = row["output"]
    return out


def run(args: argparse.Namespace) -> int:
    import tempfile

    import torch  # here, not above: `--help` and read_answers' users must not load torch (cli.py)

    from frugalign import models
    from frugalign.generation import open_generator

    prompts = load_prompts(args.prompts, args.split, args.limit)  # bad input fails before a model loads
    tokenizer = models.load_tokenizer(args.model)
    chat = renders_strings(args.chat_template, tokenizer, args.prompts)
    model = models.load_causal_lm(args.model).to("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="frugalign-eval-") as workdir:
        generator = open_generator(args.generation_backend, model, tokenizer, Path(workdir), seed=args.seed)
        try:
            outputs = answer(generator, tokenizer, prompts, chat, args.max_new_tokens, args.temperature, args.top_p,
                             args.batch_size, args.seed)
        finally:
            generator.close()
    path = write_answers(args.out, prompts, outputs, args.generator or args.model or "smollm2-135m-instruct", args.format)
    print(f"{path}: {len(outputs)} answers ({args.format} format)")
    return 0
