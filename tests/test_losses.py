"""Losses against hand-computed values and their known limits."""

import math

import pytest
import torch

from frugalign import losses


def test_pair_margin_is_difference_of_log_ratios():
    h = losses.pair_margin(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.5]))
    assert h.item() == pytest.approx((-1 + 2) - (-3 + 2.5))


def test_dpo_loss_hand_computed():
    margin = torch.tensor([0.0, 2.0, -1.0])
    loss = losses.dpo_loss(margin, beta=0.5)
    expected = [-math.log(1 / (1 + math.exp(-0.5 * m))) for m in (0.0, 2.0, -1.0)]
    assert loss.tolist() == pytest.approx(expected, rel=1e-6)
    assert loss[0].item() == pytest.approx(math.log(2))


def test_label_smoothing_mixes_both_orientations():
    margin = torch.tensor([1.5])
    eps = 0.2
    smoothed = losses.dpo_loss(margin, beta=1.0, label_smoothing=eps)
    flipped = losses.dpo_loss(-margin, beta=1.0)
    plain = losses.dpo_loss(margin, beta=1.0)
    assert smoothed.item() == pytest.approx((1 - eps) * plain.item() + eps * flipped.item())
    assert losses.dpo_loss(margin, 1.0, 0.0).item() == pytest.approx(plain.item())


def test_ipo_loss_formula_and_minimum():
    beta = 0.25
    assert losses.ipo_loss(torch.tensor([2.0]), beta).item() == pytest.approx(0.0)  # h_avg = 1/(2 beta)
    assert losses.ipo_loss(torch.tensor([0.0]), beta).item() == pytest.approx(4.0)


def test_weights_of_one_give_plain_mean_and_zero_weights_drop_pairs():
    per_pair = torch.tensor([1.0, 2.0, 6.0])
    assert losses.weighted_mean(per_pair, torch.ones(3)).item() == pytest.approx(3.0)
    assert losses.weighted_mean(per_pair).item() == pytest.approx(3.0)
    assert losses.weighted_mean(per_pair, torch.tensor([1.0, 1.0, 0.0])).item() == pytest.approx(1.5)
    assert losses.weighted_mean(per_pair, torch.tensor([1.0, 3.0, 0.0])).item() == pytest.approx((1 + 6) / 4)


def test_all_zero_weights_give_zero_loss_with_a_graph():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    loss = losses.weighted_mean(x * 2, torch.zeros(2))
    loss.backward()
    assert loss.item() == 0.0 and x.grad.tolist() == [0.0, 0.0]


def test_wdpo_weights_are_detached_sigmoid_of_reward_gap():
    rw = torch.tensor([2.0, 0.0], requires_grad=True)
    rl = torch.tensor([0.0, 0.0])
    w = losses.wdpo_weights(rw, rl, beta2=1.0)
    assert not w.requires_grad
    assert w.tolist() == pytest.approx([1 / (1 + math.exp(-2)), 0.5])


def test_bradley_terry_with_margin_and_centering():
    rw, rl = torch.tensor([1.0]), torch.tensor([0.5])
    plain = losses.bradley_terry_loss(rw, rl)
    assert plain.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.5))))
    with_margin = losses.bradley_terry_loss(rw, rl, margin=torch.tensor([0.5]))
    assert with_margin.item() == pytest.approx(math.log(2))
    centred = losses.bradley_terry_loss(rw, rl, centering=0.01)
    assert centred.item() == pytest.approx(plain.item() + 0.01 * 1.5**2)


def test_sft_loss_masks_prompt_tokens():
    token_logps = torch.tensor([[-5.0, -1.0, -3.0], [-2.0, -2.0, -9.0]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 0]])
    assert losses.sft_loss(token_logps, mask).tolist() == pytest.approx([2.0, 2.0])


def test_dpo_gradient_pushes_chosen_up_and_rejected_down():
    chosen = torch.tensor([-4.0], requires_grad=True)
    rejected = torch.tensor([-4.0], requires_grad=True)
    margin = losses.pair_margin(chosen, rejected, torch.tensor([-4.0]), torch.tensor([-4.0]))
    losses.dpo_loss(margin, beta=0.1).sum().backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()
    assert chosen.grad.item() == pytest.approx(-0.05)  # -beta * sigma(0)


def test_simpo_loss_hand_computed_and_its_margin_is_the_target():
    # beta * (avg_w - avg_l) - gamma = 2 * (-1.0 - -1.5) - 0.5 = 0.5
    loss = losses.simpo_loss(torch.tensor([0.5]), beta=2.0, gamma=0.5)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.5))), rel=1e-6)
    # the chosen response more likely per token: a lower loss; the other way round, a higher one
    better, worse = losses.simpo_loss(torch.tensor([0.5, -0.5]), beta=2.0, gamma=0.5)
    assert better < worse


def test_orpo_loss_hand_computed_from_odds():
    c, r = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.2)])  # p_w = 0.5 (odds 1), p_l = 0.2 (odds 1/4)
    expected = -math.log(0.5) - 0.1 * math.log(1 / (1 + math.exp(-math.log(4.0))))
    assert losses.orpo_loss(c, r, lam=0.1).item() == pytest.approx(expected, rel=1e-6)
    # its odds-ratio term (the loss less the chosen NLL) is lower the right way round
    assert losses.orpo_loss(c, r, lam=1.0) + c < losses.orpo_loss(r, c, lam=1.0) + r
    assert torch.isfinite(losses.orpo_loss(torch.tensor([0.0]), torch.tensor([-1.0]), lam=0.1)).all()  # p = 1


def test_kto_loss_hand_computed():
    r, desirable = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([True, False, False])
    loss = losses.kto_loss(r, desirable, torch.tensor(0.5), beta=0.5, desirable_weight=2.0, undesirable_weight=3.0)

    def sigmoid(x):
        return 1 / (1 + math.exp(-x))

    # z0 = 0.5: desirable 2 * (1 - sigma(0.5 * (1 - 0.5))), undesirable 3 * (1 - sigma(0.5 * (0.5 - r)))
    expected = [2 * (1 - sigmoid(0.25)), 3 * (1 - sigmoid(1.25)), 3 * (1 - sigmoid(0.0))]
    assert loss.tolist() == pytest.approx(expected, rel=1e-6)


def test_kto_gradient_raises_desirable_and_lowers_undesirable_log_ratios():
    # fails when the classes are swapped or the sign of r is inverted: gradient descent must move r up for a
    # desirable completion and down for an undesirable one
    r = torch.tensor([0.3, 0.3], requires_grad=True)
    losses.kto_loss(r, torch.tensor([True, False]), torch.tensor(0.1), beta=1.0).sum().backward()
    assert r.grad[0] < 0 < r.grad[1]
    # and a desirable completion whose log-ratio is higher has the lower loss, an undesirable one the higher
    high, low = torch.tensor([2.0]), torch.tensor([-2.0])
    yes, no, kl = torch.tensor([True]), torch.tensor([False]), torch.tensor(0.0)
    assert losses.kto_loss(high, yes, kl, 1.0) < losses.kto_loss(low, yes, kl, 1.0)
    assert losses.kto_loss(high, no, kl, 1.0) > losses.kto_loss(low, no, kl, 1.0)


def test_kto_reference_point_is_detached_and_clamped_at_zero():
    r, desirable = torch.tensor([0.4, -0.2]), torch.tensor([True, False])
    negative = losses.kto_loss(r, desirable, torch.tensor(-3.0), beta=1.0)
    assert negative.tolist() == pytest.approx(losses.kto_loss(r, desirable, torch.tensor(0.0), beta=1.0).tolist())
    kl = torch.tensor(0.7, requires_grad=True)
    loss = losses.kto_loss(r.clone().requires_grad_(True), desirable, kl, beta=1.0).sum()
    loss.backward()
    assert kl.grad is None  # no gradient reaches the KL estimate
    # the reference point moves the loss: a higher z0 makes a desirable row worse and an undesirable one better
    higher = losses.kto_loss(r, desirable, torch.tensor(1.0), beta=1.0)
    at_zero = losses.kto_loss(r, desirable, torch.tensor(0.0), beta=1.0)
    assert higher[0] > at_zero[0] and higher[1] < at_zero[1]
