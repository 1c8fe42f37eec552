"""MM-RLHF (`yifanzhang114/MM-RLHF`) -> multimodal `PreferencePair`s, from either of its two files.

The release unzips to `MM-RLHF/{long,mcq,safety,short,video}/` (images; a video is a folder of
frames) beside two JSONL files, and each row says which file it comes from:

- `dpo_pairs.jsonl` (the pairs used for DPO and reward-model training):
  `{id, image | video, prompt, chosen, rejected, chosen_reason, rejected_reason}`; `id` names the
  prompt, so a prompt's several pairs get ids `mm-rlhf:<id>:<row>`.
- `data.jsonl` (the human annotation, one prompt a row): `{id, question, answer, image, video,
  models_output, faithfulness, helpfulness, ethical, final_ranking, score_reasons,
  ranking_reason}` with 3-5 `models_output`. The per-output scores (`score: ranking`, the default,
  uses `final_ranking` with rank 1 best; `helpfulness` / `faithfulness` / `ethical` use that
  column, higher better) become a ranking, and `curation.ranking_to_pairs` makes every ordered
  pair, ties and identical texts dropped; ids `mm-rlhf:<id>-<i>-<j>`. A row whose responses all
  tie is skipped as "all responses tied". Scores must be one number per output (a numeric
  string is read as its number); anything else skips the row as "unreadable <column>".

Media paths are relative to `media_dir` (default: the data file's folder, i.e. `MM-RLHF/`); a
video folder gives `max_frames` evenly spaced frames. The category is the media folder
(short / long / mcq / safety / video).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from basereward.data import curation
from basereward.data.curation import Ranking
from basereward.data.schema import PreferencePair
from basereward.data.sources.base import SourceContext, iter_source_rows, register
from basereward.data.sources.media import (
    DEFAULT_MAX_FRAMES,
    Skip,
    check_max_frames,
    first_component,
    frames_of,
    images_of,
    make_pair,
    media_base,
    pairs_from_rows,
    prompt_text,
    text,
)
from basereward.errors import ConfigError

SCORES = ("ranking", "helpfulness", "faithfulness", "ethical")


@register("mm-rlhf", multimodal=True, summary="yifanzhang114/MM-RLHF: dpo_pairs.jsonl pairs or data.jsonl rankings")
def read(
    path: str,
    ctx: SourceContext,
    *,
    score: str = "ranking",
    media_dir: str | None = None,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> Iterator[PreferencePair]:
    """Pairs of an MM-RLHF file (pairs rows and annotation rows are told apart by their keys)."""
    if score not in SCORES:
        raise ConfigError(f"mm-rlhf: score must be one of {', '.join(SCORES)}, got {score!r}")
    max_frames = check_max_frames(max_frames)
    base = media_base(path, media_dir)

    def media(row: dict[str, Any]) -> tuple[tuple[str, ...], str]:
        if row.get("image"):
            return images_of(row["image"], ctx, base), first_component(row["image"])
        if row.get("video"):
            return frames_of(row["video"], ctx, base, max_frames), first_component(row["video"])
        raise Skip("missing image or video")  # every MM-RLHF prompt is about an image or a video

    def parse(row: dict[str, Any], index: int) -> list[PreferencePair]:
        if "models_output" in row:
            return _ranked_pairs(ctx, row, index, score, media)
        prompt = prompt_text(text(row, "prompt"))
        chosen, rejected = text(row, "chosen"), text(row, "rejected")
        images, category = media(row)
        return [make_pair(ctx, ctx.pair_id(_row_id(row, index), index), prompt, chosen, rejected, images, category)]

    yield from pairs_from_rows(iter_source_rows(path), ctx, parse, _columns(score), "MM-RLHF")


def _columns(score: str):
    """The published columns a row must have: a pairs row, or an annotation row (with the
    score column asked for)."""
    column = "final_ranking" if score == "ranking" else score

    def columns(row: dict[str, Any]) -> tuple[str, ...]:
        if "models_output" in row:
            return ("question", "models_output", column)
        return ("prompt", "chosen", "rejected")

    return columns


def _row_id(row: dict[str, Any], index: int) -> str:
    value = row.get("id")
    return str(value) if isinstance(value, (str, int)) and str(value) else f"row{index}"


def _ranked_pairs(ctx: SourceContext, row: dict[str, Any], index: int, score: str, media) -> list[PreferencePair]:
    prompt = prompt_text(text(row, "question"), "question")
    outputs = row["models_output"]
    if not isinstance(outputs, list) or not all(isinstance(o, str) and o.strip() for o in outputs):
        raise Skip("unreadable models_output")
    if len(outputs) < 2:
        raise Skip("fewer than two outputs")
    column = "final_ranking" if score == "ranking" else score
    values = _numbers(row.get(column), len(outputs))
    if values is None:
        raise Skip(f"unreadable {column}")
    # Rank 1 is the best answer: negate so that "higher is better" as Ranking expects.
    scores = tuple(-v for v in values) if score == "ranking" else values
    images, category = media(row)
    ranking = Ranking(
        id=ctx.pair_id(_row_id(row, index)), prompt=prompt, responses=tuple(o.strip() for o in outputs),
        scores=scores, images=images, source=ctx.name, category=category,
    )
    pairs = curation.ranking_to_pairs(ranking)
    if not pairs:
        raise Skip("all responses tied")
    return pairs


def _numbers(value: Any, n: int) -> tuple[float, ...] | None:
    """One finite number per output, or None."""
    if not isinstance(value, list) or len(value) != n:
        return None
    out = []
    for v in value:
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        out.append(float(v))
    return tuple(out)
