"""Scoring: the one reward interface (`RewardSource`, `ScoringMixin`) and the torch `Scorer`.

`from basereward.scoring import Scorer, length_estimate, default_device` works as before, but torch is only imported when one of those names is first used: the interface (and
the torch-free ensembles built on it) must not pull in a model framework.
"""

from __future__ import annotations

from typing import Any

from .interface import (
    RewardSource,
    ScoreShapeError,
    ScoringMixin,
    check_scores,
    score_checked,
    score_pairs,
)

_TORCH_NAMES = ("Scorer", "length_estimate", "default_device")

__all__ = [
    "RewardSource", "ScoreShapeError", "ScoringMixin", "check_scores", "score_checked", "score_pairs", *_TORCH_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        from . import scorer

        return getattr(scorer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
