"""Row-by-row validation of JSONL data files: one policy for bad rows, `file:line` messages.

`iter_rows` streams a (possibly gzipped) JSONL file through a row parser that raises
ValueError(reason) for a bad row, and yields the good rows as they come; `collect_rows` is its
list. on_error="fail" raises one DataError at the end naming the first bad row and how many more
there are (the first `KEPT_ERRORS` messages are on the exception's `errors` attribute); no row
after the first bad one is yielded. on_error="skip" logs each bad row as it is met, then
"skipped N of M rows". Blank lines are skipped; a line over the length limit is a bad row; an
empty file, or one with no good row, is a DataError.

Memory does not grow with the file: rows are not kept here, errors are logged or counted, and
`SeenIds` remembers ids in about 20 bytes each.
"""

from __future__ import annotations

import os
import sys
from array import array
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np

from basereward.errors import DataError
from basereward.io import MAX_LINE_BYTES, iter_lines, long_line_reason

T = TypeVar("T")

KEPT_ERRORS = 1000
"""How many bad-row messages a fail-mode DataError carries in `errors` (the count is exact)."""


def log_stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def iter_rows(
    path: str | os.PathLike[str],
    parse: Callable[[int, bytes], T],
    on_error: str = "fail",
    log: Callable[[str], None] = log_stderr,
    what: str = "rows",
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[T]:
    """`parse(lineno, raw_line)` for every non-blank line, yielding the good rows (see module doc)."""
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    shown = os.fspath(path)
    kept: list[str] = []
    n_bad = n_rows = n_good = 0

    def bad(message: str) -> None:
        nonlocal n_bad
        n_bad += 1
        if on_error == "skip":
            log(message)
        elif len(kept) < KEPT_ERRORS:
            kept.append(message)

    def long_line(lineno: int) -> None:
        nonlocal n_rows
        n_rows += 1
        bad(f"{shown}:{lineno}: {long_line_reason(max_line_bytes)}")

    lines = iter_lines(shown, empty=f"no {what}", max_line_bytes=max_line_bytes, on_long=long_line)
    for lineno, raw in lines:
        n_rows += 1
        try:
            item = parse(lineno, raw)
        except ValueError as exc:
            bad(f"{shown}:{lineno}: {exc}")
            continue
        if on_error == "skip" or not n_bad:
            n_good += 1
            yield item
    if n_bad and on_error == "fail":
        more = n_bad - 1
        suffix = f" (and {more} more bad row{'s' if more != 1 else ''})" if more else ""
        err = DataError(kept[0] + suffix)
        err.errors = kept  # type: ignore[attr-defined]
        raise err
    if n_bad:
        log(f"{shown}: skipped {n_bad} of {n_rows} rows")
        if not n_good:
            raise DataError(f"{shown}: no valid {what} (all {n_rows} rows are bad)")


def collect_rows(
    path: str | os.PathLike[str],
    parse: Callable[[int, bytes], T],
    on_error: str = "fail",
    log: Callable[[str], None] = log_stderr,
    what: str = "rows",
) -> list[T]:
    """The good rows of `iter_rows` as a list."""
    return list(iter_rows(path, parse, on_error=on_error, log=log, what=what))


class SeenIds:
    """Which row ids a file has used, and on which line: `first_line(id, lineno)`.

    A dict of str -> int costs ~130 bytes per id (over 500 MB for a 1 GB file of short rows), so
    an id is kept as its 64-bit string hash with its line (12 bytes) in linear-probing tables,
    1024 of them chosen by the hash's top bits so that growing one never copies more than a
    sliver: 16-24 bytes per id, no large transient. Two different ids share a hash with
    probability about n^2 / 2^65 (3e-6 for ten million ids): such a row would be refused as a
    duplicate. (Python's str hash is salted per process, which is all a per-file check needs.)
    """

    _PARTS = 1024
    _MAX_LINE = 2**32 - 1

    def __init__(self) -> None:
        # array.array: element access is a plain int (fast); numpy views do the bulk rehash.
        self._keys = [array("Q", bytes(8 * 64)) for _ in range(self._PARTS)]  # 0 = empty slot
        self._lines = [array("I", bytes(4 * 64)) for _ in range(self._PARTS)]
        self._counts = [0] * self._PARTS
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def first_line(self, key: str, lineno: int) -> int | None:
        """The line `key` was first seen on, or None after recording it at `lineno`."""
        if lineno > self._MAX_LINE:
            raise DataError(f"more than {self._MAX_LINE} lines in one file; split it")
        digest = (hash(key) & 0xFFFF_FFFF_FFFF_FFFF) | 1  # odd: never the empty-slot 0
        part = digest >> 54
        keys = self._keys[part]
        size = len(keys)
        i = (digest >> 1) % size
        while i < size:  # no wrap-around: a table ends in spare room, else it grows
            slot = keys[i]
            if slot == 0:
                keys[i] = digest
                self._lines[part][i] = lineno
                self._n += 1
                self._counts[part] += 1
                if 4 * self._counts[part] > 3 * size:
                    self._grow(part, size * 3 // 2)
                return None
            if slot == digest:
                return self._lines[part][i]
            i += 1
        self._grow(part, size * 3 // 2)
        return self.first_line(key, lineno)

    def _grow(self, part: int, size: int) -> None:
        """Rebuild table `part` with `size` slots, placing every key at once (no Python loop)."""
        old_keys = np.frombuffer(self._keys[part], np.uint64)
        used = old_keys != 0
        keys, lines = old_keys[used], np.frombuffer(self._lines[part], np.uint32)[used]
        while True:
            home = ((keys >> np.uint64(1)) % np.uint64(size)).astype(np.int64)
            order = np.argsort(home, kind="stable")
            home, rank = home[order], np.arange(len(home))
            # Linear probing from sorted homes: each key lands on max(home, previous slot + 1).
            slot = rank + np.maximum.accumulate(home - rank)
            if slot[-1] < size:
                break
            size = size * 3 // 2
        new_keys, new_lines = array("Q", bytes(8 * size)), array("I", bytes(4 * size))
        np.frombuffer(new_keys, np.uint64)[slot] = keys[order]
        np.frombuffer(new_lines, np.uint32)[slot] = lines[order]
        self._keys[part], self._lines[part] = new_keys, new_lines
