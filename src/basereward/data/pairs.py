"""The pair JSONL format: load (validating every row), save, and open images safely.

One pair per line:
`{"id": str, "prompt": str, "images": [path, ...], "chosen": str, "rejected": str,
"source": str, "category": str}`. `id`, `prompt`, `images`, `chosen` and `rejected` are required
(`images` is `[]` for text-only pairs); `source` and `category` default to "". Image paths are
relative to the JSONL file's directory (absolute paths are kept as they are); once loaded, a
`PreferencePair` holds absolute real paths. With an `image_root` every image must resolve
(symlinks followed) inside that root: `../`, absolute paths elsewhere and symlinks out are bad
rows. Only regular files are opened (a FIFO named `x.png` is refused, never waited on). Unknown
keys are ignored so that files may carry extra metadata; a misspelt required key still fails as
a missing field.

`iter_pairs` streams a file in bounded memory (what `data check` uses on files of any size);
`load_pairs` is its list.

Every problem is reported as `file:line: reason`, the file as the user named it.
"""

from __future__ import annotations

import io
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from basereward.data.paths import ImagePathError, confine, open_regular
from basereward.data.rows import SeenIds, iter_rows, log_stderr
from basereward.data.schema import PreferencePair, history_problem
from basereward.errors import DataError
from basereward.io import parse_record, write_jsonl

# Images above this many pixels are refused before any pixel is decoded. 32 Mpx (~5800 x 5800)
# is well above what VLM processors feed a model (Qwen2.5-VL caps at ~12.8 Mpx by default) while
# keeping one decoded RGB image near 100 MB; PIL's own default (~89 Mpx) only *warns* and decodes
# up to twice that, which lets a few hostile files exhaust a data-loader's memory.
MAX_IMAGE_PIXELS = 64 * 1024 * 1024 // 2

# Image check results remembered per file (many pairs share one picture); bounded so that a file
# naming millions of distinct images does not grow memory.
_IMAGE_CACHE = 4096

_REQUIRED_TEXT = ("prompt", "chosen", "rejected")
_OPTIONAL_TEXT = ("source", "category")


class _ImageProblem(Exception):
    """Why an image cannot be used: `kind` names the problem, `detail` explains it."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail

    def suffix(self) -> str:
        """` (detail)`, or "" without one."""
        return f" ({self.detail})" if self.detail else ""


def _decode(path: str) -> Image.Image:
    """Open a regular file and decode it (`_decode_stream`)."""
    try:
        fh = open_regular(path)
    except ImagePathError as exc:
        raise _ImageProblem(exc.reason) from None
    try:
        with fh:
            return _decode_stream(fh)
    except FileNotFoundError as exc:
        raise _ImageProblem("image not found") from exc
    except (IsADirectoryError, PermissionError) as exc:
        raise _ImageProblem("unreadable image", exc.strerror or type(exc).__name__) from exc


def _decode_stream(fh: Any) -> Image.Image:
    """Verify and fully decode an open binary stream, refusing oversized images before decoding.

    `verify()` checks chunk CRCs but not that the pixel data is complete, and `load()` catches
    truncation but not every CRC error, so both run. PIL's decompression-bomb warning is turned
    into an error: a warning would let the image decode anyway.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(fh)
            width, height = im.size
            if width * height > MAX_IMAGE_PIXELS:
                raise _ImageProblem(
                    "decompression bomb refused",
                    f"{width}x{height} pixels, limit {MAX_IMAGE_PIXELS}",
                )
            im.verify()
            # verify() leaves the image unusable; reopen from the start to decode the pixels.
            fh.seek(0)
            im = Image.open(fh)
            im.load()
            return im
    except (_ImageProblem, FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _ImageProblem("decompression bomb refused", str(exc)) from exc
    except Exception as exc:  # PIL signals corruption with OSError, SyntaxError, ValueError, ...
        raise _ImageProblem("corrupt or unreadable image", str(exc) or type(exc).__name__) from exc


def _to_rgb(im: Image.Image) -> Image.Image:
    """Upright RGB; transparent pixels become white (their stored RGB is often black junk)."""
    im = ImageOps.exif_transpose(im)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image as fully decoded RGB with the loader's safety checks.

    Raises DataError("path: reason") for a missing, corrupt, truncated or oversized file, and for
    anything that is not a regular file (checked before and after opening, so a FIFO never hangs).
    """
    try:
        im = _decode(os.fspath(path))
    except _ImageProblem as problem:
        raise DataError(f"{os.fspath(path)}: {problem.kind}{problem.suffix()}") from None
    return _to_rgb(im)


def decode_image_bytes(data: bytes, shown: str = "image") -> Image.Image:
    """Encoded image bytes (an upload, a data URL, a dataset's `bytes` column) -> RGB, with the
    same checks as `open_image`; DataError("shown: reason")."""
    try:
        im = _decode_stream(io.BytesIO(data))
    except _ImageProblem as problem:
        raise DataError(f"{shown}: {problem.kind}{problem.suffix()}") from None
    return _to_rgb(im)


def _parse_row(
    raw: bytes, base_dir: str, root: str | None, seen_ids: SeenIds, lineno: int
) -> tuple[PreferencePair, list[tuple[str, str]]]:
    """One line -> (pair, [(relative image path, absolute path)]); raises ValueError(reason)."""
    row = parse_record(raw)

    for key in ("id", *_REQUIRED_TEXT, "images"):
        if key not in row:
            raise ValueError(f"missing field '{key}'")
    for key in ("id", *_REQUIRED_TEXT):
        if not isinstance(row[key], str):
            raise ValueError(f"field '{key}' must be a string, got {type(row[key]).__name__}")
    for key in _OPTIONAL_TEXT:
        if key in row and not isinstance(row[key], str):
            raise ValueError(f"field '{key}' must be a string, got {type(row[key]).__name__}")
    images = row["images"]
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise ValueError("field 'images' must be a list of non-empty path strings")

    pair_id = row["id"]
    if not pair_id.strip():
        raise ValueError("empty id")
    # Register the id before the content checks so that a repeated id is reported even when the
    # first occurrence fails for another reason: the file has two rows claiming one id either way.
    first = seen_ids.first_line(pair_id, lineno)
    if first is not None:
        raise ValueError(f"duplicate id '{pair_id}' (first on line {first})")
    for key in _REQUIRED_TEXT:
        if not row[key].strip():
            raise ValueError(f"empty {key}")
    if row["chosen"] == row["rejected"]:
        raise ValueError("chosen and rejected are identical")
    history = parse_history(row.get("history", []))

    resolved = []
    for rel in images:
        try:
            resolved.append((rel, confine(rel, base_dir=base_dir, root=root)))
        except ImagePathError as exc:
            raise ValueError(f"{exc.reason}: {rel}") from None
    pair = PreferencePair(
        id=pair_id,
        prompt=row["prompt"],
        chosen=row["chosen"],
        rejected=row["rejected"],
        images=tuple(abs_path for _, abs_path in resolved),
        source=row.get("source", ""),
        category=row.get("category", ""),
        history=history,
    )
    return pair, resolved


def parse_history(value: Any) -> tuple[tuple[str, str], ...]:
    """The optional `history` field: earlier turns `[{"role": "user"|"assistant", "content": str}]`,
    oldest first, alternating from the user; ValueError(reason) for anything else."""
    if not isinstance(value, list):
        raise ValueError(f"field 'history' must be a list of turns, got {type(value).__name__}")
    turns = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or set(turn) != {"role", "content"}:
            raise ValueError(f'history[{i}] must be {{"role", "content"}}')
        turns.append((turn["role"], turn["content"]))
    problem = history_problem(tuple(turns))
    if problem:
        raise ValueError(problem)
    return tuple(turns)


def iter_pairs(
    path: str | os.PathLike[str],
    on_error: str = "fail",
    check_images: bool = True,
    log: Callable[[str], None] = log_stderr,
    image_root: str | os.PathLike[str] | None = None,
) -> Iterator[PreferencePair]:
    """Stream the valid pairs of a pair JSONL file (optionally .gz), validating every row.

    on_error="fail": after the whole file is read, raise one DataError naming the first bad row
    and how many more there are (the first messages are on the exception's `errors` attribute);
    no pair after the first bad row is yielded. on_error="skip": `log` each bad row, yield the good
    ones and log "skipped N of M rows" (the policy of `data.rows`). check_images=False skips the
    image-file checks (existence and decoding); paths are still resolved and confined.
    `image_root`: the folder every image must lie in (None: anywhere).
    """
    base_dir = str(Path(os.fspath(path)).resolve().parent)
    root = os.fspath(image_root) if image_root is not None else None
    seen_ids = SeenIds()
    image_cache: OrderedDict[str, _ImageProblem | None] = OrderedDict()

    def check(abs_path: str) -> _ImageProblem | None:
        if abs_path in image_cache:
            image_cache.move_to_end(abs_path)
            return image_cache[abs_path]
        try:
            _decode(abs_path)
            problem = None
        except _ImageProblem as exc:
            problem = exc
        image_cache[abs_path] = problem
        if len(image_cache) > _IMAGE_CACHE:
            image_cache.popitem(last=False)
        return problem

    def parse(lineno: int, raw: bytes) -> PreferencePair:
        pair, resolved = _parse_row(raw, base_dir, root, seen_ids, lineno)
        for rel, abs_path in resolved if check_images else ():
            problem = check(abs_path)
            if problem is not None:
                raise ValueError(f"{problem.kind}: {rel}{problem.suffix()}")
        return pair

    return iter_rows(path, parse, on_error=on_error, log=log, what="pairs")


def load_pairs(
    path: str | os.PathLike[str],
    on_error: str = "fail",
    check_images: bool = True,
    log: Callable[[str], None] = log_stderr,
    image_root: str | os.PathLike[str] | None = None,
) -> list[PreferencePair]:
    """Every valid pair of a pair JSONL file: `iter_pairs` as a list (same arguments)."""
    return list(iter_pairs(path, on_error, check_images, log, image_root))


def save_pairs(pairs: Iterable[PreferencePair], path: str | os.PathLike[str]) -> None:
    """Write pairs as JSONL with image paths relative to the file's directory (atomically)."""
    base_dir = str(Path(os.fspath(path)).resolve().parent)
    seen: set[str] = set()
    records: list[dict[str, Any]] = []
    for pair in pairs:
        if pair.id in seen:
            # load_pairs would refuse the file; fail while the caller still knows why.
            raise DataError(f"{os.fspath(path)}: duplicate id '{pair.id}' among the pairs to save")
        seen.add(pair.id)
        records.append(pair.to_json(relative_to=base_dir))
    write_jsonl(path, records)
