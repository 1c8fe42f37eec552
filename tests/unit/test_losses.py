"""Losses against numbers derived by hand."""

import math

import pytest
import torch

from basereward.losses import (
    bradley_terry,
    judge_loss,
    length_normalize,
    reward_loss,
    zero_coefficient,
)


def test_equal_rewards_give_ln2():
    r = torch.zeros(5)
    assert bradley_terry(r, r).item() == pytest.approx(math.log(2))


def test_bt_hand_values():
    # -log(sigmoid(1)) = log(1 + e^-1) = 0.3132617; -log(sigmoid(-2)) = log(1 + e^2) = 2.1269280
    r_w = torch.tensor([1.0, 0.0])
    r_l = torch.tensor([0.0, 2.0])
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(2))) / 2
    assert bradley_terry(r_w, r_l).item() == pytest.approx(expected, rel=1e-6)


def test_margin_shifts_the_difference():
    # with margin 1, a difference of 1 behaves like equal rewards: ln 2
    assert bradley_terry(torch.tensor([1.0]), torch.tensor([0.0]), margin=1.0).item() == pytest.approx(math.log(2))


def test_zero_coefficient_hand_value():
    # (1 + 1)^2 = 4, (2 - 3)^2 = 1 -> mean 2.5; times 0.1 = 0.25
    r_w, r_l = torch.tensor([1.0, 2.0]), torch.tensor([1.0, -3.0])
    assert zero_coefficient(r_w, r_l, 0.1).item() == pytest.approx(0.25)


def test_length_normalisation_hand_value():
    # 2 / ln(e^2 - 1 + 1) = 2 / 2 = 1 ; 3 / ln(1 + 1) = 3 / ln 2
    r = torch.tensor([2.0, 3.0])
    lens = torch.tensor([math.exp(2) - 1, 1.0])
    out = length_normalize(r, lens)
    assert out[0].item() == pytest.approx(1.0, rel=1e-6)
    assert out[1].item() == pytest.approx(3 / math.log(2), rel=1e-6)


def test_reward_loss_combines_terms():
    r_w, r_l = torch.tensor([2.0]), torch.tensor([0.0])
    lw, ll = torch.tensor([math.exp(2) - 1]), torch.tensor([3.0])
    # normalised: r_w' = 1, r_l' = 0; BT = log(1 + e^-1); zero-coef 0.5 * (1 + 0)^2 = 0.5
    got = reward_loss(r_w, r_l, len_w=lw, len_l=ll, zero_coef=0.5, length_norm=True)
    assert got.item() == pytest.approx(math.log(1 + math.exp(-1)) + 0.5, rel=1e-6)
    # off by default: plain BT on raw rewards
    assert reward_loss(r_w, r_l).item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)


def test_length_norm_requires_lengths():
    with pytest.raises(ValueError):
        reward_loss(torch.zeros(1), torch.zeros(1), length_norm=True)


def test_judge_loss_hand_values():
    nll = torch.tensor([0.5, 1.5])
    odds = torch.tensor([0.0, math.log(3.0)])  # right verdict at p = 1/2 and p = 3/4
    assert judge_loss(nll, odds).item() == pytest.approx(1.0)  # plain SFT: the mean NLL
    # + 2 * mean(ln 2, -ln(3/4)) = 2 * (0.693147 + 0.287682) / 2
    assert judge_loss(nll, odds, verdict_weight=2.0).item() == pytest.approx(1.0 + math.log(2) + math.log(4 / 3))


def test_ema_update_follows_the_warmed_up_decay_by_hand():
    from basereward.training.fit import apply_ema, ema_weights, update_ema

    p = torch.nn.Parameter(torch.tensor([1.0]))
    opt = torch.optim.SGD([p], lr=0.1)
    # Step 1 copies the weight; step t then keeps min(0.5, (1 + t) / (10 + t)) of the average:
    # t=2: 0.25 * 1 + 0.75 * 3 = 2.5; t=3: (4/13) * 2.5 + (9/13) * 5 = 55/13.
    for step, value in ((1, 1.0), (2, 3.0), (3, 5.0)):
        with torch.no_grad():
            p.fill_(value)
        update_ema(opt, step, 0.5)
    assert opt.state[p]["ema"].item() == pytest.approx(55 / 13)
    with ema_weights(opt, enabled=True):
        assert p.item() == pytest.approx(55 / 13)
    assert p.item() == 5.0  # restored
    apply_ema(opt, enabled=False)
    assert p.item() == 5.0
    apply_ema(opt, enabled=True)
    assert p.item() == pytest.approx(55 / 13)
