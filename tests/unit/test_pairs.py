"""The pair JSONL loader: every bad-row reason, fail/skip modes, image safety, round trip."""

from __future__ import annotations

import json
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from basereward.data.pairs import MAX_IMAGE_PIXELS, load_pairs, open_image, save_pairs
from basereward.data.schema import PreferencePair
from basereward.errors import DataError


def _row(pid: str = "p1", **overrides) -> dict:
    row = {
        "id": pid,
        "prompt": "Describe the image.",
        "images": [],
        "chosen": "A red square.",
        "rejected": "A blue circle.",
        "source": "unit",
        "category": "general",
    }
    row.update(overrides)
    return row


def _write(path: Path, lines: list) -> Path:
    """Write one line per item: dicts/lists as JSON, strings verbatim."""
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return path


def _png(path: Path, size=(8, 6), mode="RGB", color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format="PNG")
    return path


def _patch_png_size(path: Path, width: int, height: int) -> None:
    """Rewrite the IHDR width/height of a PNG (and its CRC) so the header declares a new size."""
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def _reason(tmp_path: Path, row: dict | str | list) -> str:
    """The single error message for a file made of one good row then `row` (line 2)."""
    f = _write(tmp_path / "pairs.jsonl", [_row("good"), row])
    with pytest.raises(DataError) as info:
        load_pairs(str(f))
    return str(info.value)


# ---- each bad-row reason, reported as file:line: reason -------------------------------------


@pytest.mark.parametrize(
    "row, reason",
    [
        ('{"id": "x", "prompt": ', "malformed JSON"),
        ('["not", "an", "object"]', "not a JSON object (got list)"),
        ({k: v for k, v in _row("x").items() if k != "chosen"}, "missing field 'chosen'"),
        ({k: v for k, v in _row("x").items() if k != "images"}, "missing field 'images'"),
        (_row("x", images="a.png"), "field 'images' must be a list of non-empty path strings"),
        (_row("x", images=[3]), "field 'images' must be a list of non-empty path strings"),
        (_row(7), "field 'id' must be a string, got int"),
        (_row("x", prompt=["hi"]), "field 'prompt' must be a string, got list"),
        (_row("x", source=1), "field 'source' must be a string, got int"),
        (_row("x", prompt="   \n"), "empty prompt"),
        (_row("x", chosen=""), "empty chosen"),
        (_row("x", rejected="\t"), "empty rejected"),
        (_row(" "), "empty id"),
        (_row("x", chosen="same", rejected="same"), "chosen and rejected are identical"),
        (_row("good"), "duplicate id 'good' (first on line 1)"),
        (_row("x", history="hi"), "field 'history' must be a list of turns, got str"),
        (_row("x", history=[{"role": "user"}]), 'history[0] must be {"role", "content"}'),
        (_row("x", history=[{"role": "user", "content": "a"}]), "history has 1 turns; it must end with an assistant turn"),
        (_row("x", history=[{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]),
         "history[0].role must be 'user' (turns alternate, user first), got 'assistant'"),
        (_row("x", history=[{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}]),
         "history[1].content must be a non-empty string"),
    ],
)
def test_bad_row_reason(tmp_path, row, reason):
    msg = _reason(tmp_path, row)
    assert msg.startswith(f"{tmp_path / 'pairs.jsonl'}:2: {reason}")
    assert "more bad row" not in msg


def test_invalid_utf8_line(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_bytes(json.dumps(_row("a")).encode() + b"\n" + b'{"id": "\xff"}\n')
    with pytest.raises(DataError, match=r"pairs\.jsonl:2: not valid UTF-8"):
        load_pairs(f)


def test_file_named_as_given(tmp_path, monkeypatch):
    # The message uses the path the user typed, not an absolute or resolved one.
    _write(tmp_path / "pairs.jsonl", [_row("a"), "{oops"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as info:
        load_pairs("pairs.jsonl")
    assert str(info.value).startswith("pairs.jsonl:2: malformed JSON")


# ---- images ---------------------------------------------------------------------------------


def _image_reason(tmp_path: Path, rel: str) -> str:
    f = _write(tmp_path / "pairs.jsonl", [_row("a", images=[rel])])
    with pytest.raises(DataError) as info, warnings.catch_warnings():
        # No PIL warning (e.g. DecompressionBombWarning) may escape: it must become an error.
        warnings.simplefilter("error")
        load_pairs(f)
    return str(info.value)


def test_missing_image(tmp_path):
    assert _image_reason(tmp_path, "imgs/nope.png") == (
        f"{tmp_path / 'pairs.jsonl'}:1: image not found: imgs/nope.png"
    )


def test_random_bytes_image(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "noise.png").write_bytes(np.random.default_rng(0).bytes(512))
    msg = _image_reason(tmp_path, "imgs/noise.png")
    assert msg.startswith(
        f"{tmp_path / 'pairs.jsonl'}:1: corrupt or unreadable image: imgs/noise.png ("
    )


def test_truncated_png(tmp_path):
    # Noise does not compress, so half the file cuts the pixel data (IDAT) in the middle.
    path = tmp_path / "imgs" / "trunc.png"
    path.parent.mkdir()
    noise = np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    msg = _image_reason(tmp_path, "imgs/trunc.png")
    assert msg.startswith(
        f"{tmp_path / 'pairs.jsonl'}:1: corrupt or unreadable image: imgs/trunc.png ("
    )


def test_bad_crc_png(tmp_path):
    # A flipped byte inside IDAT: decoding may succeed, verify() catches the CRC mismatch.
    path = _png(tmp_path / "imgs" / "crc.png", size=(16, 16))
    data = bytearray(path.read_bytes())
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF
    path.write_bytes(bytes(data))
    msg = _image_reason(tmp_path, "imgs/crc.png")
    assert "corrupt or unreadable image: imgs/crc.png (" in msg


def test_bomb_above_our_limit_refused_before_decoding(tmp_path):
    # 6000 x 6000 = 36 Mpx: above MAX_IMAGE_PIXELS but below PIL's own warning threshold. The
    # pixel data is a tiny 8x6 image's, so decoding would fail differently: the reason proves
    # the size check ran first.
    path = _png(tmp_path / "imgs" / "big.png")
    _patch_png_size(path, 6000, 6000)
    assert MAX_IMAGE_PIXELS < 6000 * 6000
    assert _image_reason(tmp_path, "imgs/big.png") == (
        f"{tmp_path / 'pairs.jsonl'}:1: decompression bomb refused: imgs/big.png "
        f"(6000x6000 pixels, limit {MAX_IMAGE_PIXELS})"
    )


@pytest.mark.parametrize("side", [10_000, 100_000])  # PIL warns at ~89 Mpx, raises at ~179 Mpx
def test_bomb_pil_warning_and_error_become_errors(tmp_path, side):
    path = _png(tmp_path / "imgs" / "bomb.png")
    _patch_png_size(path, side, side)
    msg = _image_reason(tmp_path, "imgs/bomb.png")
    assert msg.startswith(
        f"{tmp_path / 'pairs.jsonl'}:1: decompression bomb refused: imgs/bomb.png ("
    )


def test_real_large_bilevel_image_refused(tmp_path):
    # A genuine, valid 1-bit PNG of 6000 x 6000 compresses to a few kB: exactly what a bomb is.
    path = tmp_path / "imgs" / "bits.png"
    path.parent.mkdir()
    Image.new("1", (6000, 6000), 0).save(path)
    assert path.stat().st_size < 50_000
    assert "decompression bomb refused: imgs/bits.png (6000x6000 pixels" in _image_reason(
        tmp_path, "imgs/bits.png"
    )


def test_check_images_false_skips_file_checks(tmp_path):
    f = _write(tmp_path / "pairs.jsonl", [_row("a", images=["imgs/nope.png"])])
    (pair,) = load_pairs(f, check_images=False)
    assert pair.images == (str(tmp_path / "imgs" / "nope.png"),)


def test_images_resolved_to_absolute_paths(tmp_path):
    _png(tmp_path / "data" / "imgs" / "a.png")
    _png(tmp_path / "shared.png")
    f = _write(
        tmp_path / "data" / "pairs.jsonl",
        [_row("a", images=["imgs/a.png", "../shared.png"]), _row("b", images=["imgs/a.png"])],
    )
    a, b = load_pairs(f)
    assert a.images == (str(tmp_path / "data" / "imgs" / "a.png"), str(tmp_path / "shared.png"))
    assert all(os.path.isabs(p) for p in a.images + b.images)
    assert (a.source, a.category, a.is_multimodal) == ("unit", "general", True)


def test_optional_fields_default_to_empty(tmp_path):
    row = {"id": "t", "prompt": "p", "images": [], "chosen": "c", "rejected": "r"}
    (pair,) = load_pairs(_write(tmp_path / "p.jsonl", [row]))
    assert pair == PreferencePair(id="t", prompt="p", chosen="c", rejected="r")


# ---- fail / skip modes ----------------------------------------------------------------------


def _mixed_file(tmp_path: Path) -> Path:
    """7 physical lines: 3 good rows, 3 bad rows (lines 2, 5, 7), one blank line (line 4)."""
    _png(tmp_path / "ok.png")
    return _write(
        tmp_path / "mixed.jsonl",
        [
            _row("a"),
            "not json",
            _row("b", images=["ok.png"]),
            "",
            _row("c", chosen=" "),
            _row("d"),
            _row("a"),
        ],
    )


def test_fail_mode_raises_one_error_after_reading_everything(tmp_path):
    f = _mixed_file(tmp_path)
    with pytest.raises(DataError) as info:
        load_pairs(f, on_error="fail")
    assert (
        str(info.value)
        == f"{f}:2: malformed JSON (Expecting value at column 1) (and 2 more bad rows)"
    )
    assert info.value.errors == [
        f"{f}:2: malformed JSON (Expecting value at column 1)",
        f"{f}:5: empty chosen",
        f"{f}:7: duplicate id 'a' (first on line 1)",
    ]


def test_fail_mode_singular_suffix(tmp_path):
    f = _write(tmp_path / "p.jsonl", [_row("a", chosen=""), _row("b", rejected="")])
    with pytest.raises(DataError, match=r"p\.jsonl:1: empty chosen \(and 1 more bad row\)$"):
        load_pairs(f)


def test_skip_mode_returns_good_rows_and_logs_each_bad_one(tmp_path):
    f = _mixed_file(tmp_path)
    logged: list[str] = []
    pairs = load_pairs(f, on_error="skip", log=logged.append)
    assert [p.id for p in pairs] == ["a", "b", "d"]
    assert logged == [
        f"{f}:2: malformed JSON (Expecting value at column 1)",
        f"{f}:5: empty chosen",
        f"{f}:7: duplicate id 'a' (first on line 1)",
        f"{f}: skipped 3 of 6 rows",
    ]


def test_skip_mode_all_bad_is_an_error(tmp_path):
    f = _write(tmp_path / "p.jsonl", ["{", "]"])
    with pytest.raises(DataError, match=r"no valid pairs \(all 2 rows are bad\)"):
        load_pairs(f, on_error="skip", log=lambda _: None)


def test_skip_mode_clean_file_logs_nothing(tmp_path):
    logged: list[str] = []
    assert (
        len(
            load_pairs(
                _write(tmp_path / "p.jsonl", [_row("a")]), on_error="skip", log=logged.append
            )
        )
        == 1
    )
    assert logged == []


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match=rf"^{empty}: file is empty"):
        load_pairs(empty)
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=rf"^{missing}: file not found$"):
        load_pairs(missing)
    with pytest.raises(ValueError, match="on_error"):
        load_pairs(empty, on_error="ignore")


# ---- save / round trip ----------------------------------------------------------------------


def test_save_load_round_trip_with_relative_images(tmp_path):
    img = _png(tmp_path / "images" / "cat.png")
    pairs = [
        PreferencePair(
            id="mm",
            prompt="What is shown?",
            chosen="A cat.",
            rejected="A dog.",
            images=(str(img),),
            source="synthetic",
            category="perception",
        ),
        PreferencePair(id="txt", prompt="Say hi. ünïcödé", chosen="Hi!", rejected="No."),
    ]
    out = tmp_path / "out" / "nested" / "pairs.jsonl"
    save_pairs(pairs, out)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert records[0]["images"] == [os.path.join("..", "..", "images", "cat.png")]
    assert records[1]["images"] == []
    assert "ünïcödé" in out.read_text(encoding="utf-8")  # written as UTF-8, not \u escapes
    assert load_pairs(out) == pairs
    assert not (out.parent / "pairs.jsonl.tmp").exists()


def test_save_refuses_duplicate_ids(tmp_path):
    p = PreferencePair(id="x", prompt="p", chosen="c", rejected="r")
    with pytest.raises(DataError, match="duplicate id 'x'"):
        save_pairs([p, p], tmp_path / "p.jsonl")


# ---- open_image -----------------------------------------------------------------------------


def test_open_image_rgb_and_loaded(tmp_path):
    im = open_image(_png(tmp_path / "g.png", mode="L", color=90))
    assert im.mode == "RGB" and im.size == (8, 6)
    assert im.getpixel((0, 0)) == (90, 90, 90)


def test_open_image_transparent_becomes_white(tmp_path):
    im = open_image(_png(tmp_path / "t.png", mode="RGBA", color=(0, 0, 0, 0)))
    assert im.getpixel((3, 3)) == (255, 255, 255)


def test_open_image_errors_name_the_path(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=rf"^{bad}: corrupt or unreadable image \("):
        open_image(bad)
    with pytest.raises(DataError, match=rf"^{tmp_path / 'none.png'}: image not found$"):
        open_image(tmp_path / "none.png")
    big = _png(tmp_path / "big.png")
    _patch_png_size(big, 100_000, 100_000)
    with pytest.raises(DataError, match=rf"^{big}: decompression bomb refused"):
        open_image(big)


def test_multi_turn_history_round_trips(tmp_path):
    """Earlier turns are kept as messages (oldest first); single-turn rows are written without the key."""
    turns = (("user", "My cat is Tom."), ("assistant", "Nice!"))
    pairs = [PreferencePair(id="a", prompt="Name my cat.", chosen="Tom", rejected="Rex", history=turns),
             PreferencePair(id="b", prompt="Hi", chosen="Hello", rejected="Go away")]
    out = tmp_path / "p.jsonl"
    save_pairs(pairs, out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["history"] == [{"role": "user", "content": "My cat is Tom."}, {"role": "assistant", "content": "Nice!"}]
    assert "history" not in rows[1]
    assert load_pairs(out) == pairs
    assert load_pairs(out)[0].to_group().history == turns
    with pytest.raises(ValueError, match="must end with an assistant turn"):
        PreferencePair(id="c", prompt="q", chosen="a", rejected="b", history=(("user", "x"),))
