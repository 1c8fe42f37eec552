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
from ..metrics import accuracy_by_key, accuracy_interval, correct, pair_accuracy, paired_difference_interval
from ..scoring.interface import RewardSource, score_pairs
from .controls import shuffle_images


def visual_report(source: RewardSource, pairs: Sequence[PreferencePair], shuffle_seed: int = 0) -> dict[str, Any]:
    """{"pairs", "accuracy", "shuffled", "image_effect_points", "per_category", "per_category_shuffled",
    "interval95"}: "interval95" holds the Wilson 95% intervals of "accuracy" and "shuffled" and the
    paired interval of the image effect in points (`metrics`), so a 400-pair split says how far a
    difference between runs is noise."""
    cats = [p.category for p in pairs]
    out: dict[str, Any] = {"pairs": len(pairs)}
    verdicts, intervals = {}, {}
    for name, split in (("", pairs), ("_shuffled", shuffle_images(pairs, seed=shuffle_seed))):
        scores = score_pairs(source, split)
        chosen, rejected = [c for c, _ in scores], [r for _, r in scores]
        key = "accuracy" if not name else "shuffled"
        out[key] = pair_accuracy(chosen, rejected)
        ci = accuracy_interval(chosen, rejected)
        verdicts[key], intervals[key] = correct(chosen, rejected), ci and list(ci)
        out[f"per_category{name}"] = {k: v["accuracy"] for k, v in accuracy_by_key(chosen, rejected, cats).items()}
    out["image_effect_points"] = 100 * (out["accuracy"] - out["shuffled"])
    effect = paired_difference_interval(verdicts["accuracy"], verdicts["shuffled"])
    out["interval95"] = {**intervals,
                         "image_effect_points": None if effect is None else [100 * effect["lo"], 100 * effect["hi"]]}
    return out


def report_line(report: dict[str, Any]) -> str:
    """One line of a `visual_report`: accuracy, shuffled, then each category's accuracy (short names)."""
    cats = ", ".join(f"{k.split('/')[-1]} {100 * v:.1f}" for k, v in report["per_category"].items())
    return f"{100 * report['accuracy']:.1f}% / {100 * report['shuffled']:.1f}% shuffled; {cats}"
