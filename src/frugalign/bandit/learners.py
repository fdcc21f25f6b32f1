"""APPO and its baselines, one loop for all four (they differ only in when they query).

Per round t: a context x_t (uniform), two actions y1, y2 ~ pi_t(.|x_t), z_t = phi(x_t,y1) - phi(x_t,y2).
- `appo`: query when ||z_t||_{Sigma^-1} > Gamma (uncertain comparisons only). Two variants, both off by
  default, try to keep the rule from locking the policy onto a wrong action whose duels it already deems
  certain: `explore` asks a duel of two different actions that the rule skips with this probability (a
  small forced-exploration share), and `gamma_shrinks` divides Gamma by sqrt(1 + log(1 + n/(d lambda)))
  after n queries, the growth of the self-normalised confidence radius with n: as the radius the rule
  must beat grows, the comparisons counted as certain must be more certain;
- `always`: query every round, the paper's baseline, which pays for duels of an action with itself too;
- `informative`: query every duel of two different actions (z_t != 0), the baseline APPO must beat: a
  duel of an action with itself teaches nothing, and no rule is needed to skip it;
- `random`: query with a fixed probability (set to APPO's measured rate, for an equal budget).
A query returns o_t ~ Bernoulli(sigma(<theta*, z_t>)) and adds z_t to Sigma = lambda I + sum z z^T.
theta_hat is the lambda-regularised logistic MLE on the queried rounds, solved again after every query
(Newton's method from the previous estimate, to convergence: one answer moves it little, so a few steps).
A cheaper online step between occasional refits under-weights the latest answers and makes a learner that
asks little lock more often (benchmarks/RESULTS.md, the APPO section). The policy is the proximal
update from the uniform initial policy with the current estimate, pi_t(a|x) ∝ exp(eta * t * <theta_hat_t,
phi(x,a)>): for a fixed theta_hat this is exactly t mirror-descent steps pi_{s+1} ∝ pi_s exp(eta <theta_hat,
phi>); using the current estimate for all of them (the follow-the-regularised-leader form) lets the policy
drop an early wrong estimate at once instead of carrying it forever, which otherwise locks the policy on
a bad action whose self-duels (y1 = y2) teach nothing. Regret is the expected sub-optimality of the
played actions under pi_t, r*(x_t, a*) - E_{y ~ pi_t}[r*(x_t, y)], which removes sampling noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from frugalign.bandit.env import DuelingBandit

Learner = Literal["appo", "always", "informative", "random"]


@dataclass
class RunResult:
    queries: np.ndarray  # cumulative queries after each round
    regret: np.ndarray  # cumulative regret after each round
    theta_hat: np.ndarray
    asked_duels: np.ndarray  # [n, d]: z of every queried duel of two different actions, in order
    answers: np.ndarray  # [n]: 1 where the first action won


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _mle(theta: np.ndarray, z: np.ndarray, o: np.ndarray, lam: float, tol: float = 1e-9,
         max_iters: int = 50) -> np.ndarray:
    """Regularised logistic MLE by Newton's method from `theta`: solves lam*theta + sum (sigma(<theta,z>) - o) z = 0,
    stopping once a step moves no coordinate by more than `tol` (the objective is strictly convex)."""
    d = theta.shape[0]
    for _ in range(max_iters):
        p = _sigmoid(z @ theta)
        grad = lam * theta + z.T @ (p - o)
        hess = lam * np.eye(d) + (z * (p * (1 - p))[:, None]).T @ z
        step = np.linalg.solve(hess, grad)
        theta = theta - step
        if np.abs(step).max() < tol:
            break
    return theta


def simulate(env: DuelingBandit, learner: Learner, horizon: int, gamma: float = 0.0, query_rate: float = 1.0,
             eta: float = 1.0, lam: float = 1.0, seed: int = 0, explore: float = 0.0,
             gamma_shrinks: bool = False) -> RunResult:
    rng = np.random.default_rng(seed)
    n_ctx, n_act, d = env.features.shape
    gaps = env.gaps
    theta = np.zeros(d)
    sigma_inv = np.eye(d) / lam
    asked_z, asked_o, n_asked = np.empty((horizon, d)), np.empty(horizon), 0  # the queried duels and their answers
    queries = np.zeros(horizon, dtype=np.int64)
    regret = np.zeros(horizon)
    n_queries, total_regret = 0, 0.0
    contexts = rng.integers(n_ctx, size=horizon)
    uniforms = rng.random((horizon, 4))
    for t in range(horizon):
        x = contexts[t]
        logits_x = eta * t * (env.features[x] @ theta)
        policy = np.exp(logits_x - logits_x.max())
        policy /= policy.sum()
        total_regret += float(policy @ gaps[x])
        cdf = np.cumsum(policy)
        y1 = min(int(np.searchsorted(cdf, uniforms[t, 0])), n_act - 1)
        y2 = min(int(np.searchsorted(cdf, uniforms[t, 1])), n_act - 1)
        z = env.features[x, y1] - env.features[x, y2]
        if learner == "appo":  # a duel of an action with itself has z = 0: never uncertain, never asked
            threshold = gamma / np.sqrt(1.0 + np.log(1.0 + n_asked / (d * lam))) if gamma_shrinks else gamma
            ask = float(np.sqrt(z @ sigma_inv @ z)) > threshold or (y1 != y2 and uniforms[t, 2] < explore)
        elif learner == "random":
            ask = uniforms[t, 2] < query_rate
        elif learner == "informative":
            ask = y1 != y2
        else:
            ask = True  # pays every round, informative or not, as the baseline of the paper does
        if ask:
            n_queries += 1
        if ask and y1 != y2:  # z = 0 teaches nothing: the answer is a fair coin
            asked_z[n_asked], asked_o[n_asked] = z, float(uniforms[t, 3] < _sigmoid(z @ env.theta_star))
            n_asked += 1
            sz = sigma_inv @ z
            sigma_inv -= np.outer(sz, sz) / (1.0 + z @ sz)  # Sherman-Morrison: Sigma += z z^T
            theta = _mle(theta, asked_z[:n_asked], asked_o[:n_asked], lam)
        queries[t] = n_queries
        regret[t] = total_regret
    return RunResult(queries=queries, regret=regret, theta_hat=theta, asked_duels=asked_z[:n_asked].copy(),
                     answers=asked_o[:n_asked].copy())
