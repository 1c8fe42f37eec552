"""The one scoring interface: anything that produces rewards implements `score_groups`.

`RewardSource` is the protocol: `score_groups(groups) -> scores` with `scores[i][k]` the reward of
`groups[i].responses[k]`. The project's `Scorer`, an `Ensemble` and a `ModalityRouter` implement
it (later a server client or a generative judge); evaluation, ensembles, reports and training
validation accept any such object. `ScoringMixin` derives the convenience methods (`score` for
pairs, `score_responses` for one prompt) from `score_groups`, so they exist in one place;
`score_pairs(source, pairs)` does the same for a source that does not inherit the mixin.

Torch-free: importing this module never loads a model framework.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ..data.schema import Group, PreferencePair
from ..errors import BaseRewardError


@runtime_checkable
class RewardSource(Protocol):
    """Produces one reward per response of every group."""

    def score_groups(self, groups: Sequence[Group]) -> list[list[float]]: ...


class ScoreShapeError(BaseRewardError):
    """A reward source returned scores that do not line up with the groups it was given."""


class NonFiniteRewardError(BaseRewardError):
    """A reward source produced NaN or infinity where a reward was to be written."""


def writable_rewards(ids: Sequence[str], scores: Sequence[Sequence[float]], allow_nonfinite: bool = False,
                     labels: Sequence[str] = ()) -> tuple[list[list[float | None]], int]:
    """Rewards ready for a JSON file: (rows with every NaN / infinity as None, how many there were).

    Without `allow_nonfinite`, the first one raises NonFiniteRewardError naming the item id (and
    the response: `labels[k]`, else its position), since a diverged model's NaN is not a score.
    """
    rows: list[list[float | None]] = []
    count, first = 0, ""
    for item_id, row in zip(ids, scores):
        out: list[float | None] = []
        for k, value in enumerate(row):
            value = float(value)
            if math.isfinite(value):
                out.append(value)
                continue
            if not first:
                what = f"the {labels[k]} reward" if k < len(labels) else f"reward {k + 1} of {len(row)}"
                first = f"item {item_id}: {what} is {value}"
            count += 1
            out.append(None)
        rows.append(out)
    if count and not allow_nonfinite:
        raise NonFiniteRewardError(f"{first} ({count} non-finite reward{'s' if count > 1 else ''} in all); "
                                   "nothing was written (--allow-nonfinite writes them as null)")
    return rows, count


class ScoringMixin(ABC):
    """`score` and `score_responses` expressed through the subclass's `score_groups`."""

    @abstractmethod
    def score_groups(self, groups: Sequence[Group]) -> list[list[float]]:
        """scores[i][k] = reward of groups[i].responses[k]."""

    def score(self, pairs: Sequence[PreferencePair]) -> list[tuple[float, float]]:
        """(chosen reward, rejected reward) for each pair."""
        return score_pairs(self, pairs)

    def score_groups_with_uncertainty(self, groups: Sequence[Group]) -> tuple[list[list[float]], list[list[float]]]:
        """Scores and an uncertainty per score: 0 for one model (nothing to disagree with);
        ensembles override it with their members' spread."""
        return scores_with_uncertainty(self, groups)

    def score_responses(self, prompt: str, images: Sequence[Any], responses: Sequence[str]) -> list[float]:
        """Rewards of several responses to one prompt (one group: its images are encoded once)."""
        if not responses:
            return []
        return self.score_groups([Group(prompt=prompt, images=tuple(images), responses=tuple(responses))])[0]


def check_scores(groups: Sequence[Group], scores: Sequence[Sequence[float]], name: str = "reward source") -> None:
    """Raise ScoreShapeError unless `scores` holds one number per response of every group."""
    if len(scores) != len(groups):
        raise ScoreShapeError(f"{name} returned scores for {len(scores)} groups, expected {len(groups)}")
    for i, (row, group) in enumerate(zip(scores, groups)):
        if len(row) != len(group.responses):
            raise ScoreShapeError(
                f"{name} returned {len(row)} scores for group {i}, which has {len(group.responses)} responses"
            )


def score_checked(source: RewardSource, groups: Sequence[Group], name: str = "reward source") -> list[list[float]]:
    """`source.score_groups(groups)` as floats, checked against the group sizes."""
    scores = source.score_groups(groups)
    check_scores(groups, scores, name)
    return [[float(x) for x in row] for row in scores]


def score_pairs(source: RewardSource, pairs: Sequence[PreferencePair]) -> list[tuple[float, float]]:
    """(chosen reward, rejected reward) for each pair, from any reward source."""
    return [(s[0], s[1]) for s in score_checked(source, [p.to_group() for p in pairs], "reward source")]


def scores_with_uncertainty(source: RewardSource, groups: Sequence[Group]) -> tuple[list[list[float]], list[list[float]]]:
    """`source.score_groups_with_uncertainty` for a ScoringMixin that overrides it (an ensemble),
    else its scores with an uncertainty of 0."""
    if isinstance(source, ScoringMixin) and type(source).score_groups_with_uncertainty is not \
            ScoringMixin.score_groups_with_uncertainty:
        return source.score_groups_with_uncertainty(groups)
    scores = source.score_groups(groups)
    return scores, [[0.0] * len(s) for s in scores]
