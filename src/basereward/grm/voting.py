"""Test-time scaling for generative judges: voting@k, confidence weighting, early stop.

A sample is a choice 1 / 2, None (the judge named neither), or anything with a `.choice`
attribute (a `parse.Verdict`). None never counts as a vote for either side.

* `vote(samples, weights=None) -> (choice, agreement)`: weighted majority; agreement is the
  winner's share of the weight cast for 1 or 2. A tie gives (None, 0.5); no votes (None, 0.0).
  Confidence-weighted voting passes each sample's answer-token probability as its weight.
* `vote_until(sampler, k)`: draw one sample at a time and stop as soon as one choice holds
  k // 2 + 1 votes — at that point no later sample can change the majority of k, so the answer is
  the one a full voting@k would give, at fewer generations.
* `accuracy_vs_k(per_item_samples, labels, ks)`: voting@k accuracy per k over the first k samples
  of each item, for the report's curve. Items without a majority count as wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import BaseRewardError

CHOICES = (1, 2)


def choice_of(sample: Any) -> int | None:
    """1, 2 or None from a choice or a Verdict-like object (anything else is an error)."""
    choice = getattr(sample, "choice", sample)
    if choice is None or (isinstance(choice, int) and not isinstance(choice, bool) and choice in CHOICES):
        return choice
    raise BaseRewardError(f"a vote must be 1, 2 or None, got {choice!r}")


def vote(samples: Sequence[Any], weights: Sequence[float] | None = None) -> tuple[int | None, float]:
    """(winning choice or None, agreement in [0, 1]); weights default to 1 per sample."""
    if weights is None:
        weights = [1.0] * len(samples)
    if len(weights) != len(samples):
        raise BaseRewardError(f"vote: {len(weights)} weights for {len(samples)} samples")
    tally = {c: 0.0 for c in CHOICES}
    for sample, w in zip(samples, weights):
        w = float(w)
        if not w >= 0.0:  # also refuses NaN
            raise BaseRewardError(f"vote: weights must be >= 0, got {w}")
        choice = choice_of(sample)
        if choice is not None:
            tally[choice] += w
    total = tally[1] + tally[2]
    if total == 0.0:
        return None, 0.0
    if tally[1] == tally[2]:
        return None, 0.5
    winner = 1 if tally[1] > tally[2] else 2
    return winner, tally[winner] / total


@dataclass(frozen=True)
class EarlyStopVote:
    """Result of `vote_until`: the choice, its agreement over the samples drawn, how many were drawn."""

    choice: int | None
    agreement: float
    samples_used: int
    choices: tuple[int | None, ...]


def vote_until(sampler: Callable[[], Any], k: int) -> EarlyStopVote:
    """Majority voting over at most k samples from `sampler()`, stopping once k // 2 + 1 agree.

    Counts are unweighted (the stop rule is about votes, not confidence). When no choice reaches
    k // 2 + 1 within k samples, the result is `vote` over all k of them (None on a tie).
    """
    if k < 1:
        raise BaseRewardError(f"vote_until: k must be >= 1, got {k}")
    need = k // 2 + 1
    drawn: list[int | None] = []
    counts = {c: 0 for c in CHOICES}
    for _ in range(k):
        choice = choice_of(sampler())
        drawn.append(choice)
        if choice is not None:
            counts[choice] += 1
            if counts[choice] >= need:
                break
    choice, agreement = vote(drawn)
    return EarlyStopVote(choice, agreement, len(drawn), tuple(drawn))


def accuracy_vs_k(per_item_samples: Sequence[Sequence[Any]], labels: Sequence[int], ks: Sequence[int],
                  weights: Sequence[Sequence[float]] | None = None) -> dict[int, float]:
    """{k: voting@k accuracy}, voting over each item's first k samples (optionally weighted).

    labels: the preferred response (1 or 2) per item. A tie or an all-None vote is wrong.
    """
    if len(labels) != len(per_item_samples):
        raise BaseRewardError(f"accuracy_vs_k: {len(labels)} labels for {len(per_item_samples)} items")
    if weights is not None and len(weights) != len(per_item_samples):
        raise BaseRewardError(f"accuracy_vs_k: {len(weights)} weight lists for {len(per_item_samples)} items")
    if not per_item_samples:
        raise BaseRewardError("accuracy_vs_k: no items")
    for label in labels:
        if label not in CHOICES:
            raise BaseRewardError(f"accuracy_vs_k: labels must be 1 or 2, got {label!r}")
    out: dict[int, float] = {}
    for k in ks:
        if k < 1:
            raise BaseRewardError(f"accuracy_vs_k: k must be >= 1, got {k}")
        right = 0
        for i, (samples, label) in enumerate(zip(per_item_samples, labels)):
            if len(samples) < k:
                raise BaseRewardError(f"accuracy_vs_k: item {i} has {len(samples)} samples, k = {k}")
            w = None if weights is None else list(weights[i])[:k]
            choice, _ = vote(list(samples)[:k], w)
            right += choice == label
        out[k] = right / len(per_item_samples)
    return out


def accuracy_vs_k_both_orders(chosen_first: Sequence[Sequence[Any]], chosen_second: Sequence[Sequence[Any]],
                              ks: Sequence[int]) -> dict[int, float]:
    """{k: accuracy} of voting over k samples in each answer order (2k votes per item).

    chosen_first[i]: item i's samples with the chosen response shown as Response 1 (a vote for
    the chosen one is 1); chosen_second[i]: shown as Response 2 (a vote for it is 2). An item is
    right when the votes for the chosen response outnumber those against it; a tie, or no
    parsable vote, is wrong. A judge that always answers "1" gets every item tied: position bias
    cancels instead of passing for accuracy (what `judge.both_orders` does when scoring).
    """
    if len(chosen_first) != len(chosen_second):
        raise BaseRewardError(f"accuracy_vs_k_both_orders: {len(chosen_first)} items in one order, "
                              f"{len(chosen_second)} in the other")
    if not chosen_first:
        raise BaseRewardError("accuracy_vs_k_both_orders: no items")
    out: dict[int, float] = {}
    for k in ks:
        if k < 1:
            raise BaseRewardError(f"accuracy_vs_k_both_orders: k must be >= 1, got {k}")
        right = 0
        for i, (a, b) in enumerate(zip(chosen_first, chosen_second)):
            if len(a) < k or len(b) < k:
                raise BaseRewardError(f"accuracy_vs_k_both_orders: item {i} has {min(len(a), len(b))} samples, k = {k}")
            va = [choice_of(s) for s in list(a)[:k]]
            vb = [choice_of(s) for s in list(b)[:k]]
            margin = (va.count(1) - va.count(2)) + (vb.count(2) - vb.count(1))
            right += margin > 0
        out[k] = right / len(chosen_first)
    return out
