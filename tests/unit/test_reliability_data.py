"""Issue 14, data side: confined images, regular files only, streaming with a line limit, BOMs,
duplicate YAML keys, an empty training set. Each bad input is one line (exit 2 on the CLI)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from basereward.cli import main
from basereward.config import load_config
from basereward.data import paths
from basereward.data.pairs import iter_pairs, load_pairs, open_image
from basereward.data.rows import KEPT_ERRORS, SeenIds, iter_rows
from basereward.errors import ConfigError, DataError
from basereward.io import iter_lines, read_json


def _row(pid: str = "p1", **kw) -> dict:
    row = {"id": pid, "prompt": "Describe.", "images": [], "chosen": "A red square.", "rejected": "A circle."}
    row.update(kw)
    return row


def _write(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 3), (10, 200, 30)).save(path)
    return path


@contextmanager
def _no_hang(seconds: int = 10):
    """Fail (instead of blocking the suite forever) if the body waits on a FIFO."""
    def boom(*_):
        raise TimeoutError("blocked: a FIFO was opened for reading")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _error(path, **kw) -> str:
    with pytest.raises(DataError) as info:
        load_pairs(path, **kw)
    return str(info.value)


# ---- images: confinement to a root -----------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    """root/ holds pairs and images; outside.png sits next to root; links point in and out."""
    root = tmp_path / "root"
    _png(root / "imgs" / "a.png")
    _png(tmp_path / "outside.png")
    os.symlink(tmp_path / "outside.png", root / "imgs" / "out_link.png")
    os.symlink(root / "imgs" / "a.png", root / "in_link.png")
    return root


@pytest.mark.parametrize("name", ["../outside.png", "imgs/../../outside.png", "imgs/out_link.png", "ABS"])
def test_escapes_are_bad_rows_with_a_root(tree, name):
    name = str(tree.parent / "outside.png") if name == "ABS" else name
    f = _write(tree / "pairs.jsonl", [_row("a", images=[name])])
    assert _error(f, image_root=str(tree)) == (
        f"{f}:1: image path leads outside the image root (refused): {name}"
    )
    # check_images=False skips decoding, never the confinement.
    with pytest.raises(DataError, match="outside the image root"):
        load_pairs(f, image_root=str(tree), check_images=False)
    # Without a root the same file loads: confinement is opt-in.
    (pair,) = load_pairs(f)
    assert pair.images == (str(tree.parent / "outside.png"),)


def test_paths_inside_the_root_load_as_real_paths(tree):
    f = _write(tree / "sub" / "pairs.jsonl",
               [_row("a", images=["../imgs/a.png"]), _row("b", images=["../in_link.png"])])
    a, b = load_pairs(f, image_root=str(tree))
    assert a.images == b.images == (str(tree / "imgs" / "a.png"),)


def test_a_root_reached_through_a_symlink_is_the_same_root(tree, tmp_path):
    os.symlink(tree, tmp_path / "alias")
    f = _write(tree / "pairs.jsonl", [_row("a", images=["imgs/a.png"])])
    assert len(load_pairs(f, image_root=str(tmp_path / "alias"))) == 1


def test_resolve_image_path_contract(tree):
    assert paths.resolve_image_path("imgs/a.png", root=str(tree)) == str(tree / "imgs" / "a.png")
    with pytest.raises(paths.ImagePathError, match=r"^\.\./outside\.png: image path leads outside"):
        paths.resolve_image_path("../outside.png", root=str(tree))
    with pytest.raises(DataError, match="NUL byte"):
        paths.resolve_image_path("a\0.png", root=str(tree))
    # The root's own prefix is not enough: /x/root2 is not inside /x/root.
    _png(tree.parent / "root2" / "b.png")
    with pytest.raises(DataError, match="outside the image root"):
        paths.resolve_image_path("../root2/b.png", root=str(tree))


# ---- images: only regular files are opened ----------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "dir", "device"])
def test_non_regular_files_are_refused_without_opening(tmp_path, kind):
    target = tmp_path / "x.png"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "dir":
        target.mkdir()
    else:
        os.symlink("/dev/zero", target)  # endless bytes: reading it would never finish
    shown = {"fifo": "a FIFO", "dir": "a directory", "device": "a device"}[kind]
    f = _write(tmp_path / "pairs.jsonl", [_row("a", images=["x.png"])])
    with _no_hang():
        assert _error(f) == f"{f}:1: not a regular file ({shown}); refused: x.png"
        with pytest.raises(DataError, match=rf"x\.png: not a regular file \({shown}\); refused"):
            open_image(target)
        # The CLI: one line, exit 2.
        assert main(["data", "check", str(f), "--on-error", "fail"]) == 2


def test_a_fifo_swapped_in_after_the_check_is_refused_by_fstat(tmp_path, monkeypatch):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    monkeypatch.setattr(paths, "check_regular_file", lambda *a, **k: None)  # the race: check passed
    with _no_hang(), pytest.raises(paths.ImagePathError, match=r"not a regular file \(a FIFO\)"):
        paths.open_regular(str(fifo))


# ---- image roots on the command line and in the config -----------------------------------------


def test_cli_image_root(tree, capsys):
    f = _write(tree / "pairs.jsonl", [_row("a", images=["../outside.png"])])
    out = str(tree / "o.jsonl")
    # score: refused while loading pairs, before any model is read (the model path is bogus).
    assert main(["score", "--model", "nope", "--pairs", str(f), "--output", out, "--image-root", str(tree)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {f}:1: image path leads outside the image root (refused): ../outside.png"]
    assert main(["data", "check", str(f), "--image-root", str(tree), "--on-error", "fail"]) == 2
    assert "outside the image root" in capsys.readouterr().err
    for cmd in (["data", "check", str(f)], ["eval", "--model", "m", "--bench", "pairs", "--data", str(f),
                                             "--output", out]):
        assert main([*cmd, "--image-root", str(tree / "nope")]) == 2
        assert capsys.readouterr().err.strip() == f"error: --image-root {tree / 'nope'}: not a directory"


def test_benchmarks_confine_their_images(tree):
    from basereward.eval.benchmarks import multimodal_rewardbench as mmrb
    from basereward.eval.benchmarks import pairs as pair_bench

    f = _write(tree / "pairs.jsonl", [_row("a", images=["../outside.png"])])
    with pytest.raises(DataError, match="outside the image root"):
        pair_bench.load(str(f), image_root=str(tree))
    record = {"ID": "vqa_1", "Text": "q", "Image": "../outside.png", "Output1": "a", "Output2": "b",
              "Better": "Output1", "Category": "vqa"}
    (tree / "all_data.json").write_text(json.dumps([record]))
    with pytest.raises(DataError, match=r"item 0 \(ID vqa_1\): image path leads outside the image root"):
        mmrb.load(str(tree), image_root=str(tree))
    assert mmrb.load(str(tree))[0].group.images == (str(tree.parent / "outside.png"),)


def test_config_image_root_confines_training_data(tree):
    from basereward.training.data import load_training_data

    f = _write(tree / "pairs.jsonl", [_row("a", images=["imgs/out_link.png"])])
    cfg = load_config(None, [f"data.train=[{f}]", f"data.image_root={tree}"])
    with pytest.raises(DataError, match="out_link.png"):
        load_training_data(cfg.data, seed=0)
    missing = load_config(None, [f"data.train=[{f}]", f"data.image_root={tree / 'x'}"])
    with pytest.raises(DataError, match=r"^data\.image_root .*x: not a directory$"):
        load_training_data(missing.data, seed=0)


# ---- an empty training set says so -------------------------------------------------------------


def test_empty_training_set_is_named_plainly(tmp_path, capsys):
    from basereward.training.loop import train

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"train:\n  output_dir: {tmp_path / 'run'}\n")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: data.train names no training files: no training pairs")
    # The Python API gets the same plain statement, not a batch-size complaint.
    with pytest.raises(ConfigError, match=r"^no training pairs: the training set is empty"):
        train(load_config(cfg), [])
    assert not (tmp_path / "run").exists()


# ---- streaming, line limit, BOM --------------------------------------------------------------


def test_a_line_over_the_limit_is_one_bad_row(tmp_path):
    f = _write(tmp_path / "p.jsonl", [_row("a"), json.dumps(_row("b", prompt="x" * 500)), _row("c")])
    logged: list[str] = []
    rows = list(iter_rows(f, lambda n, raw: json.loads(raw)["id"], on_error="skip", log=logged.append,
                          max_line_bytes=200))
    assert rows == ["a", "c"]
    assert logged == [f"{f}:2: line longer than 200 bytes (the limit for one JSONL row); not a JSONL file?",
                      f"{f}: skipped 1 of 3 rows"]
    with pytest.raises(DataError, match=r"p\.jsonl:2: line longer than 200 bytes"):
        list(iter_lines(f, max_line_bytes=200))


def test_a_gz_without_newlines_is_refused_at_the_real_limit(tmp_path):
    # 65 MiB of one "line" compresses to ~65 kB: the reader must refuse it, not assemble it.
    f = tmp_path / "p.jsonl.gz"
    f.write_bytes(gzip.compress(b'{"id": "' + b"x" * (65 << 20), compresslevel=1))
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as info:
            load_pairs(f)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value) == f"{f}:1: line longer than 64 MiB (the limit for one JSONL row); not a JSONL file?"
    assert peak < 72 << 20  # at most the limit plus a chunk is ever held


def test_blank_gz_streams_in_bounded_memory(tmp_path, capsys):
    f = tmp_path / "blank.jsonl.gz"
    with gzip.open(f, "wb", compresslevel=1) as fh:
        for _ in range(64):
            fh.write(b"\n" * (1 << 20))
        fh.write(json.dumps(_row("late")).encode() + b"\n")
    tracemalloc.start()
    try:
        got = [(n, p.id) for n, p in enumerate(iter_pairs(f), start=1)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == [(1, "late")] and peak < 16 << 20
    assert main(["data", "check", str(f)]) == 0
    assert capsys.readouterr().out.strip() == f"{f}: 1 valid pairs (0 multimodal, 1 text-only)"
    assert next(iter_lines(f))[0] == 64 * (1 << 20) + 1  # line numbers count every blank line


def test_bom_at_file_start_is_accepted(tmp_path):
    bom = b"\xef\xbb\xbf"
    f = tmp_path / "p.jsonl"
    f.write_bytes(bom + json.dumps(_row("a")).encode() + b"\n" + bom + json.dumps(_row("b")).encode() + b"\n")
    # Only the file's first bytes may be a BOM; one inside the file is still a bad row.
    with pytest.raises(DataError, match=r"p\.jsonl:2: malformed JSON"):
        load_pairs(f)
    (pair,) = load_pairs(f, on_error="skip", log=lambda _: None)
    assert pair.id == "a"
    g = tmp_path / "p.jsonl.gz"
    g.write_bytes(gzip.compress(bom + json.dumps(_row("a")).encode()))
    assert [p.id for p in load_pairs(g)] == ["a"]
    j = tmp_path / "l.json"
    j.write_bytes(bom + b'[{"k": 1}]')
    assert read_json(j) == [{"k": 1}]


def test_corrupt_gz_is_one_line(tmp_path):
    f = tmp_path / "p.jsonl.gz"
    data = bytearray(gzip.compress(json.dumps(_row("a")).encode() * 50))
    data[20:40] = b"\x00" * 20
    f.write_bytes(bytes(data))
    msg = _error(f)
    assert msg.startswith(f"{f}: cannot read file (") and "\n" not in msg


def test_fail_mode_counts_every_bad_row_but_keeps_a_bounded_list(tmp_path):
    n_bad = KEPT_ERRORS + 50
    f = _write(tmp_path / "p.jsonl", [_row("a")] + ["{"] * n_bad)
    with pytest.raises(DataError) as info:
        load_pairs(f)
    assert str(info.value).endswith(f"(and {n_bad - 1} more bad rows)")
    assert len(info.value.errors) == KEPT_ERRORS


def test_skip_mode_streams_good_rows_and_logs_as_it_goes(tmp_path):
    f = _write(tmp_path / "p.jsonl", [_row("a"), "{", _row("b")])
    logged: list[str] = []
    it = iter_pairs(f, on_error="skip", log=logged.append)
    assert next(it).id == "a" and logged == []
    reason = "malformed JSON (Expecting property name enclosed in double quotes at column 2)"
    assert next(it).id == "b" and logged == [f"{f}:2: {reason}"]
    assert list(it) == [] and logged[-1] == f"{f}: skipped 1 of 3 rows"


def test_seen_ids_match_a_dict_through_growth():
    import random

    rng = random.Random(0)
    seen, ref = SeenIds(), {}
    for line in range(1, 60_001):
        key = f"id-{rng.randrange(40_000)}"
        assert seen.first_line(key, line) == ref.get(key)  # None the first time, then its line
        ref.setdefault(key, line)
    assert len(seen) == len(ref) > 30_000


# ---- YAML configs -----------------------------------------------------------------------------


@pytest.mark.parametrize("text, line, key, first", [
    ("train:\n  lr: 1.0e-5\n  epochs: 1\n  lr: 3.0e-6\n", 4, "lr", 2),
    ("train:\n  lr: 1.0e-5\nmodel: {}\ntrain:\n  epochs: 2\n", 4, "train", 1),
])
def test_duplicate_yaml_keys_are_errors(tmp_path, capsys, text, line, key, first):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    message = f"{cfg}:{line}: duplicate key '{key}' (first on line {first})"
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert str(info.value) == message
    assert main(["train", str(cfg)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]


def test_yaml_same_key_in_two_sections_bom_and_bad_bytes(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"\xef\xbb\xbftrain:\n  seed: 3\ndata:\n  max_pairs: 3\n")
    c = load_config(cfg)
    assert (c.train.seed, c.data.max_pairs) == (3, 3)
    cfg.write_bytes(b"train:\n  output_dir: \xff\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: invalid YAML"):
        load_config(cfg)
    with pytest.raises(ConfigError, match=r"override 'train.lr_grid=\{a: 1, a: 2\}': duplicate key 'a'"):
        load_config(None, ["train.lr_grid={a: 1, a: 2}"])
