"""Reward-model losses (paper Algorithm 1) as pure functions.

All take rewards of chosen `r_w` and rejected `r_l` responses, shape (B,), and return a scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry(r_w: torch.Tensor, r_l: torch.Tensor, margin: float | torch.Tensor = 0.0) -> torch.Tensor:
    """mean(-logsigmoid(r_w - r_l - margin)). Equal rewards give ln 2."""
    return -F.logsigmoid(r_w - r_l - margin).mean()


def zero_coefficient(r_w: torch.Tensor, r_l: torch.Tensor, coef: float) -> torch.Tensor:
    """coef * mean((r_w + r_l)^2): pulls the two rewards of a pair to be centred on zero."""
    return coef * (r_w + r_l).pow(2).mean()


def length_normalize(r: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """r / log(len + 1), with `lengths` the response token counts (B,) (must be >= 1)."""
    return r / torch.log(lengths.to(r.dtype) + 1.0)


def reward_loss(
    r_w: torch.Tensor,
    r_l: torch.Tensor,
    *,
    len_w: torch.Tensor | None = None,
    len_l: torch.Tensor | None = None,
    zero_coef: float = 0.0,
    length_norm: bool = False,
    margin: float = 0.0,
) -> torch.Tensor:
    """The configured loss: optional length normalisation, BT with margin, optional zero-coef term."""
    if length_norm:
        if len_w is None or len_l is None:
            raise ValueError("length_norm needs len_w and len_l")
        r_w, r_l = length_normalize(r_w, len_w), length_normalize(r_l, len_l)
    loss = bradley_terry(r_w, r_l, margin)
    if zero_coef:
        loss = loss + zero_coefficient(r_w, r_l, zero_coef)
    return loss


def judge_loss(target_nll: torch.Tensor, verdict_log_odds: torch.Tensor, verdict_weight: float = 0.0) -> torch.Tensor:
    """A generative judge's training loss: the mean SFT loss of its turn (per example: the mean NLL
    of its target tokens) + verdict_weight * mean(-log sigmoid(log-odds of the right verdict)),
    the Bradley-Terry loss of the verdict alone (`model.judge.verdict_weight`)."""
    loss = target_nll.mean()
    if verdict_weight:
        loss = loss + verdict_weight * F.softplus(-verdict_log_odds).mean()
    return loss
