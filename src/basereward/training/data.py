"""Turning `data.*` config entries into the training and validation pair lists."""

from __future__ import annotations

from ..config import DataConfig
from ..data.schema import PreferencePair
from ..errors import ConfigError


def load_training_data(dc: DataConfig, seed: int) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Load every training file, apply mixing / length balancing / cap; load the validation file.

    Images must lie under `data.image_root` when it is set. An empty training set is a one-line
    error here, before any model is built.
    """
    from ..data import curation
    from ..data.pairs import load_pairs
    from ..data.paths import check_image_root

    if not dc.train:
        raise ConfigError("data.train names no training files: no training pairs "
                          "(give one or more pair files, e.g. data.train=[pairs.jsonl])")
    root = check_image_root(dc.image_root, "data.image_root") if dc.image_root else None
    per_file = {path: load_pairs(path, on_error=dc.on_error, image_root=root) for path in dc.train}
    pairs = [p for rows in per_file.values() for p in rows]
    if dc.text_ratio >= 0:
        by_kind = {
            "multimodal": [p for p in pairs if p.is_multimodal],
            "text": [p for p in pairs if not p.is_multimodal],
        }
        pairs = curation.mix(by_kind, text_ratio=dc.text_ratio, seed=seed)
    if dc.length_balance:
        pairs = curation.balance_length(pairs, seed=seed)
    if dc.max_pairs and len(pairs) > dc.max_pairs:
        import numpy as np

        # A seeded random subset, so a cap never keeps only the first file.
        keep = np.sort(np.random.default_rng([seed, 1]).permutation(len(pairs))[: dc.max_pairs])
        pairs = [pairs[i] for i in keep]
    val = load_pairs(dc.validation, on_error=dc.on_error, image_root=root) if dc.validation else []
    return pairs, val
