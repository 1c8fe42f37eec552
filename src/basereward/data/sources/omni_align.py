"""OmniAlign-V-DPO (`PhoenixZ/OmniAlign-V-DPO`) -> multimodal `PreferencePair`s.

Published as one JSONL per subset (chart, creation, diagram, ins_follow, knowledge, poster) beside
`images.tar`; rows are `{image, prompt, chosen, rejected}` with `image` one path or a list of them,
relative to the folder the archive was unpacked in (`media_dir`, default: the dataset folder).
`path` is that folder (every subset file in it, sorted) or one subset file; the subset — the
file's name without suffix — is the category, and ids are `omni-align:<subset>:<row>`.
`<image>` placeholders in the prompt are removed (images travel in `images`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
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
from basereward.errors import DataError

_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet", ".json", ".json.gz")

_COLUMNS = ("image", "prompt", "chosen", "rejected")


@register("omni-align", multimodal=True, summary="PhoenixZ/OmniAlign-V-DPO: one JSONL per subset + images")
def read(path: str, ctx: SourceContext, *, media_dir: str | None = None) -> Iterator[PreferencePair]:
    """Pairs of every subset file under `path` (or of the one file `path`)."""
    base = media_base(path, media_dir)
    for file in _subset_files(path):
        subset = _stem(file.name)

        def parse(row: dict[str, Any], index: int, subset: str = subset) -> list[PreferencePair]:
            prompt = prompt_text(text(row, "prompt"))
            chosen, rejected = text(row, "chosen"), text(row, "rejected")
            images = images_of(row.get("image"), ctx, base)
            if not images:
                raise Skip("missing image")  # every OmniAlign-V question is about its image(s)
            return [make_pair(ctx, ctx.pair_id(subset, index), prompt, chosen, rejected, images, subset)]

        yield from pairs_from_rows(iter_source_rows(file), ctx, parse, _COLUMNS, "OmniAlign-V-DPO")


def _subset_files(path: str) -> list[Path]:
    p = Path(path)
    if not p.is_dir():
        return [p]
    # Subset files sit at the top of the dataset folder; the unpacked images below it hold none.
    files = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(_SUFFIXES) and not f.name.startswith("."))
    if not files:
        raise DataError(f"{path}: no subset files (.jsonl / .parquet / .json) in this directory")
    return files


def _stem(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0]
