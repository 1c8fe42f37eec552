"""Turning `data.*` config entries into the training and validation pair sequences.

An entry of `data.train` is a pair JSONL file (loaded as a list) or a `basereward data build`
directory (its `train` split, read lazily from the memory-mapped Arrow files: a 2.8M-pair mix is
never held as Python objects). `data.validation` may also name a build directory: its
`validation` split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config import DataConfig
from ..data.schema import PreferencePair
from ..errors import ConfigError


def load_training_data(dc: DataConfig, seed: int) -> tuple[Sequence[PreferencePair], list[PreferencePair]]:
    """Load every training entry, apply mixing / length balancing / cap; load the validation set.

    Images must lie under `data.image_root` when it is set (JSONL files; a build checked its
    images against the recipe's `image_root` when it was built). An empty training set is a
    one-line error here, before any model is built.
    """
    from ..data import curation
    from ..data.built import BuiltPairs, Concat, Subset, is_build_dir
    from ..data.pairs import load_pairs
    from ..data.paths import check_image_root

    if not dc.train:
        raise ConfigError("data.train names no training files: no training pairs "
                          "(give one or more pair files, e.g. data.train=[pairs.jsonl])")
    root = check_image_root(dc.image_root, "data.image_root") if dc.image_root else None
    builds = [path for path in dc.train if is_build_dir(path)]
    if builds and (dc.text_ratio >= 0 or dc.length_balance):
        # Curation of a build happens in its recipe, over the whole stream; redoing it here would
        # hold every pair in memory.
        raise ConfigError(f"data.train includes the build directory {builds[0]}: set text_ratio / length_target "
                          "in its recipe (data.text_ratio=-1, data.length_balance=false here)")
    parts = [BuiltPairs(path) if is_build_dir(path) else load_pairs(path, on_error=dc.on_error, image_root=root)
             for path in dc.train]
    pairs: Sequence[PreferencePair]
    if builds:
        pairs = parts[0] if len(parts) == 1 else Concat(parts)
    else:
        pairs = [p for rows in parts for p in rows]
        if dc.text_ratio >= 0:
            by_kind = {
                "multimodal": [p for p in pairs if p.is_multimodal],
                "text": [p for p in pairs if not p.is_multimodal],
            }
            pairs = curation.mix(by_kind, text_ratio=dc.text_ratio, seed=seed)
        if dc.length_balance:
            pairs = curation.balance_length(pairs, seed=seed)
    if dc.max_pairs and len(pairs) > dc.max_pairs:
        # A seeded random subset, so a cap never keeps only the first file.
        keep = np.sort(np.random.default_rng([seed, 1]).permutation(len(pairs))[: dc.max_pairs])
        pairs = Subset(pairs, keep) if builds else [pairs[i] for i in keep]
    if not dc.validation:
        val = []
    elif is_build_dir(dc.validation):
        val = list(BuiltPairs(dc.validation, "validation"))
    else:
        val = load_pairs(dc.validation, on_error=dc.on_error, image_root=root)
    return pairs, val
