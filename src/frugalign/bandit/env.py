"""A linear contextual dueling bandit with a controlled sub-optimality gap.

There are `n_contexts` contexts, each with `n_actions` actions and feature vectors phi(x, a) in R^d.
The reward is r*(x, a) = <theta*, phi(x, a)>, hidden from the learner; feedback on a duel is
Bradley-Terry: P(a1 beats a2) = sigma(r*(x, a1) - r*(x, a2)).

Construction: in a random orthonormal basis Q, phi(x, a) = Q [r(x, a), u(x, a)] and theta* = Q e_1,
so r* = r exactly. In every context the best action has reward 1/2 and every other action at most
1/2 - Delta; one context has an action at exactly 1/2 - Delta, so the smallest gap over all contexts is
Delta. The other coordinates u are Gaussian (scale 1/sqrt(d)): they carry no reward but make the
learner estimate all of theta.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DuelingBandit:
    features: np.ndarray  # [n_contexts, n_actions, d]
    theta_star: np.ndarray  # [d]
    gap: float

    @property
    def rewards(self) -> np.ndarray:
        return self.features @ self.theta_star  # [n_contexts, n_actions]

    @property
    def gaps(self) -> np.ndarray:
        """Sub-optimality of each action: r*(x, a*) - r*(x, a) >= 0."""
        r = self.rewards
        return r.max(axis=1, keepdims=True) - r


def make_bandit(d: int, gap: float, n_contexts: int = 16, n_actions: int = 8, seed: int = 0) -> DuelingBandit:
    rng = np.random.default_rng(seed)
    reward = rng.uniform(-0.5, 0.5 - gap, size=(n_contexts, n_actions))
    best = rng.integers(n_actions, size=n_contexts)
    reward[np.arange(n_contexts), best] = 0.5
    # the context with the smallest gap: its second-best action is exactly Delta behind
    second = (best[0] + 1) % n_actions
    reward[0, second] = 0.5 - gap
    noise = rng.normal(0.0, 1.0 / np.sqrt(d), size=(n_contexts, n_actions, d - 1))
    local = np.concatenate([reward[..., None], noise], axis=-1)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return DuelingBandit(features=local @ q.T, theta_star=q[:, 0].copy(), gap=gap)
