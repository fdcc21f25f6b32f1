"""`frugalign bench throughput`: seconds per DPO optimizer step, frugalign against TRL's DPOTrainer
and against the floor, on the same model, pairs, lengths, optimizer, dtype, threads and machine, in one run.

- frugalign: the real `train_dpo` (engine + recipe); the step time is the engine's own measurement.
- trl: `DPOTrainer` (optional extra `trl-bench`) at its best settings for the same work (`trl_config`),
  timed by a callback around each optimizer step.
- floor: bare PyTorch: one policy forward+backward and one reference forward over the padded
  chosen and rejected rows, then AdamW: what a straightforward implementation does, the yardstick
  for frugalign's pair layout (below it where the layout computes less).
Each is run with a live reference model and with reference log-probs precomputed before training
(the floor then skips its reference forward). Each such leg runs in a process of its own (`in_child`),
which also gives its peak memory. The legs run interleaved, A B C A B C ..., for `--rounds` rounds, so
that load from other work on the machine falls on every leg alike; warm-up steps are excluded, and each
leg reports the median and interquartile range of its timed steps over all rounds.

`--ablation` also times bare steps (live reference) with each trick of frugalign's pair layout on or
off, so that what each one gives is measured rather than inferred (see `LAYOUTS`), and on CUDA the
FlexAttention layouts too (`FLEX_LAYOUTS`).
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from frugalign.config import load_config
from frugalign.console import console
from frugalign.data import PreferenceExample, tokenize_preferences
from frugalign.errors import UserError
from frugalign.results import machine_info, write_results

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
# and on CUDA only (PyTorch has no FlexAttention backward on the CPU), the library's FlexAttention layouts:
#   flex                     the shared-prefix rows masked by a BlockMask (`--shared-prefix flex`)
#   flex-packed              every pair in one row, masked by a BlockMask (`--shared-prefix packed`)
LAYOUTS = ("padded", "padded-response-head", "shared-prefix-full-head", "shared-prefix", "packed")
FLEX_LAYOUTS = ("flex", "flex-packed")
ROUNDS = 3


@dataclass(frozen=True)
class Leg:
    """One timed setting of a model: a method (`frugalign`, `frugalign-topN`, `floor`, `trl`, or
    `frugalign-layout` with one of `ablation_layouts()`) with a live or a precomputed reference."""
    model: str
    method: str
    precomputed: bool
    layout: str | None = None
    trainable_layers: int = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny model only, few steps")
    parser.add_argument("--models", nargs="+", choices=["tiny-llama", "smollm2"], default=None,
                        help="default: both (quick: tiny-llama)")
    parser.add_argument("--pairs", type=int, default=4, help="pairs per optimizer step")
    parser.add_argument("--prompt-tokens", type=int, default=125, help="tokens of each prompt")
    parser.add_argument("--response-tokens", type=int, default=75, help="tokens of each response, EOS included")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 5; quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2; quick 1)")
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help="every leg runs once per round, the legs interleaved (A B C A B C ...)")
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


# Every timer below trains the `model` it is given (no copy of the policy: a leg's peak memory is what
# the method itself holds), so a caller gives each timer a model of its own.


def time_frugalign(model, tokenizer, rows, precomputed: bool, steps: int, warmup: int, lr: float = LR,
                   precision: str = "fp32", trainable_layers: int = 0) -> list[float]:
    from frugalign.options import DPOConfig
    from frugalign.training.dpo import train_dpo

    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(DPOConfig, output_dir=tmp, learning_rate=lr, batch_size=len(rows), max_steps=warmup + steps,
                             beta=BETA, mixed_precision="no" if precision == "fp32" else "bf16",
                             warmup_ratio=0.0, lr_scheduler="constant", max_grad_norm=0.0, logging_steps=1,
                             reference="precomputed" if precomputed else "copy", save_total_limit=1,
                             trainable_layers=trainable_layers)
        train_dpo(config, model, tokenizer, [dict(r) for r in rows])
        lines = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    return [x["step_seconds"] for x in lines if "step_seconds" in x][warmup:]


def time_bare(model, score, precomputed: bool, steps: int, warmup: int, lr: float = LR, precision: str = "fp32") -> list[float]:
    """Seconds of bare DPO steps: `score(model) -> (chosen, rejected)` summed log-probs for the policy
    (with gradients) and for a frozen reference copy (without), or, if precomputed, for the policy once
    beforehand (before its first update it is the reference: no copy is kept, as in the recipe);
    the sigmoid loss, backward, AdamW."""
    import torch

    policy = model.to(device())
    if precomputed:
        with torch.no_grad(), autocast(precision):
            cached = score(policy.eval())
    else:
        reference = copy.deepcopy(policy).eval().requires_grad_(False)
    policy.train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr)
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
    """`model -> (chosen, rejected)` summed response log-probs in one of `LAYOUTS` or `FLEX_LAYOUTS` (those
    for a model running FlexAttention); all give the same values, they differ in what is computed."""
    import torch

    from frugalign.logprobs import additive_mask, pair_batch, pair_logps, sequence_logps, token_logps

    n = len(rows)
    if layout == "padded":
        t = on_device(padded_rows(rows, pad_id))

        def score(model):
            sums = sequence_logps(model, t["input_ids"], t["attention_mask"], t["loss_mask"]).sum
            return sums[:n], sums[n:]
        return score
    library = {"shared-prefix": "shared-prefix", "padded-response-head": "padded", "flex": "flex", "flex-packed": "packed"}
    if layout in library:  # the library's own code paths, as the recipe calls them
        t = on_device(pair_batch([r["prompt_ids"] for r in rows], [r["chosen_ids"] for r in rows],
                                 [r["rejected_ids"] for r in rows], pad_id, library[layout]))
        return lambda model: tuple(x.sum for x in pair_logps(model, t, model.get_output_embeddings()))
    t = pair_batch([r["prompt_ids"] for r in rows], [r["chosen_ids"] for r in rows],
                   [r["rejected_ids"] for r in rows], pad_id, "shared-prefix")
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


def trl_config(output_dir: str, batch_size: int, max_steps: int, precomputed: bool, lr: float = LR,
               precision: str = "fp32"):
    """TRL's `DPOConfig` at its best for the work the other legs do (read from TRL 1.16's DPOConfig and
    DPOTrainer; `trl-bench` pins 1.x):
    - gradient checkpointing off (TRL's default is on): the other legs keep their activations, and
      recomputing them only costs time;
    - `precompute_ref_log_probs` as the leg's reference, like frugalign's `reference="precomputed"`;
    - TRL's own "logits on responses only" is its fused LM head, always on in 1.x (it replaced
      `use_logits_to_keep`, which 1.16 no longer accepts): log-probs without the full logits, projected
      in tiles on the response positions only where Triton runs (CUDA), on every position otherwise;
    - `padding_free` stays off: since its DPO refactor TRL 1.16 warns and pads anyway, and it needed
      FlashAttention 2 or 3 besides.
    No truncation (`max_length` above every row), no logging or saving inside the timed steps, fp32 or
    bf16 autocast as the other legs."""
    import torch
    from trl import DPOConfig as TRLConfig

    return TRLConfig(output_dir=output_dir, per_device_train_batch_size=batch_size, max_steps=max_steps,
                     learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=0.0, beta=BETA,
                     max_length=4096, precompute_ref_log_probs=precomputed, gradient_checkpointing=False,
                     padding_free=False, report_to=[], save_strategy="no", logging_steps=1000,
                     use_cpu=not torch.cuda.is_available(), bf16=precision == "bf16", dataloader_num_workers=0,
                     disable_tqdm=True, seed=0)


def time_trl(model, tokenizer, examples, precomputed: bool, steps: int, warmup: int, lr: float = LR,
             precision: str = "fp32") -> list[float]:
    require_trl()
    import datasets
    from transformers import TrainerCallback
    from trl import DPOTrainer

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_begin(self, args, state, control, **kw):
            self.began = clock()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(clock() - self.began)

    data = datasets.Dataset.from_list([{"prompt": e.prompt, "chosen": e.chosen, "rejected": e.rejected} for e in examples])
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        args = trl_config(tmp, len(examples), warmup + steps, precomputed, lr, precision)
        # repeat the pairs so the trainer's data loader never runs dry
        trainer = DPOTrainer(model=model, ref_model=None if precomputed else copy.deepcopy(model),
                             args=args, train_dataset=datasets.concatenate_datasets([data] * (warmup + steps)),
                             processing_class=tokenizer, callbacks=[timer])
        trainer.train()
    return timer.times[warmup:]


def legs(name: str, trl: bool, ablation: bool, trainable_layers: int = 0) -> list[Leg]:
    """Every leg of one model: each method with a live and with a precomputed reference, then the layout
    ablation."""
    methods = ["frugalign", "floor"] + (["trl"] if trl else []) + (
        [f"frugalign-top{trainable_layers}"] if trainable_layers else [])
    out = [Leg(name, m, pre, trainable_layers=trainable_layers if m.startswith("frugalign-top") else 0)
           for pre in (False, True) for m in methods]
    return out + ([Leg(name, "frugalign-layout", False, layout) for layout in ablation_layouts()] if ablation else [])


def ablation_layouts() -> tuple[str, ...]:
    """The ablation's layouts on this machine: a leg that cannot train here is not offered."""
    import torch

    return LAYOUTS + (FLEX_LAYOUTS if torch.cuda.is_available() else ())


def interleave(legs: list[Leg], rounds: int) -> list[tuple[int, Leg]]:
    """(round, leg) in running order: every leg once per round, A B C A B C ...: the same computation timed
    twice in one run has differed by 43% as the machine's load drifted, so no leg may have all its steps
    in one stretch of time."""
    return [(r, leg) for r in range(rounds) for leg in legs]


def time_leg(leg: Leg, load, tokenizer, examples, rows, steps: int, warmup: int, precision: str, threads: int) -> dict:
    """A leg's timed steps, parameter count and peak memory; meant for a process of its own (`in_child`).
    The model is loaded here, and the timer trains it: the process holds what the method holds."""
    import resource

    import torch

    torch.set_num_threads(threads)  # the parent's, for every leg alike
    model = load(leg.model, tokenizer)
    parameters = sum(p.numel() for p in model.parameters())
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    if leg.method == "trl":
        times = time_trl(model, tokenizer, examples, leg.precomputed, steps, warmup, precision=precision)
    elif leg.method == "floor":
        times = time_floor(model, rows, tokenizer.pad_token_id, leg.precomputed, steps, warmup, precision=precision)
    elif leg.method == "frugalign-layout":
        if leg.layout in FLEX_LAYOUTS:
            model.set_attn_implementation("flex_attention")  # as the recipe does: only FlexAttention reads a BlockMask
        times = time_bare(model, layout_scorer(leg.layout, rows, tokenizer.pad_token_id), leg.precomputed, steps,
                          warmup, precision=precision)
    else:
        times = time_frugalign(model, tokenizer, rows, leg.precomputed, steps, warmup, precision=precision,
                               trainable_layers=leg.trainable_layers)
    return {"times": times, "parameters": parameters,
            # the peak resident set of this process since it was forked (KiB on Linux); the libraries'
            # share, imported before the fork, is the same for every leg
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


def in_child(fn, *args):
    """`fn(*args)` in a new process, its result returned. A process's peak RSS never goes down, and the
    allocator keeps memory a finished leg freed, so measured in one process a leg's peak would include
    the previous legs'; in a child of its own it is the leg's alone (a forked child starts its peak
    afresh). The children fork from a server that has imported torch, transformers and TRL once (cheap
    children, one baseline for all) and never touched CUDA (so the children may)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "transformers", "datasets", "trl", "frugalign.training.dpo",
                                    "frugalign.bench.throughput"])
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def spread(times: list[float]) -> list[float]:
    """The interquartile range [q1, q3] of a leg's step times."""
    if len(times) == 1:
        return [times[0], times[0]]
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return [q1, q3]


def measure(name: str, load, tokenizer, examples, rows, steps: int, warmup: int, trl: bool, ablation: bool,
            precision: str = "fp32", trainable_layers: int = 0, rounds: int = ROUNDS) -> list[dict]:
    """Runs (docs/benchmarks.md schema) of every leg of one model, the legs interleaved over `rounds`. The
    1-minute load average at the start of each of a leg's rounds is kept with it: other work shows there."""
    import torch

    model_legs = legs(name, trl, ablation, trainable_layers)
    done: dict[Leg, list[dict]] = {leg: [] for leg in model_legs}
    for r, leg in interleave(model_legs, rounds):
        load_before = os.getloadavg()[0]
        got = in_child(time_leg, leg, load, tokenizer, examples, rows, steps, warmup, precision, torch.get_num_threads())
        done[leg].append(got | {"load_avg_1min": load_before})
        console.print(f"{name} {r + 1}/{rounds} {'precomputed' if leg.precomputed else 'live'} {leg.method}"
                      f"{' ' + leg.layout if leg.layout else ''}: {statistics.median(got['times']):.3f} s/step, "
                      f"{got['peak_rss_mb']:.0f} MB")
    runs = []
    for leg, per_round in done.items():
        times = [t for got in per_round for t in got["times"]]
        params = {"model": name, "reference": "precomputed" if leg.precomputed else "live",
                  "parameters": per_round[0]["parameters"]}
        if leg.layout is not None:
            params["layout"] = leg.layout
        cuda = [got["peak_cuda_mb"] for got in per_round if got["peak_cuda_mb"] is not None]
        runs.append({"method": leg.method, "seed": 0, "params": params, "step_s": statistics.median(times),
                     "step_iqr_s": spread(times), "round_step_s": [statistics.median(got["times"]) for got in per_round],
                     "step_times_s": [got["times"] for got in per_round],
                     "peak_rss_mb": max(got["peak_rss_mb"] for got in per_round),
                     "peak_cuda_mb": max(cuda) if cuda else None,
                     "load_avg_1min": [got["load_avg_1min"] for got in per_round]})
    return runs


def summarise(runs: list[dict]) -> dict:
    """Per model and reference, each method's median, interquartile range and peaks, and the ratios of
    medians of this one run."""
    summary = {}
    for r in runs:
        if r["method"] != "frugalign-layout":
            entry = summary.setdefault(f"{r['params']['model']}/{r['params']['reference']}", {})
            entry[f"{r['method']}_step_s"] = r["step_s"]
            entry[f"{r['method']}_iqr_s"] = r["step_iqr_s"]
            entry[f"{r['method']}_peak_rss_mb"] = r["peak_rss_mb"]
            entry[f"{r['method']}_peak_cuda_mb"] = r["peak_cuda_mb"]
    for entry in summary.values():
        entry["floor_over_frugalign"] = entry["floor_step_s"] / entry["frugalign_step_s"]
        for key in [k for k in entry if k.startswith("frugalign-top") and k.endswith("_step_s")]:
            entry[f"frugalign_over_{key.removesuffix('_step_s')}"] = entry["frugalign_step_s"] / entry[key]
        if "trl_step_s" in entry:
            entry["trl_over_frugalign"] = entry["trl_step_s"] / entry["frugalign_step_s"]
    layouts = {}
    for r in runs:
        if r["method"] == "frugalign-layout":
            layouts.setdefault(r["params"]["model"], {})[r["params"]["layout"]] = r
    for model, by in layouts.items():
        summary[f"{model}/layouts"] = {f"{k}_step_s": r["step_s"] for k, r in by.items()} | {
            f"{k}_iqr_s": r["step_iqr_s"] for k, r in by.items()} | {
            f"padded_over_{k}": by["padded"]["step_s"] / r["step_s"] for k, r in by.items() if k != "padded"}
    return summary


def bench(model_names: list[str], tokenizer, pairs: int, prompt_tokens: int, response_tokens: int, steps: int,
          warmup: int, trl: bool, ablation: bool, mode: str, load=load_model, precision: str = "fp32",
          trainable_layers: int = 0, rounds: int = ROUNDS) -> dict:
    """The whole bench as a result dict (docs/benchmarks.md schema); `load(name, tokenizer)` gives each model,
    in each leg's own process (so it must be a module-level function)."""
    examples = make_pairs(tokenizer, pairs, prompt_tokens, response_tokens)
    rows, _ = tokenize_preferences(examples, tokenizer, 4096, 4096, "bench pairs", "error")
    # distinct tokens of a step (each prompt once); the padded layout computes each prompt twice
    tokens = sum(len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)
    runs = []
    for name in model_names:
        runs += measure(name, load, tokenizer, examples, rows, steps, warmup, trl, ablation, precision,
                        trainable_layers, rounds)
    return {"bench": "throughput", "task": "synthetic-pairs", "mode": mode, "seeds": [0],
            "config": {"models": model_names, "pairs": pairs, "prompt_tokens": prompt_tokens,
                       "response_tokens": response_tokens, "tokens_per_step": tokens,
                       "padded_tokens_per_step": padded_rows(rows, tokenizer.pad_token_id)["input_ids"].numel(),
                       "steps": steps, "warmup": warmup, "rounds": rounds, "optimizer": "adamw", "learning_rate": LR,
                       "beta": BETA, "precision": precision, "device": str(device()), "frugalign_layout": "shared-prefix",
                       "trainable_layers": trainable_layers,
                       "trl_gradient_checkpointing": False, "trl_padding_free": False,
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
    if args.rounds < 1:
        raise UserError(f"--rounds {args.rounds}: every leg must run at least once (default {ROUNDS})")
    if not args.skip_trl:
        require_trl()
    names = args.models or (["tiny-llama"] if args.quick else ["tiny-llama", "smollm2"])
    steps = args.steps or (2 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    tokenizer = models.load_tokenizer(None)  # SmolLM2's tokenizer for both models: same token counts
    result = bench(names, tokenizer, args.pairs, args.prompt_tokens, args.response_tokens, steps, warmup,
                   trl=not args.skip_trl, ablation=args.ablation, mode="quick" if args.quick else "full",
                   precision=args.precision, trainable_layers=args.trainable_layers, rounds=args.rounds)
    out = write_results(args.out, result)
    plot(result, out.with_suffix(".png"))
    for table in tables(result):
        console.print(table)
    console.print(f"results: {out} and {out.with_suffix('.png')}")
    return 0


def median_iqr(entry: dict, method: str) -> str:
    q1, q3 = entry[f"{method}_iqr_s"]
    return f"{entry[f'{method}_step_s']:.2f} ({q1:.2f}-{q3:.2f})"


def peak_mb(entry: dict, method: str, cuda: bool) -> str:
    if f"{method}_peak_rss_mb" not in entry:
        return "-"
    rss = f"{entry[f'{method}_peak_rss_mb']:.0f}"
    return f"{entry[f'{method}_peak_cuda_mb']:.0f} / {rss}" if cuda else rss


def tables(result: dict) -> list[Table]:
    """The comparison (seconds per step and ratios), the peak memory of each leg and, when measured, the
    layout ablation."""
    c = result["config"]
    params = {r["params"]["model"]: r["params"]["parameters"] for r in result["runs"]}
    rounds = f"{c['rounds']} interleaved rounds of {c['steps']} steps"
    main = Table(title=f"DPO step, s/step: median (interquartile range) over {rounds} · {c['pairs']} pairs, "
                       f"{c['tokens_per_step']} tokens ({c['padded_tokens_per_step']} padded) · "
                       f"{result['machine']['threads']} threads")
    for col in ("model", "reference", "TRL", "floor", "frugalign", "TRL / frugalign", "floor / frugalign"):
        main.add_column(col, justify="left" if col in ("model", "reference") else "right")
    cuda = result["machine"]["device"] == "cuda"
    memory = Table(title="peak memory of each leg's process, MB: " + ("CUDA allocated / RSS" if cuda else "RSS"))
    for col in ("model", "reference", "TRL", "floor", "frugalign"):
        memory.add_column(col, justify="left" if col in ("model", "reference") else "right")
    ablation = Table(title="layout ablation: bare DPO step, live reference, s/step: median (interquartile range)")
    for col in ("model", "layout", "s/step", "padded / layout"):
        ablation.add_column(col, justify="left" if col in ("model", "layout") else "right")
    for key, e in result["summary"].items():
        model, reference = key.split("/")
        label = f"{model} ({params[model] / 1e6:.1f}M)"
        if reference == "layouts":
            for layout in [x for x in LAYOUTS + FLEX_LAYOUTS if f"{x}_step_s" in e]:
                ratio = e.get(f"padded_over_{layout}", 1.0)
                ablation.add_row(label, layout, median_iqr(e, layout), f"{ratio:.2f}x")
            continue
        trl = "trl_step_s" in e
        main.add_row(label, reference, median_iqr(e, "trl") if trl else "-", median_iqr(e, "floor"),
                     median_iqr(e, "frugalign"), f"{e['trl_over_frugalign']:.2f}x" if trl else "-",
                     f"{e['floor_over_frugalign']:.2f}x")
        memory.add_row(label, reference, *(peak_mb(e, m, cuda) for m in ("trl", "floor", "frugalign")))
    return [main, memory] + ([ablation] if ablation.row_count else [])


def plot(result: dict, path: Path) -> None:
    """Median seconds per step with the interquartile range, and each leg's peak memory, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in result["summary"] if not g.endswith("/layouts")]
    timed = list(dict.fromkeys(r["method"] for r in result["runs"]))
    methods = [m for m in ("trl", "floor", "frugalign") if m in timed] + [m for m in timed if m.startswith("frugalign-top")]
    labels = {"trl": "TRL DPOTrainer", "floor": "floor: a plain PyTorch step on padded rows (forward, backward, AdamW)",
              "frugalign": "frugalign"}
    cuda = result["machine"]["device"] == "cuda"
    fig, (time_ax, memory_ax) = plt.subplots(1, 2, figsize=(max(12, 4.4 * len(groups)), 4.8))
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        entries = [result["summary"][g] for g in groups]
        x = [i + k * width for i in range(len(groups))]
        label = labels.get(method, f"frugalign, only the last {method.removeprefix('frugalign-top')} blocks trained")
        medians = [e.get(f"{method}_step_s", 0.0) for e in entries]
        quartiles = [e.get(f"{method}_iqr_s", [m, m]) for e, m in zip(entries, medians)]
        bars = time_ax.bar(x, medians, width, label=label,
                           yerr=[[m - q[0] for m, q in zip(medians, quartiles)], [q[1] - m for m, q in zip(medians, quartiles)]],
                           capsize=2)
        time_ax.bar_label(bars, fmt="%.2f", fontsize=7)
        peaks = [e.get(f"{method}_peak_{'cuda' if cuda else 'rss'}_mb", 0.0) for e in entries]
        memory_ax.bar_label(memory_ax.bar(x, peaks, width, label=label), fmt="%.0f", fontsize=7)
    for ax in (time_ax, memory_ax):
        ax.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(groups))],
                      [g.replace("/", "\n") + " reference" for g in groups])
        ax.set_ylim(0, 1.3 * ax.get_ylim()[1])  # room for the legend above the bars
    time_ax.set_ylabel("seconds per optimizer step (median; bars: interquartile range)")
    memory_ax.set_ylabel("peak CUDA memory allocated (MB)" if cuda else "peak RSS of the leg's process (MB)")
    c = result["config"]
    # results of the bench before it interleaved its legs and measured memory (no `rounds`) are redrawn as they are
    runs = f"{c['rounds']} interleaved rounds" if "rounds" in c else "one run per leg, not interleaved"
    time_ax.set_title(f"DPO step, {c['tokens_per_step']} tokens, {result['machine']['threads']} threads, {runs}")
    memory_ax.set_title("peak memory per leg" if "rounds" in c else "peak memory: not measured by this older run")
    time_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
