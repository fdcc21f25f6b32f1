"""Gold reward of a policy's samples on held-out prompts, and its KL to a reference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from frugalign.stats import ci95

if TYPE_CHECKING:  # imported where used: `frugalign eval gold --help` must not load torch (cli.py)
    import torch


@dataclass
class GoldEval:
    mean: float
    ci95: float
    kl: float | None  # mean over samples of logp_pi(y|x) - logp_ref(y|x); None without a reference
    rewards: list[float]
    samples: list[dict]  # {"prompt", "response", "reward"}


def sample_kl(model, ref_model, prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int,
              batch_size: int = 64) -> float:
    """Monte-Carlo KL(pi || ref) from samples of pi: the mean of their log-ratios."""
    import torch  # here, not above: `frugalign eval gold --help` must not load torch (cli.py)

    from frugalign.logprobs import pad_sequences

    ratios = []
    with torch.no_grad():
        for start in range(0, len(prompt_ids), batch_size):
            t = pad_sequences(prompt_ids[start:start + batch_size], response_ids[start:start + batch_size], pad_id)
            lp, lr = (logps_on_device(m, t) for m in (model, ref_model))  # the two may live on different devices
            ratios += (lp - lr).tolist()
    return float(np.mean(ratios))


def logps_on_device(model, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed response log-probs (float32, on the CPU) with the batch moved to where `model` is."""
    from frugalign.logprobs import sequence_logps

    t = {k: v.to(next(model.parameters()).device) for k, v in t.items()}
    return sequence_logps(model, t["input_ids"], t["attention_mask"], t["loss_mask"]).sum.float().cpu()


def gold_eval(task, model, prompts: list[str], ref_model=None, samples_per_prompt: int = 2, seed: int = 0,
              progress: bool = True) -> GoldEval:
    """Sample with the task's settings, score with its gold reward; 95% interval over samples."""
    from frugalign.generation import generate

    was_training = model.training
    gens = generate(model, task.tokenizer, prompts, num_samples=samples_per_prompt, max_new_tokens=task.max_new_tokens,
                    temperature=task.temperature, top_p=task.top_p, seed=seed, progress=progress,
                    description=f"{task.name}: gold evaluation")
    flat_prompts = [p for p in prompts for _ in range(samples_per_prompt)]
    flat = [t for texts in gens.texts for t in texts]
    rewards = task.gold_rewards(flat_prompts, flat)
    kl = None
    if ref_model is not None:
        prompt_ids = [task.tokenizer(p)["input_ids"] for p in flat_prompts]
        response_ids = [ids for group in gens.token_ids for ids in group]
        kl = sample_kl(model, ref_model, prompt_ids, response_ids, task.tokenizer.pad_token_id)
    model.train(was_training)
    samples = [{"prompt": p, "response": r, "reward": float(x)} for p, r, x in zip(flat_prompts, flat, rewards)]
    return GoldEval(float(rewards.mean()), ci95(rewards), kl, rewards.tolist(), samples)


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="the policy to evaluate (a checkpoint trained on the task)")
    parser.add_argument("--task", choices=["arith", "sentiment", "review", "smol"], required=True, help="gold-oracle task")
    parser.add_argument("--samples-per-prompt", type=int, default=2, help="samples per held-out prompt")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (and the task's seed)")
    parser.add_argument("--out", default=None, help="result JSON (per-sample records included)")


def run(args) -> int:
    """`frugalign eval gold`: gold reward on the task's held-out prompts and KL to the task's base policy."""
    from frugalign import models
    from frugalign.console import console, summary_table
    from frugalign.results import write_results
    from frugalign.tasks import load_task

    task = load_task(args.task, seed=args.seed)
    model = models.load_causal_lm(args.model)
    ev = gold_eval(task, model, task.eval_prompts, ref_model=task.model, samples_per_prompt=args.samples_per_prompt,
                   seed=args.seed)
    rows = {"gold reward": f"{ev.mean:.3f} ± {ev.ci95:.3f} (95% interval over {len(ev.rewards)} samples)",
            "KL to the base policy": f"{ev.kl:.3f} nats"}
    if args.out:
        write_results(args.out, {"model": args.model, "task": args.task, "gold_reward": ev.mean, "gold_reward_ci95": ev.ci95,
                                 "kl": ev.kl, "samples": ev.samples})
        rows["results"] = args.out
    console.print(summary_table(f"eval gold · {args.task}", rows))
    return 0
