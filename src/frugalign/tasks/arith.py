"""`arith`: answer `a+b=` prompts. Verifiable-answer alignment in miniature.

The base policy is pre-trained on a noisy corpus: the right sum half of the time, a near miss (the
sum plus or minus 1 to 3) or a garbled string otherwise; so it knows the answer but often does not
say it. Gold reward: 1 for the exact sum; for another number, 0.5 * max(0, 1 - |error| / 10); -1 for
anything that is not a number.
"""

from __future__ import annotations

import random

from frugalign.tasks.base import TaskSpec, split_prompts
from frugalign.tasks.tokenizers import char_tokenizer

MAX_OPERAND = 49


def gold_reward(prompt: str, response: str) -> float:
    a, b = prompt.rstrip("=").split("+")
    answer = response.strip()
    if not answer.isdigit():
        return -1.0
    error = abs(int(answer) - (int(a) + int(b)))
    return 1.0 if error == 0 else 0.5 * max(0.0, 1.0 - error / 10)


def noisy_answer(total: int, rng: random.Random) -> str:
    u = rng.random()
    if u < 0.5:
        return str(total)
    if u < 0.8:
        return str(max(0, total + rng.choice([-3, -2, -1, 1, 2, 3])))
    return "".join(rng.choice("0123456789+=") for _ in range(rng.randint(0, 3))) + "="  # never a number


def spec(seed: int, quick: bool) -> TaskSpec:
    rng = random.Random(seed)
    prompts = [f"{a}+{b}=" for a in range(MAX_OPERAND + 1) for b in range(MAX_OPERAND + 1)]
    corpus = [{"prompt": p, "completion": noisy_answer(sum(map(int, p[:-1].split("+"))), rng)}
              for _ in range(8) for p in prompts]
    n_train, n_eval = (128, 64) if quick else (512, 128)
    train, held = split_prompts(prompts, n_train, n_eval, seed)
    demos = [{"prompt": p, "completion": str(sum(map(int, p[:-1].split("+"))))} for p in train]
    return TaskSpec("arith", char_tokenizer("0123456789+="), corpus, train, held, demos, gold_reward,
                    max_new_tokens=5, steps=400 if quick else 1200, hidden_size=96, num_layers=2,
                    # lr far above the paper's 5e-7: these models are small and trained from scratch
                    settings={"learning_rate": 5e-4, "beta": 0.1, "batch_size": 16, "num_epochs": 3})
