"""Reward benchmarks: one module per benchmark behind a two-function interface.

Each module exposes `NAME`, `DEFINITION` (one sentence: how the headline metric is computed),
`load(path) -> list[BenchItem]` (reads the benchmark's published local layout) and
`metrics(items, scores) -> dict` (pure; `scores[i][k]` is the reward of
`items[i].group.responses[k]`). Ties always count as wrong: "correct" means strictly greater.

`get_benchmark(name)` maps a registry name (dashes or underscores, any case) to its module.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ...data.pairs import json_object
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
    """Raise ValueError unless there is one score per response of every item."""
    if len(items) != len(scores):
        raise ValueError(f"got scores for {len(scores)} items, expected {len(items)}")
    for item, row in zip(items, scores):
        if len(row) != len(item.group.responses):
            raise ValueError(f"item {item.id}: got {len(row)} scores for {len(item.group.responses)} responses")


def pair_correct(item: BenchItem, row: Sequence[float]) -> bool:
    """Whether the preferred response of a two-response item scored strictly higher."""
    preferred = item.meta["preferred"]
    return float(row[preferred]) > float(row[1 - preferred])


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


def iter_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, record) for each record of a JSON list, JSONL or parquet file.

    The location is `file:line` for JSONL, `file: item i` for a JSON list and `file: row i` for
    parquet, so every DataError can point at the offending record.
    """
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _iter_parquet(path)
        return
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}") from e
    if suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json_object(line)
            except ValueError as e:
                raise DataError(f"{path}:{lineno}: {e}") from None
            yield f"{path}:{lineno}", rec
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from e
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: item {i}: expected a JSON object")
        yield f"{path}: item {i}", rec


def _iter_parquet(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a corrupt or non-parquet file
        raise DataError(f"{path}: not a readable parquet file: {e}") from e
    row = 0
    # Batches keep peak memory near one batch of rows (image bytes can be large).
    for batch in pf.iter_batches(batch_size=256):
        for rec in batch.to_pylist():
            yield f"{path}: row {row}", rec
            row += 1


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
