"""Grounded-caption files (the alignment data of mini-vl's word projector) and the generator's copy."""

from __future__ import annotations

import json

import pytest

from basereward.data.regions import (
    GroundedImage,
    Region,
    load_regions,
    region_words,
    save_regions,
)
from basereward.data.synthetic import example_regions, generate, make_example
from basereward.errors import DataError


def _write(tmp_path, rows):
    (tmp_path / "img.png").write_bytes(b"x")  # existence is what the loader checks; pixels are read later
    path = tmp_path / "regions.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_round_trip_keeps_boxes_texts_and_relative_paths(tmp_path):
    img = tmp_path / "sub" / "a.png"
    img.parent.mkdir()
    img.write_bytes(b"x")
    items = [GroundedImage(str(img), (Region((0.1, 0.2, 0.5, 0.6), "red star"), Region((0.0, 0.0, 1.0, 1.0), "plain background")))]
    save_regions(items, tmp_path / "r.jsonl")
    row = json.loads((tmp_path / "r.jsonl").read_text())
    assert row["image"] == "sub/a.png"
    assert load_regions(tmp_path / "r.jsonl") == items
    assert region_words(items) == ("background", "plain", "red", "star")


@pytest.mark.parametrize(
    "row, reason",
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "not a JSON object (got list)"),
        ({"regions": []}, "missing field 'image'"),
        ({"image": "img.png", "regions": [{"box": [0.5, 0, 0.4, 1], "text": "a"}]}, "regions[0].box"),
        ({"image": "img.png", "regions": [{"box": [0, 0, 1], "text": "a"}]}, "four numbers"),
        ({"image": "img.png", "regions": [{"box": [0, 0, 1, 1], "text": "  "}]}, "regions[0].text"),
        ({"image": "missing.png", "regions": []}, "image not found: missing.png"),
    ],
)
def test_bad_rows_report_file_and_line(tmp_path, row, reason):
    good = {"image": "img.png", "regions": [{"box": [0, 0, 1, 1], "text": "grey wall"}]}
    path = _write(tmp_path, [good, row])
    with pytest.raises(DataError) as err:
        load_regions(path)
    assert str(err.value).startswith(f"{path}:2: ")
    assert reason in str(err.value)


def test_empty_file_and_bad_bytes(tmp_path):
    path = tmp_path / "regions.jsonl"
    path.write_text("\n\n")
    with pytest.raises(DataError, match=rf"^{path}: file is empty \(no grounded images\)$"):
        load_regions(path)
    path.write_bytes(b'{"image": "\xff"}\n')
    with pytest.raises(DataError, match=rf"^{path}:1: not valid UTF-8"):
        load_regions(path)


def test_generator_writes_one_grounded_image_per_pair(tmp_path):
    pairs = generate(str(tmp_path / "s"), n_pairs=24, seed=5, progress=False)
    items = load_regions(tmp_path / "s" / "regions.jsonl")
    assert [it.image for it in items] == [p.images[0] for p in pairs]
    for k, (pair, item) in enumerate(zip(pairs, items)):
        ex = make_example(5, k, pair.category)
        expected = example_regions(ex, 224)
        assert [r.text for r in item.regions] == [r.text for r in expected]
        # Boxes are stored with 4 decimals.
        assert all(abs(a - b) <= 5e-5 for r, e in zip(item.regions, expected) for a, b in zip(r.box, e.box))
        if "objects" in ex.meta:
            # One box per object, around its centre, named by its true colour and shape.
            assert [r.text for r in item.regions] == [f"{o['colour']} {o['shape']}" for o in ex.meta["objects"]]
            for r, o in zip(item.regions, ex.meta["objects"]):
                cx, cy = (r.box[0] + r.box[2]) / 2 * 224, (r.box[1] + r.box[3]) / 2 * 224
                if 0 < r.box[0] and r.box[2] < 1 and 0 < r.box[1] and r.box[3] < 1:
                    assert abs(cx - o["center"][0]) < 0.1 and abs(cy - o["center"][1]) < 0.1
