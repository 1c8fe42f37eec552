"""MMPR v1.2 (`OpenGVLab/MMPR-v1.2`) -> `PreferencePair`s, subset by subset as `meta.json` lists them.

`meta.json` maps each subset to `{root, annotation, data_augment, repeat_time, length}`; the
annotation is JSONL with rows `{image, question, chosen, rejected}` where `image` is a path under
`root`, a list of them (multi-image), or absent (text-only); a `video` row names a video instead.
`data_augment` and `length` are training-time hints and are not used here.

Relative `root` / `annotation` paths: InternVL resolves them against its working directory, which
for the published layout (`MMPR-v1.2/meta.json` with entries like `MMPR-v1.2/annotations/x.jsonl`)
is the folder holding `MMPR-v1.2/`. So each is tried against meta.json's folder, then its parent;
`base_dir` pins one folder instead.

`repeat_time` is honoured exactly as InternVL's MPO loader does, deterministically: a subset of n
rows contributes the first floor(n × repeat_time) rows of the annotation repeated end to end, so
2 means every row twice and 0.5 the first half (InternVL then shuffles; the build's mixing does).
Repeats get ids `mmpr:<subset>:<row>#r<pass>`; rows left out by a repeat_time below 1 are counted
as skipped "not sampled (repeat_time < 1)". Deduplicating after this adapter undoes the repeats.
`use_repeat_time: false` reads every row once instead. Counts follow the repeated stream (a row
read twice counts twice). The category is the subset name.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from itertools import islice
from typing import Any

from basereward.data.schema import PreferencePair
from basereward.data.sources.base import SourceContext, register
from basereward.data.sources.media import (
    DEFAULT_MAX_FRAMES,
    check_max_frames,
    frames_of,
    images_of,
    make_pair,
    pairs_from_rows,
    prompt_text,
    text,
)
from basereward.errors import ConfigError, DataError
from basereward.io import iter_lines, iter_records, read_json

NOT_SAMPLED = "not sampled (repeat_time < 1)"

_COLUMNS = ("question", "chosen", "rejected")


@register("mmpr", multimodal=True, summary="OpenGVLab/MMPR-v1.2: meta.json + JSONL annotation per subset")
def read(
    path: str,
    ctx: SourceContext,
    *,
    subsets: list[str] | None = None,
    use_repeat_time: bool = True,
    base_dir: str | None = None,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> Iterator[PreferencePair]:
    """Pairs of every subset in `meta.json` (or only `subsets`), in meta.json order."""
    meta_path = os.path.join(path, "meta.json") if os.path.isdir(path) else path
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or not all(isinstance(v, dict) for v in meta.values()):
        raise DataError(f"{meta_path}: expected {{subset: {{root, annotation, repeat_time, ...}}}}")
    if subsets is not None:
        unknown = sorted(set(subsets) - set(meta))
        if unknown:
            raise ConfigError(f"mmpr: subsets not in {meta_path}: {', '.join(unknown)}")
    if not isinstance(use_repeat_time, bool):
        raise ConfigError(f"mmpr: use_repeat_time must be true or false, got {use_repeat_time!r}")
    max_frames = check_max_frames(max_frames)
    anchors = [base_dir] if base_dir is not None else _anchors(meta_path)
    for name, entry in meta.items():
        if subsets is not None and name not in subsets:
            continue
        repeat = _repeat_time(meta_path, name, entry) if use_repeat_time else 1
        annotation = _locate(entry.get("annotation"), anchors, f"{meta_path}: subset {name!r}: annotation")
        root = _root(entry.get("root", ""), anchors)
        yield from _subset(ctx, name, annotation, root, repeat, max_frames)


def _anchors(meta_path: str) -> list[str]:
    here = os.path.dirname(os.path.abspath(meta_path))
    return [here, os.path.dirname(here)]


def _locate(rel: Any, anchors: list[str], what: str) -> str:
    """The annotation file: absolute, or relative to the first anchor where it exists."""
    if not isinstance(rel, str) or not rel:
        raise DataError(f"{what} must be a file path")
    candidates = [rel] if os.path.isabs(rel) else [os.path.join(a, rel) for a in anchors]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise DataError(f"{what} {rel} not found (tried {', '.join(candidates)})")


def _root(rel: Any, anchors: list[str]) -> str:
    """The image root: the first anchor under which it exists (else the first; rows then skip
    with "image not found", which the stats show)."""
    if not isinstance(rel, str):
        return anchors[0]
    if os.path.isabs(rel):
        return rel
    for anchor in anchors:
        if os.path.isdir(os.path.join(anchor, rel)):
            return os.path.join(anchor, rel)
    return os.path.join(anchors[0], rel)


def _repeat_time(meta_path: str, name: str, entry: dict[str, Any]) -> float:
    value = entry.get("repeat_time", 1)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise DataError(f"{meta_path}: subset {name!r}: repeat_time must be a positive number, got {value!r}")
    return value


def _subset(
    ctx: SourceContext, name: str, annotation: str, root: str, repeat: float, max_frames: int
) -> Iterator[PreferencePair]:
    if float(repeat).is_integer():
        passes, extra = int(repeat), 0
    else:
        # Only a fractional repeat_time needs the row count (one cheap pass over the lines).
        n = _count_rows(annotation)
        take = math.floor(n * repeat)
        passes, extra = divmod(take, n) if n else (0, 0)
        if take < n:
            ctx.rows += n - take
            ctx.skipped[NOT_SAMPLED] += n - take
    for p in range(passes + (1 if extra else 0)):
        rows = iter_records(annotation)
        if p == passes:  # the partial last pass: only the first `extra` rows
            rows = islice(rows, extra)
        yield from pairs_from_rows(rows, ctx, _parser(ctx, name, root, p, max_frames), _COLUMNS, "MMPR")


def _count_rows(annotation: str) -> int:
    if annotation.lower().removesuffix(".gz").endswith(".jsonl"):
        return sum(1 for _ in iter_lines(annotation))
    return sum(1 for _ in iter_records(annotation))


def _parser(ctx: SourceContext, name: str, root: str, repeat_pass: int, max_frames: int):
    suffix = f"#r{repeat_pass}" if repeat_pass else ""

    def parse(row: dict[str, Any], index: int) -> list[PreferencePair]:
        prompt = prompt_text(text(row, "question"), "question")
        chosen, rejected = text(row, "chosen"), text(row, "rejected")
        # InternVL's order: a non-empty `image` wins, then `video`, else the row is text-only.
        images = images_of(row.get("image"), ctx, root)
        if not images and row.get("video"):
            images = frames_of(row["video"], ctx, root, max_frames)
        pair_id = ctx.pair_id(name, f"{index}{suffix}")
        return [make_pair(ctx, pair_id, prompt, chosen, rejected, images, name)]

    return parse
