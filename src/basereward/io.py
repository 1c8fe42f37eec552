"""Record I/O: the one place that reads JSON / JSONL / Parquet records and writes files atomically.

Readers yield `(where, record)`: `where` names the record for error messages — `file:line` for
JSONL, `file: item i` for a JSON list, `file: row i` for Parquet. Every problem is a `DataError`
whose message starts with the file as the caller named it (and the line when there is one):
`file:line: malformed JSON (...)`, `file:line: not a JSON object (got list)`,
`file:line: not valid UTF-8 (...)`, `file: file not found`, `file: file is empty (no pairs)`.
JSONL is streamed in chunks (never read whole) with a per-line limit (`MAX_LINE_BYTES`); a `.gz`
suffix is decompressed on the fly; a UTF-8 byte-order mark at the start of a file is accepted.

Writers go through a temporary file in the target's directory and `os.replace`, so a reader
never sees half a file and a failed write leaves the previous file (or none) in place. JSON is
written with `allow_nan=False`: a NaN or infinite number is refused with one clear error rather
than written as the invalid token `NaN`.

Torch-free and independent of the rest of the package (only `errors`).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import shutil
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from .errors import DataError

PathLike = str | os.PathLike[str]

SCORES_SUFFIX = ".scores.jsonl"

MAX_LINE_BYTES = 64 * 1024 * 1024
"""Longest JSONL line read (64 MiB): far above any real row (image paths, not image bytes), and
small enough that one bad line (a whole file without newlines) cannot exhaust memory."""

_CHUNK = 1 << 20
_BOM = b"\xef\xbb\xbf"
_NON_BLANK = re.compile(rb"\S")  # the same whitespace set as bytes.strip()


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _open(shown: str) -> BinaryIO:
    return gzip.open(shown, "rb") if shown.lower().endswith(".gz") else open(shown, "rb")


@contextmanager
def _reading(shown: str, kind: str) -> Iterator[None]:
    """Turn the OS's reading errors (and a corrupt .gz stream's) into one-line DataErrors."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(f"{shown}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{shown}: is a directory, expected a {kind} file") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{shown}: cannot read file ({exc or type(exc).__name__})") from None


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def parse_record(raw: bytes | str) -> dict[str, Any]:
    """One JSONL line -> its object; ValueError(reason) for bad UTF-8, malformed JSON or a non-object."""
    try:
        row = json.loads(_utf8(raw) if isinstance(raw, bytes) else raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict):
        raise ValueError(f"not a JSON object (got {type(row).__name__})")
    return row


def long_line_reason(max_line_bytes: int) -> str:
    """The message for a line over the limit (one JSONL row never needs that much)."""
    return f"line longer than {_size(max_line_bytes)} (the limit for one JSONL row); not a JSONL file?"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


def iter_lines(
    path: PathLike,
    empty: str | None = None,
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
    on_long: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of every non-blank line of a (possibly gzipped) text file, streamed.

    Memory stays near one read chunk plus one line: the file is read in 1 MiB chunks, runs of
    blank lines are skipped at C speed (a .gz of a billion newlines costs seconds, not GBs), and a
    line over `max_line_bytes` is never assembled: `on_long(lineno)` is called for it (and it is
    skipped), or without `on_long` it raises DataError(`file:line: line longer than ...`). A
    UTF-8 byte-order mark at the start of the file is dropped.

    File-level problems raise DataError (`file: file not found`, ...). With `empty` set, a file
    without a non-blank line raises DataError(`file: file is empty (<empty>)`).
    """
    shown = os.fspath(path)

    def too_long(lineno: int) -> None:
        if on_long is None:
            raise DataError(f"{shown}:{lineno}: {long_line_reason(max_line_bytes)}")
        on_long(lineno)

    with _reading(shown, "JSONL"):
        fh = _open(shown)
    n = 0
    done = 0  # lines finished before the current chunk position
    parts: list[bytes] = []  # the start of an unfinished line carried over from earlier chunks
    held = 0  # bytes in `parts`
    skipping = False  # inside a line already known to be too long: drop bytes until its end
    first = True
    with fh:
        while True:
            with _reading(shown, "JSONL"):
                chunk = fh.read(max(_CHUNK, len(_BOM)) if first else _CHUNK)
            if not chunk:
                break
            if first:
                chunk, first = chunk.removeprefix(_BOM), False
            pos = 0
            while pos < len(chunk):
                if not parts and not skipping:
                    # Jump over blank lines: find the next non-whitespace byte and its line start.
                    hit = None if pos == 0 and chunk.isspace() else _NON_BLANK.search(chunk, pos)
                    # `stop`: where the blank lines end (the next non-blank line's start, or after
                    # the chunk's last newline; what follows may continue in the next chunk).
                    if hit is None:
                        stop = chunk.rfind(b"\n", pos) + 1 or pos
                    else:
                        stop = chunk.rfind(b"\n", pos, hit.start()) + 1 or pos
                    if stop - pos > max_line_bytes:  # only with a limit below the chunk size
                        for i, blank in enumerate(chunk[pos:stop - 1].split(b"\n"), start=done + 1):
                            if len(blank) > max_line_bytes:
                                n += 1
                                too_long(i)
                    done += chunk.count(b"\n", pos, stop)
                    pos = stop
                    if hit is None:
                        if len(chunk) - pos > max_line_bytes:
                            skipping = True
                        elif pos < len(chunk):  # whitespace that may start a line of the next chunk
                            parts, held = [chunk[pos:]], len(chunk) - pos
                        break
                end = chunk.find(b"\n", pos)
                piece = chunk[pos:] if end < 0 else chunk[pos:end]
                if not skipping:
                    held += len(piece)
                    if held > max_line_bytes:
                        parts, held, skipping = [], 0, True
                    else:
                        parts.append(piece)
                if end < 0:
                    break
                done += 1
                pos = end + 1
                if skipping:
                    n += 1
                    skipping = False
                    too_long(done)
                    continue
                raw = parts[0] if len(parts) == 1 else b"".join(parts)
                parts, held = [], 0
                if raw.strip():
                    n += 1
                    yield done, raw.rstrip(b"\r")
        # The last line may lack its newline.
        if skipping:
            n += 1
            too_long(done + 1)
        elif parts:
            raw = b"".join(parts)
            if raw.strip():
                n += 1
                yield done + 1, raw.rstrip(b"\r")
    if n == 0 and empty is not None:
        raise DataError(f"{shown}: file is empty ({empty})")


def iter_jsonl(path: PathLike, empty: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(`file:line`, record) for each line of a JSONL(.gz) file; the first bad line raises DataError."""
    shown = os.fspath(path)
    for lineno, raw in iter_lines(shown, empty=empty):
        where = f"{shown}:{lineno}"
        try:
            record = parse_record(raw)
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from None
        yield where, record


def read_json(path: PathLike) -> Any:
    """The JSON document in a (possibly gzipped) file; DataError(`file:line: invalid JSON (...)`)."""
    shown = os.fspath(path)
    with _reading(shown, "JSON"), _open(shown) as fh:
        data = fh.read()
    try:
        return json.loads(_utf8(data.removeprefix(_BOM)))
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            raise DataError(f"{shown}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        raise DataError(f"{shown}: {exc}") from None


def iter_json_list(path: PathLike) -> Iterator[tuple[str, dict[str, Any]]]:
    """(`file: item i`, record) for each object of a file holding one JSON list."""
    shown = os.fspath(path)
    data = read_json(shown)
    if not isinstance(data, list):
        raise DataError(f"{shown}: expected a JSON list of records")
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise DataError(f"{shown}: item {i}: expected a JSON object")
        yield f"{shown}: item {i}", record


def iter_parquet(path: PathLike, batch_size: int = 256) -> Iterator[tuple[str, dict[str, Any]]]:
    """(`file: row i`, record) for each row of a Parquet file, read in batches of `batch_size`."""
    import pyarrow.parquet as pq

    shown = os.fspath(path)
    try:
        pf = pq.ParquetFile(shown)
    except FileNotFoundError:
        raise DataError(f"{shown}: file not found") from None
    except Exception as exc:  # pyarrow raises several types for a corrupt or non-parquet file
        raise DataError(f"{shown}: not a readable parquet file: {exc}") from None
    row = 0
    # Batches keep peak memory near one batch of rows (image bytes can be large).
    for batch in pf.iter_batches(batch_size=batch_size):
        for record in batch.to_pylist():
            yield f"{shown}: row {row}", record
            row += 1


def iter_records(path: PathLike, empty: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, record) from a `.parquet`, `.jsonl[.gz]` or JSON-list `.json[.gz]` file (by suffix).

    With `empty` set, a file holding no record raises DataError(`file: file is empty (<empty>)`).
    """
    shown = os.fspath(path)
    name = shown.lower().removesuffix(".gz")
    if name.endswith(".parquet"):
        records = iter_parquet(shown)
    elif name.endswith(".jsonl"):
        records = iter_jsonl(shown)
    else:
        records = iter_json_list(shown)
    n = 0
    for n, item in enumerate(records, start=1):
        yield item
    if n == 0 and empty is not None:
        raise DataError(f"{shown}: file is empty ({empty})")


def scores_path_for(metrics_path: PathLike) -> str:
    """`M.json` -> `M.scores.jsonl`: the per-item scores file written beside a metrics file."""
    path = os.fspath(metrics_path)
    return path.removesuffix(".json") + SCORES_SUFFIX


# --------------------------------------------------------------------------------------------
# Writing (atomic)
# --------------------------------------------------------------------------------------------


def _atomic(path: PathLike, fill: Callable[[TextIO], None]) -> Path:
    """Write `path` via a temporary file in its directory; on any error the target is untouched."""
    out = Path(os.fspath(path))
    out.parent.mkdir(parents=True, exist_ok=True)
    # A unique name opened with "x" (not mkstemp): the file gets the usual umask permissions.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as fh:
            fill(fh)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _dumps(obj: Any, shown: str, where: str = "", **kwargs: Any) -> str:
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False, **kwargs)
    except ValueError as exc:
        # json reports NaN/inf as "Out of range float values are not JSON compliant".
        if "Out of range float" in str(exc):
            raise DataError(f"{shown}{where}: cannot write NaN or infinity as JSON") from None
        raise


def write_text(path: PathLike, text: str) -> Path:
    """Write `text` (UTF-8) atomically; returns the path."""
    return _atomic(path, lambda fh: fh.write(text))


def write_json(path: PathLike, obj: Any, indent: int | None = 2, default: Callable[[Any], Any] | None = None) -> Path:
    """Write one JSON document (UTF-8, trailing newline) atomically; NaN/inf raise DataError."""
    shown = os.fspath(path)
    text = _dumps(obj, shown, indent=indent, default=default) + "\n"
    return write_text(path, text)


def write_jsonl(path: PathLike, rows: Iterable[Any]) -> Path:
    """Write one JSON value per line, streamed, atomically; a NaN/inf raises DataError(`file:line: ...`)."""
    shown = os.fspath(path)

    def fill(fh: TextIO) -> None:
        for lineno, row in enumerate(rows, start=1):
            fh.write(_dumps(row, shown, f":{lineno}") + "\n")

    return _atomic(path, fill)


def append_jsonl(path: PathLike, row: Any) -> None:
    """Append one JSON line (a log such as metrics.jsonl: each line is whole or absent)."""
    shown = os.fspath(path)
    line = _dumps(row, shown) + "\n"
    with open(shown, "a", encoding="utf-8", newline="\n") as fh:
        fh.write(line)


def finite(obj: Any) -> Any:
    """A copy of plain JSON data with NaN / infinity floats as None (null): for results that must
    be saved even when a run diverged, instead of refusing them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def check_output_file(path: PathLike, what: str = "output") -> None:
    """Before any work: DataError unless `path` can be written as a file (not a directory, not
    inside a file), so a long scoring run never ends in a write that cannot happen."""
    p = Path(os.fspath(path))
    if p.is_dir():
        raise DataError(f"{os.fspath(path)}: the {what} is a directory; give a file path")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DataError(f"{os.fspath(path)}: the {what}'s folder {parent} is a file")
            if not os.access(parent, os.W_OK):
                raise DataError(f"{os.fspath(path)}: the {what}'s folder {parent} is not writable")
            break


def replace_dir(tmp: PathLike, out: PathLike) -> Path:
    """Put the finished directory `tmp` at `out` (atomic for readers: `out` is the old directory,
    briefly nothing, then the new one; never a partial one). A rename cannot replace a non-empty
    directory, so the old one is renamed aside first and deleted after."""
    tmp, out = Path(tmp), Path(out)
    if not out.exists():
        os.replace(tmp, out)
        return out
    old = out.with_name(f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def copy_dir(src: PathLike, out: PathLike) -> Path:
    """Copy directory `src` to `out` through a sibling temporary copy and `replace_dir`: an
    interrupted copy leaves the previous `out` (or none)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        shutil.copytree(src, tmp)
        return replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
