"""The dataset-adapter contract: a published dataset's raw rows -> `PreferencePair`s, with counts.

An adapter is a generator function registered under a name:

    @register("rlaif-v", multimodal=True, summary="openbmb/RLAIF-V-Dataset (parquet / save_to_disk)")
    def read(path: str, ctx: SourceContext, **options) -> Iterator[PreferencePair]: ...

It reads a local copy in the dataset's published layout (`iter_source_rows` handles parquet,
JSONL(.gz), JSON lists and `datasets.save_to_disk` directories), yields pairs lazily (never a
list: the build streams millions), counts every raw row with `ctx.row()` and every row it drops
with `ctx.skip(reason)`; pairs made are counted by the caller. Images stay files: a path found in
the data is resolved with `ctx.image_path`, and image bytes embedded in the data are written once,
unchanged (no re-encoding), by `ctx.image_bytes`. Adapters import no torch.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from basereward.data.paths import resolve_image_path
from basereward.data.schema import PreferencePair
from basereward.errors import ConfigError, DataError
from basereward.io import iter_jsonl, iter_records

Reader = Callable[..., Iterator[PreferencePair]]
_PATH_CACHE = 200_000  # resolved image paths kept per source (~100 bytes each)


@dataclass(frozen=True)
class Adapter:
    name: str
    read: Reader
    multimodal: bool
    summary: str


ADAPTERS: dict[str, Adapter] = {}


def register(name: str, *, multimodal: bool, summary: str) -> Callable[[Reader], Reader]:
    def wrap(fn: Reader) -> Reader:
        if name in ADAPTERS:
            raise ValueError(f"adapter {name!r} registered twice")
        ADAPTERS[name] = Adapter(name, fn, multimodal, summary)
        return fn

    return wrap


def get_adapter(name: str) -> Adapter:
    from basereward.data import sources  # noqa: F401  (importing the package registers every adapter)

    if name not in ADAPTERS:
        raise ConfigError(f"unknown dataset adapter {name!r}; known: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[name]


@dataclass
class SourceContext:
    """What an adapter needs besides its path: where images go, and the counts it keeps.

    `image_dir` receives images that are embedded as bytes in the data (one file per distinct
    content, named by its hash); `image_root`, when set, confines image paths found in the data.
    """

    name: str
    image_dir: str | None = None
    image_root: str | None = None
    rows: int = 0
    skipped: Counter = field(default_factory=Counter)
    _paths: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)

    def row(self) -> None:
        self.rows += 1

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def pair_id(self, *parts: Any) -> str:
        """A stable id from the row's own identifiers (source name + parts)."""
        return ":".join([self.name, *(str(p) for p in parts)])

    def image_path(self, name: str, base_dir: str) -> str:
        """The real path of an image file named by the data (relative to `base_dir`); DataError
        (caller counts a skip) if missing, not a regular file or outside `image_root`.

        Resolutions are remembered for this context (one build): datasets name the same image
        from many rows, and resolving costs a stat per path component."""
        key = (name, base_dir)
        hit = self._paths.get(key)
        if hit is None:
            hit = resolve_image_path(name, base_dir=base_dir, root=self.image_root)
            if len(self._paths) >= _PATH_CACHE:
                self._paths.clear()
            self._paths[key] = hit
        return hit

    def image_bytes(self, data: bytes, suffix: str = "") -> str:
        """Write embedded image bytes once (unchanged) under `image_dir`; their path."""
        if self.image_dir is None:
            raise ConfigError(f"{self.name}: images are embedded in the data; give an image directory to write them to")
        digest = hashlib.sha256(data).hexdigest()[:32]
        suffix = suffix or _sniff_suffix(data)
        path = Path(self.image_dir) / digest[:2] / f"{digest}{suffix}"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return str(path)

    def stats(self, pairs: int) -> dict[str, Any]:
        return {"rows": self.rows, "pairs": pairs, "skipped": dict(sorted(self.skipped.items()))}


def _sniff_suffix(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data.startswith(b"\xff\xd8"):
        return ".jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[:3] == b"GIF":
        return ".gif"
    return ".img"


def iter_source_rows(path: str | os.PathLike[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) of a local dataset copy: a `.parquet` / `.jsonl[.gz]` / `.json[.gz]` file, a
    `datasets.save_to_disk` directory, or a directory of such files (sorted, recursively)."""
    p = Path(path)
    if p.is_dir():
        if (p / "dataset_info.json").is_file() or (p / "dataset_dict.json").is_file():
            yield from _iter_saved_dataset(p)
            return
        files = sorted(f for f in p.rglob("*") if f.is_file() and _is_data_file(f.name))
        if not files:
            raise DataError(f"{p}: no .parquet / .jsonl / .json files in this directory")
        for f in files:
            yield from _iter_file(f)
        return
    yield from _iter_file(p)


def _iter_file(f: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    # Hub datasets often publish JSON Lines under a `.json` name (SHP's train.json): the content
    # decides, an object first means one record per line.
    if f.name.lower().endswith((".json", ".json.gz")) and _starts_with_object(f):
        yield from iter_jsonl(f)
    else:
        yield from iter_records(f)


def _starts_with_object(path: Path) -> bool:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read file ({exc})") from None
    return head[:1] == b"{"


def _is_data_file(name: str) -> bool:
    return name.lower().endswith((".parquet", ".jsonl", ".jsonl.gz", ".json", ".json.gz")) and not name.startswith(".")


def _iter_saved_dataset(p: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of a `save_to_disk` directory (memory-mapped Arrow; every split of a DatasetDict)."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as exc:  # datasets raises several types for a damaged directory
        raise DataError(f"{p}: not a readable datasets directory ({exc})") from None
    splits = ds.items() if isinstance(ds, datasets.DatasetDict) else [("", ds)]
    for split, part in splits:
        # Undecoded images: {"bytes", "path"} dicts, so adapters write the bytes unchanged.
        for col, feat in part.features.items():
            if isinstance(feat, datasets.Image):
                part = part.cast_column(col, datasets.Image(decode=False))
        where = f"{p}{'/' + split if split else ''}"
        for i, row in enumerate(part):
            yield f"{where}: row {i}", row


def image_of(value: Any, ctx: SourceContext, base_dir: str) -> str:
    """One image as the data holds it -> a file path: a path string (relative to `base_dir`), a
    `{"bytes", "path"}` dict (datasets' Image), or raw bytes. DataError if unusable."""
    if isinstance(value, (bytes, bytearray)):
        return ctx.image_bytes(bytes(value))
    if isinstance(value, dict):
        if value.get("bytes"):
            return ctx.image_bytes(bytes(value["bytes"]), Path(value.get("path") or "").suffix.lower())
        if value.get("path"):
            return ctx.image_path(str(value["path"]), base_dir)
        raise DataError("image has neither bytes nor path")
    if isinstance(value, str) and value:
        return ctx.image_path(value, base_dir)
    raise DataError(f"image must be a path, bytes or an {{bytes, path}} dict, got {type(value).__name__}")
