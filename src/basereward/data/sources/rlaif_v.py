"""RLAIF-V (`openbmb/RLAIF-V-Dataset`) -> multimodal `PreferencePair`s.

Published as parquet shards (`RLAIF-V-Dataset_000.parquet`, ...) whose rows are
`{ds_name, image: {bytes, path}, question, chosen, rejected, origin_dataset, origin_split, idx,
image_path}`; a `datasets.save_to_disk` copy or a JSONL export with `image` as a path reads the same.
Embedded image bytes are written once, unchanged, under the build's image directory; a path is
resolved against `media_dir` (default: the data path's folder). The pair id is the row's `idx`
(its published data index) and the category its `origin_dataset` (coco, vqav2, ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from basereward.data.schema import PreferencePair
from basereward.data.sources.base import SourceContext, iter_source_rows, register
from basereward.data.sources.media import (
    Skip,
    images_of,
    make_pair,
    media_base,
    pairs_from_rows,
    prompt_text,
    text,
)

_COLUMNS = ("image", "question", "chosen", "rejected")


@register("rlaif-v", multimodal=True, summary="openbmb/RLAIF-V-Dataset: parquet shards / save_to_disk / JSONL")
def read(path: str, ctx: SourceContext, *, media_dir: str | None = None) -> Iterator[PreferencePair]:
    """Pairs of an RLAIF-V copy; rows without an image, text or distinct responses are skipped."""
    base = media_base(path, media_dir)

    def parse(row: dict[str, Any], index: int) -> list[PreferencePair]:
        prompt = prompt_text(text(row, "question"), "question")
        chosen, rejected = text(row, "chosen"), text(row, "rejected")
        images = images_of(row.get("image"), ctx, base)
        if not images:
            raise Skip("missing image")  # every RLAIF-V pair is about its image
        idx = row.get("idx")
        pair_id = ctx.pair_id(idx if isinstance(idx, (str, int)) and str(idx) else f"row{index}")
        origin = row.get("origin_dataset")
        return [make_pair(ctx, pair_id, prompt, chosen, rejected, images, origin if isinstance(origin, str) else "")]

    yield from pairs_from_rows(iter_source_rows(path), ctx, parse, _COLUMNS, "RLAIF-V")
