"""APL's acquisition rule (Muldrew et al., "Active Preference Learning for Large Language Models", ICML 2024;
docs/algorithms.md, section 2): which unlabelled pool pairs to buy labels for next. Model-free: it sees the
numbers the policy gave, never the policy.

Two stages, as the paper's hybrid rule:
1. predictive entropy of the policy on a prompt, estimated from the pool's responses to it,
   H(x) ~ -mean_i log pi(y_i|x) / len(y_i) (per token, so long responses do not look uncertain);
   the `oversample * k` unlabelled pairs of the highest-entropy prompts are the candidates;
2. among them, the `k` pairs with the largest preference certainty |m|, m = beta * (u(a) - u(b)) the implicit
   reward margin ADPO thresholds. The opposite bet from ADPO, which asks about the pairs with the smallest |m|:
   a pair the policy is sure of and gets wrong teaches it most.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def prompt_entropies(responses: Iterable[tuple[str, str, float]]) -> dict[str, float]:
    """H(x) per prompt from (prompt, response, mean log-prob per token of the response) triples: minus the mean
    over the prompt's distinct responses (a response in several pairs counts once)."""
    per_prompt: dict[str, dict[str, float]] = {}
    for prompt, response, logp_per_token in responses:
        per_prompt.setdefault(prompt, {})[response] = logp_per_token
    return {prompt: -sum(seen.values()) / len(seen) for prompt, seen in per_prompt.items()}


def apl_acquire(pair_ids: list[str], entropy: list[float], margin: list[float], taken: set[str], k: int,
                oversample: float) -> list[str]:
    """The pairs to buy next, at most `k`, most certain first. `entropy[i]` and `margin[i]` belong to the pair
    `pair_ids[i]` (a pair may appear twice, in either order: |margin| is the same); pairs in `taken` (labelled
    or asked already) are never chosen. Ties go to the smaller id, so every process picks the same pairs."""
    if k <= 0:
        return []
    scores = {pid: (h, abs(m)) for pid, h, m in zip(pair_ids, entropy, margin) if pid not in taken}
    candidates = sorted(scores, key=lambda pid: (-scores[pid][0], pid))[:max(k, math.ceil(oversample * k))]
    return sorted(candidates, key=lambda pid: (-scores[pid][1], pid))[:k]
