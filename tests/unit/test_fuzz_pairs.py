"""Property: whatever bytes or JSON shapes a pair file holds, the loader gives valid pairs or one
DataError line (CLI: exit 2, one `error:` line) — never another exception, never a hang."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from PIL import Image

from basereward.cli import main
from basereward.data.pairs import load_pairs
from basereward.data.schema import PreferencePair
from basereward.errors import DataError

PAIR_KEYS = ("id", "prompt", "images", "chosen", "rejected", "source", "category")
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def folder():
    """A folder with one good image, a corrupt one, a FIFO and a directory posing as images."""
    d = Path(tempfile.mkdtemp(prefix="fuzz-pairs-"))
    Image.new("RGB", (5, 4), (1, 2, 3)).save(d / "ok.png")
    (d / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    os.mkfifo(d / "fifo.png")
    (d / "dir.png").mkdir()
    yield d
    shutil.rmtree(d)


IMAGE_NAMES = st.sampled_from(["ok.png", "ok.png", "ok.png", "bad.png", "fifo.png", "dir.png", "missing.png", "../ok.png", "", "/"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
# Each key of a row is usually a plausible value (so many rows pass and reach the later checks:
# duplicate ids, identical responses, image files), sometimes any JSON, sometimes missing.
GOOD = {
    "id": st.sampled_from(["p1", "p2", "p3", "p4", "p5", "p6", " ", "é"]),
    "images": st.lists(IMAGE_NAMES, max_size=2),
} | {k: st.sampled_from(["a", "b", "c", "d", "e", "f", "ü\u2028", " "])
     for k in ("prompt", "chosen", "rejected", "source", "category")}


@st.composite
def rows(draw) -> dict:
    row = {}
    for key in PAIR_KEYS:
        how = draw(st.sampled_from(["good"] * 12 + ["json", "missing"]))
        if how != "missing":
            row[key] = draw(GOOD[key] if how == "good" else JSON)
    if draw(st.booleans()):
        row["extra"] = draw(JSON)
    return row


ROW_LINE = rows().map(lambda r: json.dumps(r).encode())
LINE = st.one_of(
    ROW_LINE,
    ROW_LINE,
    ROW_LINE,
    JSON.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40),
    st.sampled_from([b"", b"   ", b"\xef\xbb\xbf", b"\r", b'{"id": "p1"']),
)
FILE = st.lists(LINE, max_size=6).map(lambda lines: b"\n".join(lines))


def _check_outcome(path: Path, on_error: str) -> None:
    """load_pairs either returns valid pairs or raises DataError with one line."""
    try:
        pairs = load_pairs(path, on_error=on_error, log=lambda _: None)
    except DataError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert pairs
    assert len({p.id for p in pairs}) == len(pairs)
    for p in pairs:
        assert isinstance(p, PreferencePair) and p.id.strip() and p.chosen != p.rejected
        assert all(isinstance(x, str) and x.strip() for x in (p.prompt, p.chosen, p.rejected))
        assert all(os.path.isabs(i) and i.endswith("ok.png") for i in p.images)


@SETTINGS
@given(data=FILE, gz=st.booleans(), on_error=st.sampled_from(["fail", "skip"]))
def test_any_file_gives_pairs_or_one_data_error(folder, data, gz, on_error):
    path = folder / ("p.jsonl.gz" if gz else "p.jsonl")
    path.write_bytes(gzip.compress(data) if gz else data)
    _check_outcome(path, on_error)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_random_bytes_as_gz_name_or_plain(folder, data):
    for name in ("r.jsonl", "r.jsonl.gz"):
        (folder / name).write_bytes(data)
        _check_outcome(folder / name, "fail")


@SETTINGS
@given(data=FILE)
def test_cli_data_check_exits_0_or_2_with_one_line(folder, capsys, data):
    path = folder / "c.jsonl"
    path.write_bytes(data)
    rc = main(["data", "check", str(path), "--on-error", "fail"])
    out, err = capsys.readouterr()
    if rc == 0:
        assert err == "" and out.count("\n") == 1 and "valid pairs" in out
    else:
        assert rc == 2 and out == ""
        assert err.count("\n") == 1 and err.startswith("error: ")


def test_the_strategy_reaches_valid_multimodal_pairs(folder):
    # The properties above are not vacuous: the file strategy does produce loadable files.
    path = folder / "f.jsonl"

    def loads_an_image_pair(data: bytes) -> bool:
        path.write_bytes(data)
        try:
            return any(p.is_multimodal for p in load_pairs(path, on_error="fail"))
        except DataError:
            return False

    found = find(FILE, loads_an_image_pair, settings=settings(max_examples=2000, database=None))
    assert b"ok.png" in found
