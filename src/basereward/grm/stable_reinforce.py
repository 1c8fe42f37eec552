r"""StableReinforce (R1-Reward, arXiv 2505.02835) as pure tensor functions.

* `policy_loss`: PPO's clipped surrogate with R1-Reward's *pre-clip*: the log ratio
  log(pi / pi_old) is clamped to [ln 1e-3, ln 1e3] before `exp`, so a stale old policy cannot
  overflow the ratio. With a negative advantage, PPO's `min` picks the unclipped branch
  ratio * A, so without the pre-clip the loss grows like e^(log ratio) * |A|; with it the loss
  is at most 1e3 * |A| per token. `pre_clip=False` gives the plain PPO loss (ablations).
* `filter_advantages`: the paper's 3-sigma advantage filter, z = (A - mean) / std over the batch,
  entries with |z| > 3 set to 0; `mode="released"` reproduces the released code instead.
* `final_reward`: result * (1 + 0.5 * consistency) + 0.5 * format.
* `attempts_needed` / `select_for_rl`: the progressive-difficulty rule for the RL split.

Shapes: B sequences, T response tokens. Nothing here loads a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

from ..errors import BaseRewardError

LOG_RATIO_MIN = math.log(1e-3)
"""Lower bound of the pre-clipped log ratio (ratio >= 1e-3)."""
LOG_RATIO_MAX = math.log(1e3)
"""Upper bound of the pre-clipped log ratio (ratio <= 1e3)."""
RELEASED_Z_CAP = 10.0
"""The released code also zeroes any standardised advantage with |z| > 10 (or non-finite)."""
_VAR_FLOOR = 1e-8  # both modes floor the variance here, so an all-equal batch gives z = 0, not NaN

FilterMode = Literal["paper", "released"]


# ---------------------------------------------------------------- policy loss


def _check_loss_inputs(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
                       mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated (advantages as (B, T) or (B, 1), mask as float (B, T))."""
    if log_probs.dim() != 2:
        raise BaseRewardError(f"policy_loss: log_probs must be (B, T), got shape {tuple(log_probs.shape)}")
    if old_log_probs.shape != log_probs.shape:
        raise BaseRewardError(f"policy_loss: old_log_probs shape {tuple(old_log_probs.shape)} "
                              f"!= log_probs shape {tuple(log_probs.shape)}")
    if mask.shape != log_probs.shape:
        raise BaseRewardError(f"policy_loss: mask shape {tuple(mask.shape)} != log_probs shape {tuple(log_probs.shape)}")
    b, t = log_probs.shape
    adv = advantages.to(log_probs.dtype)
    if adv.dim() == 1:
        adv = adv.unsqueeze(-1)  # (B,) -> (B, 1): one advantage per sequence
    if adv.dim() != 2 or adv.shape[0] != b or adv.shape[1] not in (1, t):
        raise BaseRewardError(f"policy_loss: advantages shape {tuple(advantages.shape)} does not broadcast to "
                              f"(B, T) = ({b}, {t}); use (B,), (B, 1) or (B, T)")
    return adv, mask.to(log_probs.dtype)


def _ratio(log_probs: torch.Tensor, old_log_probs: torch.Tensor, pre_clip: bool) -> torch.Tensor:
    log_ratio = log_probs - old_log_probs  # (B, T)
    if pre_clip:
        # Clamping before exp is the whole point: exp(20) * A is already ~5e8 * A, exp(100) is inf in fp32.
        log_ratio = log_ratio.clamp(LOG_RATIO_MIN, LOG_RATIO_MAX)
    return log_ratio.exp()


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # Token-level mean over every unmasked token of the batch; an all-padding batch gives 0
    # (still attached to the graph) instead of 0/0.
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def policy_loss(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip_eps: float = 0.2, *, pre_clip: bool = True) -> torch.Tensor:
    """StableReinforce policy loss, a scalar.

    log_probs, old_log_probs, mask: (B, T) (mask 1 on response tokens, 0 on padding);
    advantages: (B,), (B, 1) or (B, T).  Per token, with r = exp(clamp(log_probs - old_log_probs,
    ln 1e-3, ln 1e3)) (no clamp when `pre_clip=False`):

        loss_t = -min(r * A, clip(r, 1 - clip_eps, 1 + clip_eps) * A)

    averaged over all unmasked tokens of the batch (sum(loss * mask) / sum(mask); 0 when the
    mask is empty). The released code averages per sequence first, then over sequences; the two
    agree when every sequence has the same number of response tokens.
    """
    if not 0.0 <= clip_eps < 1.0:
        raise BaseRewardError(f"policy_loss: clip_eps must be in [0, 1), got {clip_eps}")
    adv, m = _check_loss_inputs(log_probs, old_log_probs, advantages, mask)
    ratio = _ratio(log_probs, old_log_probs, pre_clip)  # (B, T)
    surr = ratio * adv
    surr_clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv
    return _masked_mean(-torch.min(surr, surr_clipped), m)


@torch.no_grad()
def policy_loss_stats(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
                      mask: torch.Tensor, clip_eps: float = 0.2, *, pre_clip: bool = True) -> dict[str, float]:
    """Diagnostics for logging, over unmasked tokens: `loss` (as `policy_loss`), `clip_frac`
    (ratio outside [1 - eps, 1 + eps]), `pre_clip_frac` (log ratio outside [ln 1e-3, ln 1e3],
    counted whether or not `pre_clip` is on), `mean_ratio` (of the ratio the loss used) and
    `max_abs_log_ratio` (before any clamp)."""
    adv, m = _check_loss_inputs(log_probs, old_log_probs, advantages, mask)
    log_ratio = log_probs - old_log_probs
    ratio = _ratio(log_probs, old_log_probs, pre_clip)
    outside = ((ratio < 1.0 - clip_eps) | (ratio > 1.0 + clip_eps)).to(m.dtype)
    pre = ((log_ratio < LOG_RATIO_MIN) | (log_ratio > LOG_RATIO_MAX)).to(m.dtype)
    valid = m > 0
    return {
        "loss": float(policy_loss(log_probs, old_log_probs, adv, mask, clip_eps, pre_clip=pre_clip)),
        "clip_frac": float(_masked_mean(outside, m)),
        "pre_clip_frac": float(_masked_mean(pre, m)),
        "mean_ratio": float(_masked_mean(ratio, m)),
        "max_abs_log_ratio": float(log_ratio.abs()[valid].max()) if bool(valid.any()) else 0.0,
    }


# ---------------------------------------------------------------- advantage filter


def filter_advantages(advantages: torch.Tensor, threshold: float = 3.0, *, mode: FilterMode = "paper",
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """Standardise advantages over the batch and zero the outliers; same shape as the input.

    mean and variance are taken over all (unmasked) entries, the variance as the population
    variance (divide by the count, as the released code does) floored at 1e-8.

    * ``mode="paper"`` (R1-Reward's definition): z = (A - mean) / std; entries with |z| > threshold
      become 0, so |z| == threshold is kept.
    * ``mode="released"`` (``NaiveReplayBuffer.normalize`` in the released r1_reward code):
      z = (A - mean) / std + 1e-8, then z is zeroed where it falls outside
      [mean - threshold, mean + threshold] — bounds around the *raw* advantage mean, applied to the
      *standardised* values — and also where |z| > 10 or z is not finite. The two modes agree
      only when the raw mean is ~0; e.g. A = [6, 4, 6, 4] (mean 5, std 1, z = +-1) keeps every
      entry under the paper's rule but zeroes every entry under the released one (bounds [2, 8]).

    Masked-out entries (mask == 0) do not enter the statistics and come back as 0.
    """
    if threshold <= 0:
        raise BaseRewardError(f"filter_advantages: threshold must be > 0, got {threshold}")
    if mode not in ("paper", "released"):
        raise BaseRewardError(f"filter_advantages: mode must be 'paper' or 'released', got {mode!r}")
    a = advantages.detach().float()
    if a.numel() == 0:
        return a
    if mask is None:
        m = torch.ones_like(a)
    else:
        if mask.shape != a.shape:
            raise BaseRewardError(f"filter_advantages: mask shape {tuple(mask.shape)} != advantages shape {tuple(a.shape)}")
        m = mask.float()
    count = m.sum().clamp(min=1.0)
    mean = (a * m).sum() / count
    var = ((a - mean).pow(2) * m).sum() / count
    rstd = var.clamp(min=_VAR_FLOOR).rsqrt()
    if mode == "paper":
        z = (a - mean) * rstd
        keep = z.abs() <= threshold
    else:
        z = (a - mean) * rstd + 1e-8
        keep = (z >= mean - threshold) & (z <= mean + threshold) & torch.isfinite(z) & (z.abs() <= RELEASED_Z_CAP)
    return torch.where(keep & (m > 0), z, torch.zeros_like(z))


# ---------------------------------------------------------------- reward


def final_reward(result: float | torch.Tensor, consistency: float | torch.Tensor,
                 format: float | torch.Tensor) -> float | torch.Tensor:
    """result * (1 + 0.5 * consistency) + 0.5 * format, on floats or tensors (broadcast).

    result: 1 when the judge picked the preferred response, else 0; consistency: 1 when a
    consistency judge (a rule, a model, our own Naive-RM) finds the reasoning supports the
    answer; format: 1 when the output is `<think>…</think><answer>…</answer>`. Because the
    consistency bonus multiplies the result, it only counts when the result is right:
    (1, 1, 1) -> 2.0, (1, 0, 1) -> 1.5, (0, 1, 1) -> 0.5, (0, 0, 0) -> 0.0. (The released
    code's consistency judge returns 1 / -1 / 0; this function takes whatever value it is given.)
    """
    return result * (1 + 0.5 * consistency) + 0.5 * format


# ---------------------------------------------------------------- progressive difficulty


def attempts_needed(outcomes: Sequence[bool], k: int = 3) -> int | None:
    """1-based index of the first correct attempt among the first k; None when none of the k is correct.

    `outcomes` are the cold-start judge's attempts in the order they were drawn; sampling may
    stop at the first correct one, so a sequence shorter than k is fine when it contains a correct
    attempt, but one with no correct attempt must hold all k (otherwise "never in k" is unknown).
    """
    if k < 1:
        raise BaseRewardError(f"attempts_needed: k must be >= 1, got {k}")
    seq = list(outcomes)[:k]
    for i, ok in enumerate(seq):
        if ok:
            return i + 1
    if len(seq) < k:
        raise BaseRewardError(f"attempts_needed: {len(seq)} attempt(s), none correct, but k = {k}: "
                              "cannot tell whether the item is ever answered right")
    return None


def select_for_rl(outcomes_per_item: Sequence[Sequence[bool]], k: int = 3) -> list[int]:
    """Indices of the items kept for RL by R1-Reward's progressive-difficulty rule.

    R1-Reward queried GPT-4o up to k = 3 times per item during cold-start data creation and
    recorded how many attempts it needed to judge correctly. Items it got right at the first
    attempt are "easy" and used only for cold-start SFT; the RL stage keeps the items that needed
    >= 2 attempts, or that were never judged correctly within the k attempts. With ordered attempts
    that is exactly "the first attempt was wrong", so the rule needs the order of the outcomes —
    a count of correct answers out of k cannot express it (1 of 3 correct may be first or last).
    """
    keep = []
    for i, outcomes in enumerate(outcomes_per_item):
        n = attempts_needed(outcomes, k)
        if n is None or n >= 2:
            keep.append(i)
    return keep
