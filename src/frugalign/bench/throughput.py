"""`frugalign bench throughput`: seconds per DPO optimizer step, frugalign against TRL's DPOTrainer
and against the floor, on the same model, pairs, lengths, optimizer and machine, in one run.

- frugalign: the real `train_dpo` (engine + recipe); the step time is the engine's own measurement.
- trl: `DPOTrainer` (optional extra `trl-bench`), timed by a callback around each optimizer step.
- floor: bare PyTorch: one policy forward+backward and one reference forward over the padded
  chosen and rejected rows, then AdamW. What a straightforward implementation cannot go below.
Each is run with a live reference model and with reference log-probs precomputed before training
(the floor then skips its reference forward). Warm-up steps are excluded; the median is reported.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from frugalign import models
from frugalign.bench.results import machine_info, write_results
from frugalign.data import PreferenceExample, tokenize_preferences
from frugalign.engine import console, summary_table
from frugalign.errors import UserError
from frugalign.logprobs import pad_sequences, sequence_logps
from frugalign.recipes.dpo import DPOConfig, train_dpo

WORDS = ("the quick brown fox jumps over a lazy dog while seven wise owls count silver stars above "
         "quiet rivers and distant mountains under an autumn sky").split()


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
    parser.add_argument("--ablation", action="store_true", help="also time frugalign with the padded pair layout")
    parser.add_argument("--out", default="bench-throughput.json", help="result JSON (a PNG is written beside it)")


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
    if name == "smollm2":
        return models.load_causal_lm(None)
    # about 28M parameters with SmolLM2's 49k vocabulary (tied embeddings)
    return models.tiny_causal_lm(len(tokenizer), seed=0, hidden_size=384, num_layers=4, num_heads=6,
                                 intermediate_size=1536, tie_word_embeddings=True, max_positions=2048,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)


def time_frugalign(model, tokenizer, rows, precomputed: bool, steps: int, warmup: int, lr: float,
                   shared_prefix: bool = True) -> list[float]:
    import json

    with tempfile.TemporaryDirectory() as tmp:
        config = DPOConfig(output_dir=tmp, learning_rate=lr, batch_size=len(rows), max_steps=warmup + steps,
                           warmup_ratio=0.0, lr_scheduler="constant", max_grad_norm=0.0, logging_steps=1,
                           reference="precomputed" if precomputed else "copy", save_total_limit=1,
                           shared_prefix=shared_prefix)
        train_dpo(config, copy.deepcopy(model), tokenizer, [dict(r) for r in rows])
        lines = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    return [x["step_seconds"] for x in lines if "step_seconds" in x][warmup:]


def time_floor(model, rows, pad_id: int, precomputed: bool, steps: int, warmup: int, lr: float) -> list[float]:
    policy = copy.deepcopy(model).train()
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr)
    prompts = [r["prompt_ids"] for r in rows]
    t = pad_sequences(prompts + prompts, [r["chosen_ids"] for r in rows] + [r["rejected_ids"] for r in rows], pad_id)
    n = len(rows)
    with torch.no_grad():
        cached = sequence_logps(reference, t["input_ids"], t["attention_mask"], t["loss_mask"]).sum
    times = []
    for _ in range(warmup + steps):
        began = time.perf_counter()
        lp = sequence_logps(policy, t["input_ids"], t["attention_mask"], t["loss_mask"]).sum
        if precomputed:
            ref = cached
        else:
            with torch.no_grad():
                ref = sequence_logps(reference, t["input_ids"], t["attention_mask"], t["loss_mask"]).sum
        margin = (lp[:n] - ref[:n]) - (lp[n:] - ref[n:])
        loss = -torch.nn.functional.logsigmoid(0.1 * margin).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - began)
    return times[warmup:]


def time_trl(model, tokenizer, examples, precomputed: bool, steps: int, warmup: int, lr: float) -> list[float]:
    try:
        import datasets
        from transformers import TrainerCallback
        from trl import DPOConfig as TRLConfig
        from trl import DPOTrainer
    except ImportError:
        raise UserError("the TRL comparison needs TRL: pip install 'frugalign[trl-bench]' (or pass --skip-trl)") from None

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
                         learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=0.0, beta=0.1,
                         max_length=4096, precompute_ref_log_probs=precomputed, report_to=[], save_strategy="no",
                         logging_steps=1000, use_cpu=not torch.cuda.is_available(), bf16=False,
                         dataloader_num_workers=0, disable_tqdm=True, seed=0)
        # repeat the pairs so the trainer's data loader never runs dry
        trainer = DPOTrainer(model=copy.deepcopy(model), ref_model=None if precomputed else copy.deepcopy(model),
                             args=args, train_dataset=datasets.concatenate_datasets([data] * (warmup + steps)),
                             processing_class=tokenizer, callbacks=[timer])
        trainer.train()
    return timer.times[warmup:]


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    names = args.models or (["tiny-llama"] if args.quick else ["tiny-llama", "smollm2"])
    steps = args.steps or (2 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    tokenizer = models.load_tokenizer(None)  # SmolLM2's tokenizer for both models: same token counts
    examples = make_pairs(tokenizer, args.pairs, args.prompt_tokens, args.response_tokens)
    rows, _ = tokenize_preferences(examples, tokenizer, 4096, 4096, "bench pairs", "error")
    # distinct tokens of a step (each prompt once); the padded layout computes each prompt twice
    tokens = sum(len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)
    lr = 1e-6
    runs = []
    for name in names:
        model = load_model(name, tokenizer)
        n_params = sum(p.numel() for p in model.parameters())
        for precomputed in (False, True):
            reference = "precomputed" if precomputed else "live"
            measured = {"frugalign": time_frugalign(model, tokenizer, rows, precomputed, steps, warmup, lr),
                        "floor": time_floor(model, rows, tokenizer.pad_token_id, precomputed, steps, warmup, lr)}
            if args.ablation:  # the same recipe with the padded layout: what the shared prefix gives
                measured["frugalign-padded"] = time_frugalign(model, tokenizer, rows, precomputed, steps, warmup, lr,
                                                              shared_prefix=False)
            if not args.skip_trl:
                measured["trl"] = time_trl(model, tokenizer, examples, precomputed, steps, warmup, lr)
            for method, times in measured.items():
                runs.append({"method": method, "seed": 0, "params": {"model": name, "reference": reference,
                                                                      "parameters": n_params},
                             "step_s": statistics.median(times), "step_times_s": times, "tokens_per_step": tokens})
                console.print(f"{name} · {reference} reference · {method}: {statistics.median(times):.3f} s/step")
        del model
    summary = {}
    for name in names:
        for reference in ("live", "precomputed"):
            by = {r["method"]: r["step_s"] for r in runs
                  if r["params"]["model"] == name and r["params"]["reference"] == reference}
            entry = {f"{m}_step_s": v for m, v in by.items()}
            entry["floor_over_frugalign"] = by["floor"] / by["frugalign"]
            if "frugalign-padded" in by:
                entry["padded_over_shared_prefix"] = by["frugalign-padded"] / by["frugalign"]
            if "trl" in by:
                entry["trl_over_frugalign"] = by["trl"] / by["frugalign"]
            summary[f"{name}/{reference}"] = entry
    result = {"bench": "throughput", "task": "synthetic-pairs", "mode": "quick" if args.quick else "full", "seeds": [0],
              "config": {"pairs": args.pairs, "prompt_tokens": args.prompt_tokens, "response_tokens": args.response_tokens,
                         "tokens_per_step": tokens, "steps": steps, "warmup": warmup, "optimizer": "adamw",
                         "precision": "fp32", "frugalign_layout": "shared-prefix"},
              "machine": machine_info(), "runs": runs, "summary": summary}
    out = write_results(args.out, result)
    plot(result, out.with_suffix(".png"))
    table = {}
    for key, entry in summary.items():
        ratio = f"TRL/frugalign {entry['trl_over_frugalign']:.2f}x, " if "trl_over_frugalign" in entry else ""
        table[key] = (f"frugalign {entry['frugalign_step_s']:.2f} s · " + (f"trl {entry['trl_step_s']:.2f} s · " if
                      "trl_step_s" in entry else "") + f"floor {entry['floor_step_s']:.2f} s ({ratio}"
                      f"floor/frugalign {entry['floor_over_frugalign']:.2f}x)")
    console.print(summary_table(f"bench throughput · {args.pairs} pairs, {tokens} tokens a step", {**table, "results": str(out)}))
    return 0


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(result["summary"])
    methods = [m for m in ("trl", "floor", "frugalign-padded", "frugalign")
               if any(r["method"] == m for r in result["runs"])]
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(groups)), 4))
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        values = [result["summary"][g].get(f"{method}_step_s", 0.0) for g in groups]
        ax.bar([i + k * width for i in range(len(groups))], values, width, label=method)
    ax.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(groups))], groups)
    ax.set_ylabel("seconds per optimizer step (median)")
    ax.set_title(f"DPO step, {result['config']['tokens_per_step']} tokens, {result['machine']['threads']} threads")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
