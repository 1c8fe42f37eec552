"""Any file in the project's pair JSONL format (see `basereward.data.pairs`), e.g. a held-out
HH-RLHF validation split or a synthetic multimodal set.

Metric: a pair is correct when r(chosen) > r(rejected) strictly (ties are wrong). `accuracy` is
the fraction of correct pairs; `per_category` and `per_source` the same within each category /
source (an empty string is reported as `(none)`); `mean_chosen`, `mean_rejected` and
`mean_margin` are the means of r(chosen), r(rejected) and r(chosen) - r(rejected).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...metrics import accuracy_by_key, pair_accuracy, reward_stats
from . import BenchItem, check_scores, pair_rewards

NAME = "pairs"
DEFINITION = (
    "accuracy = fraction of pairs with r(chosen) > r(rejected) strictly, overall and per category "
    "and source; mean_margin = mean of r(chosen) - r(rejected)."
)


def load(path: str, image_root: str | None = None) -> list[BenchItem]:
    """Pairs from a pair JSONL file (any bad row is a DataError; images confined to `image_root`)."""
    from ...data.pairs import load_pairs

    return [
        BenchItem(
            id=p.id,
            group=p.to_group(),
            meta={"preferred": 0, "category": p.category, "source": p.source},
        )
        for p in load_pairs(path, on_error="fail", image_root=image_root)
    ]


def metrics(items: Sequence[BenchItem], scores: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Accuracy overall, per category and per source, and the mean rewards and margin."""
    check_scores(items, scores)
    if not items:
        raise ValueError("pair metrics need at least one pair")
    chosen, rejected = pair_rewards(items, scores)
    stats = reward_stats(chosen, rejected)

    def by(key: str) -> dict[str, float]:
        keys = [item.meta.get(key) or "" for item in items]
        return {k: v["accuracy"] for k, v in accuracy_by_key(chosen, rejected, keys).items()}

    return {
        "accuracy": pair_accuracy(chosen, rejected),
        "num_pairs": len(items),
        "per_category": by("category"),
        "per_source": by("source"),
        "mean_chosen": stats["mean_chosen"],
        "mean_rejected": stats["mean_rejected"],
        "mean_margin": stats["gap"],  # mean of differences = difference of means
    }
