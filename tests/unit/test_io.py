"""Record I/O: every error names its file and line; gz and Parquet read; writes are atomic."""

from __future__ import annotations

import gzip
import json
import math
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from basereward.errors import DataError
from basereward.io import (
    iter_json_list,
    iter_jsonl,
    iter_lines,
    iter_parquet,
    iter_records,
    parse_record,
    read_json,
    scores_path_for,
    write_json,
    write_jsonl,
    write_text,
)


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        list(fn(*args, **kwargs))
    return str(info.value)


# ---- reading --------------------------------------------------------------------------------


def test_jsonl_records_with_file_line_and_blank_lines_skipped(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"x": 1}\n\n   \n{"x": 2}\r\n')
    assert list(iter_jsonl(f)) == [(f"{f}:1", {"x": 1}), (f"{f}:4", {"x": 2})]


@pytest.mark.parametrize(
    "line, reason",
    [
        (b'{"x": ', "malformed JSON (Expecting value at column 7)"),
        (b"[1, 2]", "not a JSON object (got list)"),
        (b'"text"', "not a JSON object (got str)"),
        (b'{"x": "\xff"}', "not valid UTF-8 (invalid start byte at byte 7)"),
    ],
)
def test_each_bad_line_reason_names_file_and_line(tmp_path, line, reason):
    f = tmp_path / "b.jsonl"
    f.write_bytes(b'{"ok": true}\n' + line + b"\n")
    assert _error(iter_jsonl, f) == f"{f}:2: {reason}"
    with pytest.raises(ValueError, match=reason.split(" (")[0]):
        parse_record(line)


def test_file_level_errors(tmp_path):
    assert _error(iter_jsonl, tmp_path / "none.jsonl") == f"{tmp_path / 'none.jsonl'}: file not found"
    assert _error(iter_jsonl, tmp_path) == f"{tmp_path}: is a directory, expected a JSONL file"
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n \n")
    assert list(iter_jsonl(empty)) == []  # empty is only an error when the caller says so
    assert _error(iter_jsonl, empty, empty="no pairs") == f"{empty}: file is empty (no pairs)"
    assert _error(iter_records, empty, empty="no rows") == f"{empty}: file is empty (no rows)"
    assert _error(read_json, tmp_path / "none.json") == f"{tmp_path / 'none.json'}: file not found"


def test_the_path_is_shown_as_given(tmp_path, monkeypatch):
    (tmp_path / "c.jsonl").write_text("{oops\n")
    monkeypatch.chdir(tmp_path)
    assert _error(iter_jsonl, "c.jsonl").startswith("c.jsonl:1: malformed JSON")


def test_jsonl_is_streamed(tmp_path):
    # A bad line far down does not stop the records before it from arriving first.
    f = tmp_path / "s.jsonl"
    f.write_text('{"i": 0}\n{"i": 1}\n{bad\n')
    it = iter_jsonl(f)
    assert next(it)[1] == {"i": 0} and next(it)[1] == {"i": 1}
    with pytest.raises(DataError, match=r"s\.jsonl:3: malformed JSON"):
        next(it)


def test_gzip_jsonl_and_json(tmp_path):
    f = tmp_path / "d.jsonl.gz"
    with gzip.open(f, "wt", encoding="utf-8") as fh:
        fh.write('{"a": "ü"}\n{"a": 2}\n[3]\n')
    got = []
    with pytest.raises(DataError, match=r"d\.jsonl\.gz:3: not a JSON object \(got list\)"):
        for _, rec in iter_records(f):
            got.append(rec)
    assert got == [{"a": "ü"}, {"a": 2}]
    j = tmp_path / "e.json.gz"
    with gzip.open(j, "wt", encoding="utf-8") as fh:
        json.dump([{"k": 1}], fh)
    assert list(iter_records(j)) == [(f"{j}: item 0", {"k": 1})]
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"not gzip at all")
    assert _error(iter_lines, bad).startswith(f"{bad}: cannot read file (")


def _reference_lines(data: bytes, limit: int) -> list:
    """What iter_lines must give: str.split semantics, blank lines dropped, long ones flagged."""
    out = []
    for lineno, line in enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), start=1):
        if len(line) > limit:
            out.append((lineno, "too long"))
        elif line.strip():
            out.append((lineno, line.rstrip(b"\r")))
    return out


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.sampled_from([b"a", b"{}", b"\n", b"\n\n", b" ", b"\t", b"\r", b"xyz12", b"\xef\xbb\xbf"]),
                   max_size=40),
    chunk=st.sampled_from([3, 4, 7, 1 << 20]),
    limit=st.integers(1, 12),
)
def test_iter_lines_chunked_reader_equals_splitting_the_whole_file(parts, chunk, limit):
    # The chunked reader (blank-line skipping, lines across chunks, BOM, limit) against the
    # obvious whole-file definition, with chunks small enough to split every kind of line.
    import tempfile

    import basereward.io as bio

    data = b"".join(parts)
    with tempfile.TemporaryDirectory() as d:
        f = os.path.join(d, "x.jsonl")
        with open(f, "wb") as fh:
            fh.write(data)
        got: list = []
        old, bio._CHUNK = bio._CHUNK, chunk
        try:
            for lineno, raw in iter_lines(f, max_line_bytes=limit, on_long=lambda n: got.append((n, "too long"))):
                got.append((lineno, raw))
        finally:
            bio._CHUNK = old
    assert got == _reference_lines(data, limit)


def test_json_list_errors(tmp_path):
    f = tmp_path / "all.json"
    f.write_text('[{"a": 1},\n  oops]')
    assert _error(iter_json_list, f).startswith(f"{f}:2: invalid JSON (Expecting value at column 3)")
    f.write_text('{"a": 1}')
    assert _error(iter_records, f) == f"{f}: expected a JSON list of records"
    f.write_text('[{"a": 1}, 5]')
    assert _error(iter_records, f) == f"{f}: item 1: expected a JSON object"
    f.write_bytes(b'["\xff"]')
    assert _error(read_json, f).startswith(f"{f}: not valid UTF-8")


def test_parquet_rows(tmp_path):
    f = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "n": [1, 2, 3]}), f)
    got = list(iter_parquet(f, batch_size=2))  # rows numbered across batches
    assert got == [(f"{f}: row 0", {"id": "a", "n": 1}), (f"{f}: row 1", {"id": "b", "n": 2}),
                   (f"{f}: row 2", {"id": "c", "n": 3})]
    assert list(iter_records(f)) == got
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 nope")
    assert _error(iter_records, junk).startswith(f"{junk}: not a readable parquet file")


def test_scores_path_rule():
    assert scores_path_for("out/pairs.json") == "out/pairs.scores.jsonl"
    assert scores_path_for("out/metrics") == "out/metrics.scores.jsonl"


# ---- writing --------------------------------------------------------------------------------


def _leftovers(directory) -> list[str]:
    return sorted(p for p in os.listdir(directory) if p.endswith(".tmp"))


def test_writers_round_trip_utf8_and_create_parents(tmp_path):
    rows = [{"id": "a", "text": "ünï"}, {"id": "b", "r": 0.5}]
    path = write_jsonl(tmp_path / "x" / "y" / "r.jsonl", rows)
    assert [rec for _, rec in iter_jsonl(path)] == rows
    assert "ünï" in path.read_text(encoding="utf-8")  # UTF-8, not \\u escapes
    j = write_json(tmp_path / "m.json", {"b": [1, None], "a": "é"})
    assert read_json(j) == {"b": [1, None], "a": "é"} and j.read_text().endswith("}\n")
    assert write_text(tmp_path / "t.md", "# hi\n").read_text() == "# hi\n"
    # Generators are written as they come (streamed).
    write_jsonl(tmp_path / "g.jsonl", ({"i": i} for i in range(3)))
    assert [r["i"] for _, r in iter_jsonl(tmp_path / "g.jsonl")] == [0, 1, 2]
    assert _leftovers(tmp_path) == []


def test_nan_is_refused_with_one_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"r\.jsonl:2: cannot write NaN or infinity as JSON"):
        write_jsonl(tmp_path / "r.jsonl", [{"r": 1.0}, {"r": math.nan}])
    with pytest.raises(DataError, match=r"m\.json: cannot write NaN or infinity"):
        write_json(tmp_path / "m.json", {"x": {"y": [math.inf]}})
    assert not (tmp_path / "r.jsonl").exists() and not (tmp_path / "m.json").exists()
    assert _leftovers(tmp_path) == []


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = write_jsonl(tmp_path / "r.jsonl", [{"v": 1}])

    def rows():
        yield {"v": 2}
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        write_jsonl(target, rows())
    assert target.read_text() == '{"v": 1}\n'  # untouched, not half of the new content
    with pytest.raises(TypeError):
        write_json(target, {"x": object()})
    assert target.read_text() == '{"v": 1}\n'
    assert _leftovers(tmp_path) == []


def test_finite_and_append_jsonl(tmp_path):
    from basereward.io import append_jsonl, finite, iter_jsonl

    assert finite({"a": [float("nan"), 1.0], "b": float("inf"), "c": "x"}) == {"a": [None, 1.0], "b": None, "c": "x"}
    log = tmp_path / "metrics.jsonl"
    append_jsonl(log, {"step": 1})
    append_jsonl(log, {"step": 2})
    assert [r for _, r in iter_jsonl(log)] == [{"step": 1}, {"step": 2}]
    with pytest.raises(DataError, match="cannot write NaN"):
        append_jsonl(log, {"step": float("nan")})
    assert [r["step"] for _, r in iter_jsonl(log)] == [1, 2]  # the refused line was never written
