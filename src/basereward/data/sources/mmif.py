"""MMIF-23k (MM-IFEngine's DPO set, MM-IFDPO-23k) -> `PreferencePair`s with multi-turn history.

Rows are LLaMA-Factory ShareGPT preference rows:
`{conversations: [{from, value}, ...], chosen: {from, value}, rejected: {from, value}, images: [path]}`
with one `<image>` placeholder in the text per image. The conversation alternates human / gpt,
starts and ends with a human turn (LLaMA-Factory refuses anything else for ranking data, and so do
we); the last human turn becomes `prompt`, the earlier turns `history`. Placeholders are checked
against `images` (LLaMA-Factory errors on a mismatch; here the row is skipped) and then removed:
images travel in `images` and the backbone puts them in the first user turn. A system prompt, tool
turns (`observation` / `function_call`) or videos have no place in a `PreferencePair`, so those rows
are skipped under their own reason rather than changed.

Image paths are relative to `media_dir` (LLaMA-Factory's default: the dataset's folder, here the
data file's folder). Ids are `mmif:<row>`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from basereward.data.schema import PreferencePair
from basereward.data.sources.base import SourceContext, iter_source_rows, register
from basereward.data.sources.media import (
    Skip,
    count_placeholders,
    images_of,
    make_pair,
    media_base,
    pairs_from_rows,
    strip_placeholders,
)

# LLaMA-Factory's ShareGPT tags (and the OpenAI-style names some exports use instead).
_USER = ("human", "user")
_ASSISTANT = ("gpt", "assistant")
_TOOL = ("observation", "function_call", "function", "tool")

_COLUMNS = ("conversations", "chosen", "rejected")


@register("mmif", multimodal=True, summary="MMIF-23k: LLaMA-Factory ShareGPT DPO rows with <image> placeholders")
def read(path: str, ctx: SourceContext, *, media_dir: str | None = None) -> Iterator[PreferencePair]:
    """Pairs of an MMIF-23k file (JSON list, JSONL or parquet)."""
    base = media_base(path, media_dir)

    def parse(row: dict[str, Any], index: int) -> list[PreferencePair]:
        turns = _conversation(row)
        chosen, rejected = _response(row, "chosen"), _response(row, "rejected")
        if row.get("videos"):
            raise Skip("videos (not supported)")
        images = images_of(row.get("images"), ctx, base)
        if sum(count_placeholders(t) for _, t in turns) != len(images):
            raise Skip("<image> placeholders do not match images")
        cleaned = [(role, strip_placeholders(t)) for role, t in turns]
        if any(not t for _, t in cleaned):
            raise Skip("empty turn")
        *history, (_, prompt) = cleaned
        return [make_pair(ctx, ctx.pair_id(index), prompt, chosen, rejected, images, history=tuple(history))]

    yield from pairs_from_rows(iter_source_rows(path), ctx, parse, _COLUMNS, "LLaMA-Factory ShareGPT preference")


def _conversation(row: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, text) turns: user/assistant alternating, user first and last."""
    conv = row.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise Skip("missing conversations")
    if row.get("system"):
        raise Skip("system prompt (not supported)")
    turns = []
    for msg in conv:
        if not isinstance(msg, dict) or not isinstance(msg.get("from"), str) or not isinstance(msg.get("value"), str):
            raise Skip("malformed conversation")
        tag = msg["from"]
        if tag == "system":
            raise Skip("system prompt (not supported)")
        if tag in _TOOL:
            raise Skip("tool turns (not supported)")
        if tag not in _USER + _ASSISTANT:
            raise Skip("unknown role in conversation")
        turns.append(("user" if tag in _USER else "assistant", msg["value"]))
    if len(turns) % 2 == 0 or any(role != ("user" if i % 2 == 0 else "assistant") for i, (role, _) in enumerate(turns)):
        raise Skip("conversation must alternate user/assistant and end with the user")
    return turns


def _response(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, dict) or value.get("from") not in _ASSISTANT or not isinstance(value.get("value"), str):
        raise Skip(f"malformed {key}")
    text = value["value"].strip()
    if not text:
        raise Skip(f"empty {key}")
    return text
