"""Accuracy of any reward source on a visual pair split, with the shuffled-image control.

One function for the demo, benchmarks and scripts: overall, per category, and the same pairs
with images shuffled between pairs (`controls.shuffle_images`), overall and per category. The
gap between the two is how much of the accuracy comes from the image. Torch-free; scores go
through the one scoring interface (`score_pairs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..data.schema import PreferencePair
from ..metrics import accuracy_by_key, pair_accuracy
from ..scoring.interface import RewardSource, score_pairs
from .controls import shuffle_images


def visual_report(source: RewardSource, pairs: Sequence[PreferencePair], shuffle_seed: int = 0) -> dict[str, Any]:
    """{"pairs", "accuracy", "shuffled", "image_effect_points", "per_category", "per_category_shuffled"}."""
    cats = [p.category for p in pairs]
    out: dict[str, Any] = {"pairs": len(pairs)}
    for name, split in (("", pairs), ("_shuffled", shuffle_images(pairs, seed=shuffle_seed))):
        scores = score_pairs(source, split)
        chosen, rejected = [c for c, _ in scores], [r for _, r in scores]
        out["accuracy" if not name else "shuffled"] = pair_accuracy(chosen, rejected)
        out[f"per_category{name}"] = {k: v["accuracy"] for k, v in accuracy_by_key(chosen, rejected, cats).items()}
    out["image_effect_points"] = 100 * (out["accuracy"] - out["shuffled"])
    return out
