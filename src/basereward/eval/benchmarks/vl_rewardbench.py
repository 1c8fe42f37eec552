"""VL-RewardBench (Li et al., 2024; HF dataset `MMInstruction/VL-RewardBench`).

Layout: parquet file(s) with columns `id`, `query`, `response` (2 strings), `image` (the HF
Image struct `{bytes, path}`), `human_ranking` (rank per response; the response ranked 0 is the
better one) and `query_source`. `load` takes one parquet file or a directory searched
recursively for `*.parquet`.

Metric: an item is correct when the human-preferred response gets a strictly higher reward
(ties are wrong). Items are grouped by id prefix, case-insensitively: `hallucination_`, `rlaif`,
`rlhf` -> Hallucination; `mathverse`, `mmmu` -> Reasoning; everything else -> General (the
published 1,250 items split 183 Reasoning / 749 Hallucination / 318 General; a later revision of
the card lists 1,247). `General`, `Hallucination`, `Reasoning` are per-group accuracies;
`Overall Accuracy` is the micro accuracy over all items; `Macro Average Accuracy` is the mean of
the group accuracies (over the groups that have items). Values are fractions in [0, 1].

Note: R1-Reward's evaluation script files the RLAIF-V/RLHF-V ids under General; we follow the
benchmark's own grouping (they are hallucination pairs), so numbers computed with that script
differ in the General/Hallucination split and the macro average.

Images are opened lazily (PIL decodes on first use), so memory holds the compressed bytes only.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from ...data.paths import ImagePathError, confine
from ...data.schema import Group
from ...errors import DataError
from ...io import iter_records
from ...metrics import accuracy_by_key, pair_accuracy
from . import BenchItem, check_scores, expand, field_of, mean_or_none, pair_rewards, text_list

NAME = "vl_rewardbench"
DEFINITION = (
    "Accuracy = fraction of items whose human-preferred response (human_ranking 0) gets a strictly "
    "higher reward, per group by id prefix (hallucination_/rlaif/rlhf -> Hallucination, "
    "mathverse/mmmu -> Reasoning, rest -> General), micro over all items (Overall Accuracy) and "
    "mean of the three group accuracies (Macro Average Accuracy)."
)
GROUPS = ("General", "Hallucination", "Reasoning")
_HALLUCINATION_PREFIXES = ("hallucination_", "rlaif", "rlhf")
_REASONING_PREFIXES = ("mathverse", "mmmu")


def group_of(item_id: str) -> str:
    """The benchmark group of an item id."""
    key = item_id.lower()
    if key.startswith(_HALLUCINATION_PREFIXES):
        return "Hallucination"
    if key.startswith(_REASONING_PREFIXES):
        return "Reasoning"
    return "General"


def load(path: str, image_root: str | None = None) -> list[BenchItem]:
    """Items from one parquet file or a directory of them; image paths confined to `image_root`."""
    items = []
    for file in expand(path, ["*.parquet"]):
        for where, rec in iter_records(file):
            items.append(_item(rec, where, file.parent, image_root))
    return items


def _item(rec: dict[str, Any], where: str, base: Path, image_root: str | None) -> BenchItem:
    item_id = field_of(rec, "id", where)
    where = f"{where} (id {item_id})"
    query = field_of(rec, "query", where)
    responses = text_list(rec, "response", where, 2)
    ranking = field_of(rec, "human_ranking", where, (list, tuple))
    if len(ranking) != 2 or sorted(ranking) != [0, 1]:
        raise DataError(f"{where}: human_ranking should rank the 2 responses 0 and 1, got {ranking}")
    preferred = list(ranking).index(0)
    meta = {
        "group": group_of(item_id),
        "query_source": rec.get("query_source") or "",
        "preferred": preferred,
        "human_ranking": list(ranking),
    }
    image = _image(rec.get("image"), where, base, image_root)
    group = Group(prompt=query, responses=tuple(responses), images=(image,))
    return BenchItem(id=item_id, group=group, meta=meta)


def _image(value: Any, where: str, base: Path, image_root: str | None) -> Any:
    """A lazily opened PIL image from the HF Image struct, raw bytes, or a path."""
    data, path = None, None
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
    elif isinstance(value, (bytes, bytearray)):
        data = value
    elif isinstance(value, str):
        path = value
    if data:
        try:
            return Image.open(io.BytesIO(data))
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{where}: image bytes are not a readable image: {e}") from e
    if path:
        # HF stores the original file name here; it is only usable if the file sits beside us.
        p = Path(path) if Path(path).is_absolute() else base / path
        try:
            real = confine(path, base_dir=str(base), root=image_root)
        except ImagePathError as exc:
            raise DataError(f"{where}: {exc.reason}: {path}") from None
        if os.path.isfile(real):
            return real
        raise DataError(f"{where}: image has no bytes and {p} does not exist")
    raise DataError(f"{where}: missing image")


def metrics(items: Sequence[BenchItem], scores: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Per-group, overall (micro) and macro accuracy; see the module docstring."""
    check_scores(items, scores)
    chosen, rejected = pair_rewards(items, scores)
    by_group = accuracy_by_key(chosen, rejected, [item.meta["group"] for item in items])
    result: dict[str, Any] = {g: by_group[g]["accuracy"] if g in by_group else None for g in GROUPS}
    result["Overall Accuracy"] = pair_accuracy(chosen, rejected)
    result["Macro Average Accuracy"] = mean_or_none([result[g] for g in GROUPS if result[g] is not None])
    result["counts"] = {g: by_group[g]["n"] if g in by_group else 0 for g in GROUPS}
    return result
