"""What every gold-oracle task provides and the shared construction:
pre-train a tiny base policy with the SFT recipe, sample its pair pool, cache both on disk."""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from frugalign.stats import simulate_preference

if TYPE_CHECKING:  # loaded where a task is built: listing the tasks must not load transformers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast


@dataclass
class Task:
    """A task whose true reward is known: everything a bench needs to measure alignment."""

    name: str
    model: AutoModelForCausalLM  # the base (SFT) policy: imperfect and stochastic
    tokenizer: PreTrainedTokenizerFast
    train_prompts: list[str]
    eval_prompts: list[str]  # held out from alignment (not from pre-training)
    demos: list[dict] | Callable[[], list[dict]]  # {"prompt", "completion"} rows, or what makes them on first use
    pool: list[dict] | Callable[[], list[dict]]  # {"prompt", "response_a", "response_b"} sampled from the base policy
    reward_fn: Callable[[str, str], float]
    max_new_tokens: int
    settings: dict = field(default_factory=dict)  # DPO settings that suit the task: learning_rate, beta, batch_size, num_epochs
    eval_samples: int = 2  # samples per held-out prompt in a gold evaluation
    temperature: float = 1.0
    top_p: float = 1.0
    info: dict = field(default_factory=dict)

    @property
    def pair_pool(self) -> list[dict]:
        """Two responses of the base policy per train prompt (a pretrained model's are sampled on first use)."""
        if callable(self.pool):
            self.pool = self.pool()
        return self.pool

    @property
    def demonstrations(self) -> list[dict]:
        """Demonstrations for SFT, SPIN and AIHF; a task on a pretrained model samples them only when asked."""
        if callable(self.demos):
            self.demos = self.demos()
        return self.demos

    def gold_reward(self, prompt: str, response: str) -> float:
        return self.reward_fn(prompt, response)

    def gold_rewards(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        return np.array([self.reward_fn(p, r) for p, r in zip(prompts, responses)], dtype=float)

    def labelled_pool(self, tau: float, seed: int) -> tuple[list[dict], int]:
        """The pair pool labelled by the simulated annotator: ({prompt, chosen, rejected} rows, ties dropped)."""
        rng = np.random.default_rng(seed)
        rows, ties = [], 0
        for pair in self.pair_pool:
            a, b = pair["response_a"], pair["response_b"]
            label = simulate_preference(self.gold_reward(pair["prompt"], a), self.gold_reward(pair["prompt"], b), tau, rng)
            if label == 0:
                ties += 1
                continue
            chosen, rejected = (a, b) if label > 0 else (b, a)
            rows.append({"prompt": pair["prompt"], "chosen": chosen, "rejected": rejected})
        return rows, ties


@dataclass
class TaskSpec:
    """What a task is made of before it is built: the corpus its base policy is pre-trained on, its prompts,
    demonstrations, gold reward and settings."""

    name: str
    tokenizer: PreTrainedTokenizerFast
    corpus: list[dict]  # {"prompt", "completion"} pre-training rows (noisy on purpose)
    train_prompts: list[str]
    eval_prompts: list[str]
    demonstrations: list[dict]
    reward_fn: Callable[[str, str], float]
    max_new_tokens: int
    steps: int
    settings: dict
    hidden_size: int = 64
    num_layers: int = 2
    learning_rate: float = 3e-3


def build_task(spec: TaskSpec, seed: int, quick: bool, cache: Path | None) -> Task:
    """Pre-train (or load from the cache) the base policy, sample (or load) the pair pool."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from frugalign.generation import generate
    from frugalign.models import cache_dir as frugalign_cache

    root = Path(cache) if cache is not None else frugalign_cache() / "tasks"
    path = root / f"{spec.name}-seed{seed}-{'quick' if quick else 'full'}-v1"
    if not (path / "pool.json").exists():
        model = _pretrain(spec, seed)
        gens = generate(model, spec.tokenizer, spec.train_prompts, num_samples=2,
                        max_new_tokens=spec.max_new_tokens, seed=seed, description=f"{spec.name}: sampling pair pool")
        pool = [{"prompt": p, "response_a": a, "response_b": b}
                for p, (a, b) in zip(spec.train_prompts, gens.texts) if a != b]
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=root))
        model.save_pretrained(tmp)
        spec.tokenizer.save_pretrained(tmp)
        (tmp / "pool.json").write_text(json.dumps(pool))
        if path.exists():  # an incomplete earlier attempt
            shutil.rmtree(path)
        tmp.rename(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    pool = json.loads((path / "pool.json").read_text())
    return Task(spec.name, model, tokenizer, spec.train_prompts, spec.eval_prompts, spec.demonstrations, pool,
                spec.reward_fn, spec.max_new_tokens, settings=dict(spec.settings), info={"cache": str(path)})


def _pretrain(spec: TaskSpec, seed: int):
    """The base policy: SFT of a tiny Llama on the task's noisy corpus, with frugalign's own spec."""
    from frugalign.config import load_config
    from frugalign.data import Demonstration, tokenize_demonstrations
    from frugalign.models import tiny_causal_lm
    from frugalign.options import SFTConfig
    from frugalign.training.sft import train_sft

    tok = spec.tokenizer
    rows, _ = tokenize_demonstrations([Demonstration(r["prompt"], r["completion"]) for r in spec.corpus], tok,
                                      128, 128, f"{spec.name} corpus", "error")
    model = tiny_causal_lm(len(tok), seed=seed, hidden_size=spec.hidden_size, num_layers=spec.num_layers,
                           pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(SFTConfig, output_dir=tmp, learning_rate=spec.learning_rate, batch_size=64,
                             max_steps=spec.steps, lr_scheduler="cosine", warmup_ratio=0.05, seed=seed, logging_steps=50,
                             save_total_limit=1)
        model, _ = train_sft(config, model, tok, rows)
    return model.eval()


def split_prompts(prompts: list[str], n_train: int, n_eval: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    prompts = list(prompts)
    rng.shuffle(prompts)
    return prompts[:n_train], prompts[n_train:n_train + n_eval]
