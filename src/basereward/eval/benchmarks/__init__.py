"""Reward benchmarks: one module per benchmark behind a two-function interface.

Each module exposes `NAME`, `DEFINITION` (one sentence: how the headline metric is computed),
`load(path, image_root=None) -> list[BenchItem]` (reads the benchmark's published local layout;
image files it names must lie under `image_root` when one is given, see `data.paths`) and
`metrics(items, scores) -> dict` (pure; `scores[i][k]` is the reward of
`items[i].group.responses[k]`). Ties always count as wrong: "correct" means strictly greater
(`basereward.metrics`). Records are read with `basereward.io.iter_records` (JSON list, JSONL or
Parquet), so every error names its `file:line` or `file: row i`.

`get_benchmark(name)` maps a registry name (dashes or underscores, any case) to its module.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ...data.schema import Group
from ...errors import ConfigError, DataError

BENCHMARKS: dict[str, str] = {
    "vl_rewardbench": "vl_rewardbench",
    "multimodal_rewardbench": "multimodal_rewardbench",
    "mm_rlhf_reward_bench": "mm_rlhf_reward_bench",
    "rewardbench": "rewardbench",
    "rm_bench": "rm_bench",
    "pairs": "pairs",
}
"""Registry name -> module name inside this package."""

_ALIASES = {
    "vlrewardbench": "vl_rewardbench",
    "mm_rewardbench": "multimodal_rewardbench",
    "multimodal_reward_bench": "multimodal_rewardbench",
    "mm_rlhf": "mm_rlhf_reward_bench",
    "mm_rlhf_rewardbench": "mm_rlhf_reward_bench",
    "reward_bench": "rewardbench",
    "rmbench": "rm_bench",
}


@dataclass(frozen=True)
class BenchItem:
    """One benchmark example: the group to score and what the metric needs to judge it.

    Pair-like items (two responses, one preferred) carry `meta["preferred"]`, the index of the
    better response.
    """

    id: str
    group: Group
    meta: dict[str, Any] = field(default_factory=dict)


def canonical_name(name: str) -> str:
    """The registry name for `name` (e.g. `VL-RewardBench` -> `vl_rewardbench`)."""
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    return key


def get_benchmark(name: str) -> ModuleType:
    """The benchmark module registered under `name`."""
    return importlib.import_module(f"{__name__}.{BENCHMARKS[canonical_name(name)]}")


# ---------------------------------------------------------------------------------------------
# Helpers shared by the benchmark modules.


def check_scores(items: Sequence[BenchItem], scores: Sequence[Sequence[float]]) -> None:
    """ScoreShapeError unless there is one score per response of every item."""
    from ...scoring.interface import check_scores as check_group_scores

    check_group_scores([item.group for item in items], scores, name="the benchmark scores")


def pair_rewards(items: Sequence[BenchItem], scores: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    """(chosen, rejected) rewards of two-response items: `meta["preferred"]` is the chosen index.

    Accuracies are then computed by `basereward.metrics` (strictly greater; ties are wrong).
    """
    chosen = [float(row[item.meta["preferred"]]) for item, row in zip(items, scores)]
    rejected = [float(row[1 - item.meta["preferred"]]) for item, row in zip(items, scores)]
    return chosen, rejected


def mean_or_none(values: Sequence[float]) -> float | None:
    """The arithmetic mean, or None for an empty sequence (a group with no items)."""
    return sum(values) / len(values) if values else None


def existing_path(path: str | Path) -> Path:
    """`path` as a Path, or a DataError if nothing is there."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory")
    return p


def expand(path: str | Path, patterns: Sequence[str]) -> list[Path]:
    """A file as itself, or the sorted files in a directory (recursively) matching `patterns`."""
    p = existing_path(path)
    if p.is_file():
        return [p]
    files = sorted({f for pat in patterns for f in p.rglob(pat) if f.is_file()})
    if not files:
        raise DataError(f"{p}: directory holds no {' or '.join(patterns)} files")
    return files


def field_of(rec: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    """`rec[key]`, or a DataError naming the record if it is missing or of the wrong type."""
    if key not in rec or rec[key] is None:
        raise DataError(f"{where}: missing field {key!r}")
    value = rec[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DataError(f"{where}: field {key!r} should be {names}, got {type(value).__name__}")
    return value


def text_list(rec: dict[str, Any], key: str, where: str, length: int) -> list[str]:
    """`rec[key]` as a list of exactly `length` strings, or a DataError."""
    value = field_of(rec, key, where, (list, tuple))
    if len(value) != length or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: field {key!r} should be a list of {length} strings")
    return list(value)


def record_id(rec: dict[str, Any], where: str, key: str = "id") -> str:
    """The record's id as a string (published ids are strings or integers)."""
    value = field_of(rec, key, where, (str, int))
    return str(value)
