"""Pure per-example losses.

Every function takes tensors (log-probabilities, rewards, weights) and returns *unreduced* per-pair
losses, so that recipes decide how to weight, mask and reduce them. No model, no config, no I/O.
Notation follows docs/algorithms.md: u(y) = logp_pi(y|x) - logp_ref(y|x), h = u(y_w) - u(y_l).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pair_margin(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
) -> torch.Tensor:
    """h = (logp_pi(y_w) - logp_ref(y_w)) - (logp_pi(y_l) - logp_ref(y_l)), per pair."""
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def dpo_loss(margin: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO per-pair loss -log sigma(beta*h); with label smoothing eps (conservative DPO):
    -(1-eps) log sigma(beta*h) - eps log sigma(-beta*h)."""
    logits = beta * margin
    loss = -F.logsigmoid(logits)
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * F.logsigmoid(-logits)
    return loss


def ipo_loss(avg_margin: torch.Tensor, beta: float) -> torch.Tensor:
    """IPO per-pair loss (h_avg - 1/(2*beta))^2, where h_avg is the margin of per-token averaged
    log-probabilities (length-normalised), as in the IPO authors' reported results."""
    return (avg_margin - 1.0 / (2.0 * beta)) ** 2


def simpo_loss(avg_margin: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """SimPO per-pair loss -log sigma(beta * (avg logp(y_w) - avg logp(y_l)) - gamma): the policy's own
    per-token averaged log-probs, no reference model, and a target reward margin gamma."""
    return -F.logsigmoid(beta * avg_margin - gamma)


def orpo_loss(chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, lam: float) -> torch.Tensor:
    """ORPO per-pair loss: the chosen response's per-token NLL plus lam * -log sigma(log odds(y_w) -
    log odds(y_l)), with odds(y) = p / (1 - p) and p = exp(avg logp(y)); no reference model."""

    def log_odds(avg: torch.Tensor) -> torch.Tensor:
        return avg - torch.log1p(-torch.exp(avg).clamp(max=1.0 - 1e-6))  # p = 1 exactly would be infinite odds

    return -chosen_avg_logps - lam * F.logsigmoid(log_odds(chosen_avg_logps) - log_odds(rejected_avg_logps))


def kto_loss(
    logratios: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> torch.Tensor:
    """KTO per-example loss, with r = logp_pi(y|x) - logp_ref(y|x) (`logratios`) and the reference point
    z0 = max(0, kl), detached (a baseline, not a target: the gradient flows through r only):
    desirable: w_D * (1 - sigma(beta * (r - z0))), undesirable: w_U * (1 - sigma(beta * (z0 - r))).
    `kl` is the KL estimate, the mean log-ratio of mismatched (prompt, completion) pairs."""
    z0 = kl.detach().clamp(min=0.0)
    return torch.where(desirable, desirable_weight * (1.0 - torch.sigmoid(beta * (logratios - z0))),
                       undesirable_weight * (1.0 - torch.sigmoid(beta * (z0 - logratios))))


def wdpo_weights(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, beta2: float) -> torch.Tensor:
    """OPTune's wDPO weight R = sigma(beta2 * (r(y_w) - r(y_l))), detached: rewards are data."""
    return torch.sigmoid(beta2 * (chosen_rewards - rejected_rewards)).detach()


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | None = None,
    centering: float = 0.0,
) -> torch.Tensor:
    """Reward-model loss -log sigma(r_w - r_l - margin) + c * (r_w + r_l)^2, per pair."""
    diff = chosen_rewards - rejected_rewards
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff)
    if centering:
        loss = loss + centering * (chosen_rewards + rejected_rewards) ** 2
    return loss


def sft_loss(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-example mean negative log-likelihood over the response tokens (mask = 1 on them)."""
    mask = mask.to(token_logps.dtype)
    return -(token_logps * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Batch loss sum(w*l)/sum(w) over pairs with w > 0 (plain mean when weights is None).

    Normalising by the weight sum keeps the learning rate's meaning independent of how many pairs a
    batch keeps; a batch whose weights are all zero contributes a zero loss that still has a graph,
    so every process runs the same backward (DDP needs that)."""
    if weights is None:
        return losses.mean()
    weights = weights.to(losses.dtype)
    total = weights.sum()
    if total <= 0:
        return (losses * 0.0).sum()
    return (weights * losses).sum() / total


def rloo_loss(logps: torch.Tensor, rewards: torch.Tensor, k: int) -> torch.Tensor:
    """REINFORCE with a leave-one-out baseline (RLOO), per sample. `logps` [N*k]: the policy's summed
    log-probs of k samples per prompt, prompt-major; `rewards` [N*k]: their rewards (KL penalty included),
    detached. A sample's advantage is its reward minus the mean reward of the prompt's other samples,
    which needs no value model and keeps the gradient unbiased."""
    r = rewards.detach().reshape(-1, k)
    baseline = (r.sum(1, keepdim=True) - r) / (k - 1)
    return -(r - baseline).reshape(-1) * logps
