"""What the multimodal adapters share: the per-row skip policy, required text fields, `<image>`
placeholders, media paths (one image, a list, or a video stored as a folder of frames).

A row that cannot give a pair raises `Skip(reason)` inside the adapter's row parser (unusable
images become skips too); `pairs_from_rows` counts it under that short reason and goes on, so one
bad row never stops a build of millions. A row without a column of the published schema is another
dataset or layout, a mistake in the recipe: DataError, as are file-level problems (unreadable file,
malformed JSON).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from basereward.data.paths import ImagePathError, confine
from basereward.data.schema import PreferencePair, Turn
from basereward.data.sources.base import SourceContext, image_of
from basereward.errors import ConfigError, DataError

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
DEFAULT_MAX_FRAMES = 8
"""Frames kept per video: evenly spaced, first and last included (R1-Reward samples the same way
with np.linspace over the sorted frame files)."""

# Images travel in `PreferencePair.images` and every backbone puts them in the first user turn,
# so a literal "<image>" left in the text would only be read as ordinary tokens. A placeholder
# that opens a line goes with the newline after it ("<image>\nWhat is ..."); one inside a line
# ("Image-1: <image>\n") goes alone, so the line structure of the text stays.
_LEADING_PLACEHOLDER = re.compile(r"^[ \t]*<(?:image|video)>[ \t]*\n?", re.MULTILINE)
_INLINE_PLACEHOLDER = re.compile(r"[ \t]*<(?:image|video)>")
_DIGITS = re.compile(r"(\d+)")


class Skip(Exception):
    """A raw row that gives no pair; `reason` is the short key counted in the source's stats."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def pairs_from_rows(
    rows: Iterable[tuple[str, dict[str, Any]]],
    ctx: SourceContext,
    parse: Callable[[dict[str, Any], int], list[PreferencePair]],
    columns: Sequence[str] | Callable[[dict[str, Any]], Sequence[str]],
    dataset: str,
) -> Iterator[PreferencePair]:
    """`parse(row, index)` for every row, counting it (`ctx.row`) and each skip by its reason.

    `columns` (or a function of the row giving them) must all be present, else DataError."""
    for index, (where, row) in enumerate(rows):
        ctx.row()
        needed = columns(row) if callable(columns) else columns
        missing = [c for c in needed if c not in row]
        if missing:
            raise DataError(
                f"{where}: not a {dataset} row (no {', '.join(repr(c) for c in missing)}; "
                f"columns: {', '.join(sorted(map(str, row))) or 'none'})"
            )
        try:
            pairs = parse(row, index)
        except Skip as exc:
            ctx.skip(exc.reason)
            continue
        yield from pairs


def text(row: dict[str, Any], key: str) -> str:
    """`row[key]` stripped; Skip("missing <key>" / "empty <key>") otherwise."""
    value = row.get(key)
    if value is None:
        raise Skip(f"missing {key}")
    if not isinstance(value, str):
        raise Skip(f"{key} is not a string")
    value = value.strip()
    if not value:
        raise Skip(f"empty {key}")
    return value


def strip_placeholders(value: str) -> str:
    """Text without `<image>` / `<video>` placeholders (see `_LEADING_PLACEHOLDER`), stripped."""
    return _INLINE_PLACEHOLDER.sub("", _LEADING_PLACEHOLDER.sub("", value)).strip()


def count_placeholders(value: str) -> int:
    return value.count("<image>")


def prompt_text(value: str, what: str = "prompt") -> str:
    """A prompt without placeholders; Skip("empty <what>") if only placeholders were there."""
    cleaned = strip_placeholders(value)
    if not cleaned:
        raise Skip(f"empty {what}")
    return cleaned


def make_pair(
    ctx: SourceContext,
    pair_id: str,
    prompt: str,
    chosen: str,
    rejected: str,
    images: tuple[str, ...] = (),
    category: str = "",
    history: tuple[Turn, ...] = (),
) -> PreferencePair:
    """The pair, or Skip("identical responses") when chosen and rejected are the same text."""
    if chosen == rejected:
        raise Skip("identical responses")
    return PreferencePair(
        id=pair_id, prompt=prompt, chosen=chosen, rejected=rejected, images=images,
        source=ctx.name, category=category, history=history,
    )


def media_base(path: str, media_dir: str | None) -> str:
    """Where relative media paths start: `media_dir` if given, else the data path's folder."""
    if media_dir is not None:
        if not os.path.isdir(media_dir):
            raise ConfigError(f"media_dir {media_dir}: not a directory")
        return media_dir
    return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))


def images_of(value: Any, ctx: SourceContext, base_dir: str) -> tuple[str, ...]:
    """One image or a list of them (paths, `{"bytes", "path"}` dicts or bytes) -> file paths;
    `None`, "" and [] mean no image."""
    if value is None or value == "" or value == []:
        return ()
    items = value if isinstance(value, (list, tuple)) else [value]
    try:
        return tuple(image_of(item, ctx, base_dir) for item in items)
    except ImagePathError as exc:
        raise Skip(exc.reason) from None  # "image not found", "image path leads outside the image root", ...
    except DataError as exc:  # a value that is neither a path nor bytes
        raise Skip(str(exc)) from None


def frames_of(name: Any, ctx: SourceContext, base_dir: str, max_frames: int) -> tuple[str, ...]:
    """A video given as a folder of frame images -> up to `max_frames` evenly spaced frame paths,
    in natural order (frame_2 before frame_10). Video files are not decoded here: Skip."""
    if not isinstance(name, str) or not name:
        raise Skip("video is not a folder path")
    try:
        folder = confine(name, base_dir=base_dir, root=ctx.image_root)
    except ImagePathError as exc:
        raise Skip(exc.reason) from None
    if not os.path.isdir(folder):
        raise Skip("video file (only folders of frames are read)" if os.path.exists(folder) else "video not found")
    frames = sorted(
        (f for f in os.listdir(folder) if f.lower().endswith(FRAME_SUFFIXES) and not f.startswith(".")),
        key=_natural_key,
    )
    if not frames:
        raise Skip("video folder has no frames")
    try:
        return tuple(ctx.image_path(f, folder) for f in evenly_spaced(frames, max_frames))
    except ImagePathError as exc:  # a frame that is a symlink out of the root, a FIFO, ...
        raise Skip(exc.reason) from None


def evenly_spaced(items: list[str], k: int) -> list[str]:
    """`k` items at indices floor(i·(n-1)/(k-1)), first and last included (all if n <= k)."""
    n = len(items)
    if n <= k:
        return items
    if k == 1:
        return [items[0]]
    return [items[i * (n - 1) // (k - 1)] for i in range(k)]


def check_max_frames(max_frames: Any) -> int:
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
        raise ConfigError(f"max_frames must be a positive integer, got {max_frames!r}")
    return max_frames


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in _DIGITS.split(name)]


def first_component(rel: Any) -> str:
    """The first folder of a relative media path ("short/x.jpg" -> "short"), "" if none."""
    if not isinstance(rel, str):
        return ""
    parts = Path(rel).parts
    return parts[0] if len(parts) > 1 and not os.path.isabs(rel) else ""
