"""`frugalign bench throughput`: seconds per DPO optimizer step, frugalign against TRL's DPOTrainer
and against the floor, on the same model, pairs, lengths, optimizer and machine, in one run.

- frugalign: the real `train_dpo` (engine + recipe); the step time is the engine's own measurement.
- trl: `DPOTrainer` (optional extra `trl-bench`), timed by a callback around each optimizer step.
- floor: bare PyTorch: one policy forward+backward and one reference forward over the padded
  chosen and rejected rows, then AdamW: what a straightforward implementation does, the yardstick
  for frugalign's pair layout (below it where the layout computes less).
Each is run with a live reference model and with reference log-probs precomputed before training
(the floor then skips its reference forward). Warm-up steps are excluded; the median is reported.

`--ablation` also times bare steps (live reference) with each trick of frugalign's pair layout on or
off, so that what each one gives is measured rather than inferred (see `LAYOUTS`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from frugalign.bench.results import machine_info, write_results
from frugalign.console import console
from frugalign.data import PreferenceExample, tokenize_preferences
from frugalign.errors import UserError

if TYPE_CHECKING:  # torch and the recipes are imported in the functions that use them: `--help` must not load them (cli.py)
    import torch

WORDS = ("the quick brown fox jumps over a lazy dog while seven wise owls count silver stars above "
         "quiet rivers and distant mountains under an autumn sky").split()
BETA, LR = 0.1, 1e-6
# The ablation's layouts, each a bare DPO step with a live reference:
#   padded                   2B padded rows, logits at every position (what the floor computes)
#   padded-response-head     2B padded rows, output layer on response positions only
#   shared-prefix-full-head  one row per pair (prompt once), logits at every position
#   shared-prefix            one row per pair, output layer on response positions only (frugalign's layout)
#   packed                   the shared-prefix rows of a step packed into one row, block-diagonal mask
LAYOUTS = ("padded", "padded-response-head", "shared-prefix-full-head", "shared-prefix", "packed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny model only, few steps")
    parser.add_argument("--models", nargs="+", choices=["tiny-llama", "smollm2"], default=None,
                        help="default: both (quick: tiny-llama)")
    parser.add_argument("--pairs", type=int, default=4, help="pairs per optimizer step")
    parser.add_argument("--prompt-tokens", type=int, default=125, help="tokens of each prompt")
    parser.add_argument("--response-tokens", type=int, default=75, help="tokens of each response, EOS included")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 5; quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2; quick 1)")
    parser.add_argument("--skip-trl", action="store_true", help="run without TRL (frugalign and floor only)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="fp32, or bf16 autocast for all three (bf16 needs a GPU that supports it)")
    parser.add_argument("--trainable-layers", type=int, default=0,
                        help="also time frugalign training only the last N transformer blocks (method frugalign-topN)")
    parser.add_argument("--ablation", action="store_true",
                        help="also time each trick of the pair layout apart (bare steps, live reference)")
    parser.add_argument("--out", default="bench-throughput.json", help="result JSON (a PNG is written beside it)")


def require_trl() -> None:
    """Fail before any compute when the comparison cannot run."""
    try:
        import trl  # noqa: F401
    except ImportError:
        raise UserError("the TRL comparison needs TRL: pip install 'frugalign[trl-bench]' (or pass --skip-trl)") from None


def make_text(rng: random.Random, tokenizer, n_tokens: int) -> str:
    """A text of exactly n_tokens tokens under `tokenizer` (words, cut to length, decoded back)."""
    words = " ".join(rng.choice(WORDS) for _ in range(n_tokens * 2))
    ids = tokenizer(words, add_special_tokens=False)["input_ids"][:n_tokens]
    return tokenizer.decode(ids)


def make_pairs(tokenizer, n: int, prompt_tokens: int, response_tokens: int, seed: int = 0) -> list[PreferenceExample]:
    rng = random.Random(seed)
    # responses one token short: the EOS appended by tokenization makes them response_tokens long
    return [PreferenceExample(make_text(rng, tokenizer, prompt_tokens), make_text(rng, tokenizer, response_tokens - 1),
                              make_text(rng, tokenizer, response_tokens - 1)) for _ in range(n)]


def load_model(name: str, tokenizer):
    from frugalign import models

    if name == "smollm2":
        return models.load_causal_lm(None)
    # about 28M parameters with SmolLM2's 49k vocabulary (tied embeddings)
    return models.tiny_causal_lm(len(tokenizer), seed=0, hidden_size=384, num_layers=4, num_heads=6,
                                 intermediate_size=1536, tie_word_embeddings=True, max_positions=2048,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)


def device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(precision: str):
    """bf16 autocast on the GPU, as accelerate's mixed precision does; nothing in fp32."""
    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")


def clock() -> float:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()  # kernels are asynchronous: time what the GPU did, not what was queued
    return time.perf_counter()


def time_frugalign(model, tokenizer, rows, precomputed: bool, steps: int, warmup: int, lr: float = LR,
                   precision: str = "fp32", trainable_layers: int = 0) -> list[float]:
    from frugalign.recipes.configs import DPOConfig
    from frugalign.training.dpo import train_dpo

    with tempfile.TemporaryDirectory() as tmp:
        config = DPOConfig(output_dir=tmp, learning_rate=lr, batch_size=len(rows), max_steps=warmup + steps, beta=BETA,
                           mixed_precision="no" if precision == "fp32" else "bf16",
                           warmup_ratio=0.0, lr_scheduler="constant", max_grad_norm=0.0, logging_steps=1,
                           reference="precomputed" if precomputed else "copy", save_total_limit=1,
                           trainable_layers=trainable_layers)
        train_dpo(config, copy.deepcopy(model), tokenizer, [dict(r) for r in rows])
        lines = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    return [x["step_seconds"] for x in lines if "step_seconds" in x][warmup:]


def time_bare(model, score, precomputed: bool, steps: int, warmup: int, lr: float = LR, precision: str = "fp32") -> list[float]:
    """Seconds of bare DPO steps: `score(model) -> (chosen, rejected)` summed log-probs for the policy
    (with gradients) and for a frozen reference copy (without, or once beforehand if precomputed),
    the sigmoid loss, backward, AdamW."""
    import torch

    policy = copy.deepcopy(model).to(device()).train()
    reference = copy.deepcopy(model).to(device()).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr)
    with torch.no_grad(), autocast(precision):
        cached = score(reference)
    times = []
    for _ in range(warmup + steps):
        began = clock()
        with autocast(precision):
            chosen, rejected = score(policy)
            if precomputed:
                ref_chosen, ref_rejected = cached
            else:
                with torch.no_grad():
                    ref_chosen, ref_rejected = score(reference)
            margin = (chosen - ref_chosen).float() - (rejected - ref_rejected).float()
            loss = -torch.nn.functional.logsigmoid(BETA * margin).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(clock() - began)
    return times[warmup:]


def padded_rows(rows, pad_id: int) -> dict[str, torch.Tensor]:
    from frugalign.logprobs import pad_sequences

    prompts = [r["prompt_ids"] for r in rows]
    return pad_sequences(prompts + prompts, [r["chosen_ids"] for r in rows] + [r["rejected_ids"] for r in rows], pad_id)


def time_floor(model, rows, pad_id: int, precomputed: bool, steps: int, warmup: int, lr: float = LR,
               precision: str = "fp32") -> list[float]:
    return time_bare(model, layout_scorer("padded", rows, pad_id), precomputed, steps, warmup, lr, precision)


def pack(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A shared-prefix batch as a single row: the rows one after the other, a block-diagonal mask. The
    flat indices (row * width + position) of predictors are unchanged by the concatenation."""
    import torch

    n, width = t["input_ids"].shape
    return {**t, "input_ids": t["input_ids"].reshape(1, n * width), "position_ids": t["position_ids"].reshape(1, n * width),
            "attention_mask": torch.block_diag(*t["attention_mask"][:, 0]).reshape(1, 1, n * width, n * width)}


def on_device(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(device()) for k, v in t.items()}


def layout_scorer(layout: str, rows, pad_id: int):
    """`model -> (chosen, rejected)` summed response log-probs in one of `LAYOUTS` (all give the same
    values; they differ in what is computed)."""
    import torch

    from frugalign.logprobs import additive_mask, pair_batch, pair_logps, sequence_logps, token_logps

    n = len(rows)
    if layout == "padded":
        t = on_device(padded_rows(rows, pad_id))

        def score(model):
            sums = sequence_logps(model, t["input_ids"], t["attention_mask"], t["loss_mask"]).sum
            return sums[:n], sums[n:]
        return score
    if layout in ("shared-prefix", "padded-response-head"):  # the library's own code paths, as the recipe calls them
        t = on_device(pair_batch([r["prompt_ids"] for r in rows], [r["chosen_ids"] for r in rows],
                                 [r["rejected_ids"] for r in rows], pad_id, shared_prefix=layout == "shared-prefix"))
        return lambda model: tuple(x.sum for x in pair_logps(model, t, model.get_output_embeddings()))
    t = pair_batch([r["prompt_ids"] for r in rows], [r["chosen_ids"] for r in rows],
                   [r["rejected_ids"] for r in rows], pad_id, shared_prefix=True)
    t = pack(t) if layout == "packed" else t
    t = on_device({**t, "attention_mask": additive_mask(t["attention_mask"], torch.float32)})
    full_head = layout == "shared-prefix-full-head"

    def score(model):
        inputs = {k: t[k] for k in ("input_ids", "attention_mask", "position_ids") if k in t}
        if full_head:
            logits = model(**inputs, use_cache=False).logits
            lp = token_logps(logits.reshape(-1, logits.shape[-1])[t["predictors"]], t["targets"])
        else:
            hidden = model(**inputs, output_hidden_states=True, logits_to_keep=1, use_cache=False).hidden_states[-1]
            lp = token_logps(model.get_output_embeddings()(hidden.reshape(-1, hidden.shape[-1])[t["predictors"]]),
                             t["targets"])
        sums = torch.zeros(2 * n, dtype=lp.dtype, device=lp.device).index_add(0, t["segments"], lp)
        return sums[:n], sums[n:]
    return score


def time_trl(model, tokenizer, examples, precomputed: bool, steps: int, warmup: int, lr: float = LR,
             gradient_checkpointing: bool = False, precision: str = "fp32") -> list[float]:
    import torch

    require_trl()
    import datasets
    from transformers import TrainerCallback
    from trl import DPOConfig as TRLConfig
    from trl import DPOTrainer

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_begin(self, args, state, control, **kw):
            self.began = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.began)

    data = datasets.Dataset.from_list([{"prompt": e.prompt, "chosen": e.chosen, "rejected": e.rejected} for e in examples])
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        args = TRLConfig(output_dir=tmp, per_device_train_batch_size=len(examples), max_steps=warmup + steps,
                         learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=0.0, beta=BETA,
                         max_length=4096, precompute_ref_log_probs=precomputed, report_to=[], save_strategy="no",
                         logging_steps=1000, use_cpu=not torch.cuda.is_available(), bf16=precision == "bf16",
                         dataloader_num_workers=0, disable_tqdm=True, seed=0,
                         # TRL turns it on by default; frugalign and the floor keep activations, so the same here
                         gradient_checkpointing=gradient_checkpointing)
        # repeat the pairs so the trainer's data loader never runs dry
        trainer = DPOTrainer(model=copy.deepcopy(model), ref_model=None if precomputed else copy.deepcopy(model),
                             args=args, train_dataset=datasets.concatenate_datasets([data] * (warmup + steps)),
                             processing_class=tokenizer, callbacks=[timer])
        trainer.train()
    return timer.times[warmup:]


def measure(name: str, model, tokenizer, examples, rows, steps: int, warmup: int, trl: bool, ablation: bool,
            precision: str = "fp32", trainable_layers: int = 0) -> list[dict]:
    """Runs (docs/benchmarks.md schema) of every method on one model: live and precomputed reference, then the
    layout ablation. The load average is kept with each run: other work on the machine shows there."""
    n_params = sum(p.numel() for p in model.parameters())
    timers = {"frugalign": lambda pre: time_frugalign(model, tokenizer, rows, pre, steps, warmup, precision=precision),
              "floor": lambda pre: time_floor(model, rows, tokenizer.pad_token_id, pre, steps, warmup, precision=precision)}
    if trl:
        timers["trl"] = lambda pre: time_trl(model, tokenizer, examples, pre, steps, warmup, precision=precision)
    if trainable_layers:
        timers[f"frugalign-top{trainable_layers}"] = lambda pre: time_frugalign(
            model, tokenizer, rows, pre, steps, warmup, precision=precision, trainable_layers=trainable_layers)
    jobs = [(m, pre, None) for pre in (False, True) for m in timers]
    if ablation:
        jobs += [("frugalign-layout", False, layout) for layout in LAYOUTS]
    runs = []
    for method, precomputed, layout in jobs:
        load_before = os.getloadavg()[0]
        if layout is None:
            times = timers[method](precomputed)
        else:
            times = time_bare(model, layout_scorer(layout, rows, tokenizer.pad_token_id), False, steps, warmup,
                              precision=precision)
        params = {"model": name, "reference": "precomputed" if precomputed else "live", "parameters": n_params}
        if layout is not None:
            params["layout"] = layout
        runs.append({"method": method, "seed": 0, "params": params, "step_s": statistics.median(times),
                     "step_times_s": times, "load_avg_1min": [load_before, os.getloadavg()[0]]})
        console.print(f"{name} · {params['reference']} reference · {method}{' · ' + layout if layout else ''}: "
                      f"{statistics.median(times):.3f} s/step")
    return runs


def summarise(runs: list[dict]) -> dict:
    summary = {}
    for r in runs:
        if r["method"] != "frugalign-layout":
            entry = summary.setdefault(f"{r['params']['model']}/{r['params']['reference']}", {})
            entry[f"{r['method']}_step_s"] = r["step_s"]
    for entry in summary.values():
        entry["floor_over_frugalign"] = entry["floor_step_s"] / entry["frugalign_step_s"]
        for key in [k for k in entry if k.startswith("frugalign-top")]:
            entry[f"frugalign_over_{key.removesuffix('_step_s')}"] = entry["frugalign_step_s"] / entry[key]
        if "trl_step_s" in entry:
            entry["trl_over_frugalign"] = entry["trl_step_s"] / entry["frugalign_step_s"]
    layouts = {}
    for r in runs:
        if r["method"] == "frugalign-layout":
            layouts.setdefault(r["params"]["model"], {})[r["params"]["layout"]] = r["step_s"]
    for model, by in layouts.items():
        summary[f"{model}/layouts"] = {f"{k}_step_s": v for k, v in by.items()} | {
            f"padded_over_{k}": by["padded"] / v for k, v in by.items() if k != "padded"}
    return summary


def bench(model_names: list[str], tokenizer, pairs: int, prompt_tokens: int, response_tokens: int, steps: int,
          warmup: int, trl: bool, ablation: bool, mode: str, load=load_model, precision: str = "fp32",
          trainable_layers: int = 0) -> dict:
    """The whole bench as a result dict (docs/benchmarks.md schema); `load(name, tokenizer)` gives each model."""
    examples = make_pairs(tokenizer, pairs, prompt_tokens, response_tokens)
    rows, _ = tokenize_preferences(examples, tokenizer, 4096, 4096, "bench pairs", "error")
    # distinct tokens of a step (each prompt once); the padded layout computes each prompt twice
    tokens = sum(len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)
    runs = []
    for name in model_names:
        runs += measure(name, load(name, tokenizer), tokenizer, examples, rows, steps, warmup, trl, ablation, precision,
                        trainable_layers)
    return {"bench": "throughput", "task": "synthetic-pairs", "mode": mode, "seeds": [0],
            "config": {"models": model_names, "pairs": pairs, "prompt_tokens": prompt_tokens,
                       "response_tokens": response_tokens, "tokens_per_step": tokens,
                       "padded_tokens_per_step": padded_rows(rows, tokenizer.pad_token_id)["input_ids"].numel(),
                       "steps": steps, "warmup": warmup, "optimizer": "adamw", "learning_rate": LR, "beta": BETA,
                       "precision": precision, "device": str(device()), "frugalign_layout": "shared-prefix",
                       "trainable_layers": trainable_layers,
                       "trl_gradient_checkpointing": False,
                       "trl": trl_version() if trl else None},
            "machine": machine_info(), "runs": runs, "summary": summarise(runs)}


def trl_version() -> str:
    import trl

    return trl.__version__


def run(args: argparse.Namespace) -> int:
    import torch

    from frugalign import models

    if args.precision == "bf16" and not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
        raise UserError("--precision bf16 needs a GPU that supports bf16; this machine has none (use fp32)")
    if not args.skip_trl:
        require_trl()
    names = args.models or (["tiny-llama"] if args.quick else ["tiny-llama", "smollm2"])
    steps = args.steps or (2 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    tokenizer = models.load_tokenizer(None)  # SmolLM2's tokenizer for both models: same token counts
    result = bench(names, tokenizer, args.pairs, args.prompt_tokens, args.response_tokens, steps, warmup,
                   trl=not args.skip_trl, ablation=args.ablation, mode="quick" if args.quick else "full",
                   precision=args.precision, trainable_layers=args.trainable_layers)
    out = write_results(args.out, result)
    plot(result, out.with_suffix(".png"))
    for table in tables(result):
        console.print(table)
    console.print(f"results: {out} and {out.with_suffix('.png')}")
    return 0


def tables(result: dict) -> list[Table]:
    """The comparison (seconds per step and ratios) and, when measured, the layout ablation."""
    c = result["config"]
    params = {r["params"]["model"]: r["params"]["parameters"] for r in result["runs"]}
    main = Table(title=f"DPO step, median s/step · {c['pairs']} pairs, {c['tokens_per_step']} tokens "
                       f"({c['padded_tokens_per_step']} padded) · {result['machine']['threads']} threads")
    for col in ("model", "reference", "TRL", "floor", "frugalign", "TRL / frugalign", "floor / frugalign"):
        main.add_column(col, justify="left" if col in ("model", "reference") else "right")
    ablation = Table(title="layout ablation: bare DPO step, live reference, median s/step")
    for col in ("model", "layout", "s/step", "padded / layout"):
        ablation.add_column(col, justify="left" if col in ("model", "layout") else "right")
    for key, e in result["summary"].items():
        model, reference = key.split("/")
        label = f"{model} ({params[model] / 1e6:.1f}M)"
        if reference == "layouts":
            for layout in LAYOUTS:
                ratio = e.get(f"padded_over_{layout}", 1.0)
                ablation.add_row(label, layout, f"{e[f'{layout}_step_s']:.2f}", f"{ratio:.2f}x")
            continue
        trl = e.get("trl_step_s")
        main.add_row(label, reference, f"{trl:.2f}" if trl else "-", f"{e['floor_step_s']:.2f}",
                     f"{e['frugalign_step_s']:.2f}", f"{e['trl_over_frugalign']:.2f}x" if trl else "-",
                     f"{e['floor_over_frugalign']:.2f}x")
    return [main] + ([ablation] if ablation.row_count else [])


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in result["summary"] if not g.endswith("/layouts")]
    timed = list(dict.fromkeys(r["method"] for r in result["runs"]))
    methods = [m for m in ("trl", "floor", "frugalign") if m in timed] + [m for m in timed if m.startswith("frugalign-top")]
    labels = {"trl": "TRL DPOTrainer", "floor": "floor: a plain PyTorch step on padded rows (forward, backward, AdamW)",
              "frugalign": "frugalign"}
    fig, ax = plt.subplots(figsize=(max(7, 2.4 * len(groups)), 4.5))
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        values = [result["summary"][g].get(f"{method}_step_s", 0.0) for g in groups]
        label = labels.get(method, f"frugalign, only the last {method.removeprefix('frugalign-top')} blocks trained")
        bars = ax.bar([i + k * width for i in range(len(groups))], values, width, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(groups))],
                  [g.replace("/", "\n") + " reference" for g in groups])
    ax.set_ylim(0, 1.3 * ax.get_ylim()[1])  # room for the legend above the bars
    ax.set_ylabel("seconds per optimizer step (median)")
    ax.set_title(f"DPO step, {result['config']['tokens_per_step']} tokens, {result['machine']['threads']} threads")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
