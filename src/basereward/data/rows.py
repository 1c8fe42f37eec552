"""Row-by-row validation of JSONL data files: one policy for bad rows, `file:line` messages.

`collect_rows` streams a (possibly gzipped) JSONL file through a row parser that raises
ValueError(reason) for a bad row. on_error="fail" raises one DataError naming the first bad row
and how many more there are (the full list is on the exception's `errors` attribute);
on_error="skip" logs each bad row and "skipped N of M rows" and returns the good ones. Blank
lines are skipped; an empty file, or one with no good row, is a DataError.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

from basereward.errors import DataError
from basereward.io import iter_lines

T = TypeVar("T")


def log_stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def collect_rows(
    path: str | os.PathLike[str],
    parse: Callable[[int, bytes], T],
    on_error: str = "fail",
    log: Callable[[str], None] = log_stderr,
    what: str = "rows",
) -> list[T]:
    """`parse(lineno, raw_line)` for every non-blank line; `what` names the rows in messages."""
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    shown = os.fspath(path)
    items: list[T] = []
    errors: list[str] = []
    n_rows = 0
    for lineno, raw in iter_lines(shown, empty=f"no {what}"):
        n_rows += 1
        try:
            items.append(parse(lineno, raw))
        except ValueError as exc:
            errors.append(f"{shown}:{lineno}: {exc}")
    if errors and on_error == "fail":
        more = len(errors) - 1
        suffix = f" (and {more} more bad row{'s' if more != 1 else ''})" if more else ""
        err = DataError(errors[0] + suffix)
        err.errors = errors  # type: ignore[attr-defined]
        raise err
    if errors:
        for line in errors:
            log(line)
        log(f"{shown}: skipped {len(errors)} of {n_rows} rows")
        if not items:
            raise DataError(f"{shown}: no valid {what} (all {n_rows} rows are bad)")
    return items
