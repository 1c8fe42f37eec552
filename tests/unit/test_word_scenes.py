"""Word scenes (data/synthetic/word_scenes.py): the picture written as the projector's words, the
labels that follow from it, and the rules the training data keeps (no held-out combination, no
held-out wording)."""

from __future__ import annotations

import numpy as np
import pytest

from basereward.data.synthetic import word_scenes as ws
from basereward.data.synthetic.combos import HELDOUT_COMBOS
from basereward.data.synthetic.heldout import HELDOUT_BANK

EXIST, COLOUR, OBJECT = "hallucination/existence", "hallucination/color", "hallucination/object"
DESC, COUNT, SPATIAL = "general/description", "hallucination/count", "reasoning/spatial"
BY_NAME = {"scene/existence": EXIST, "scene/color": COLOUR, "scene/object": OBJECT, "scene/description": DESC}


def test_scene_text_by_hand():
    # A red star over cells 0 and 4 (centre 0) and a gold cup in cell 15; no partial readings.
    text = ws.scene_text([("star", "red"), ("cup", "gold")], [[0, 4], [15]], np.random.default_rng(0),
                         ws.SceneOptions(partial=0.0))
    cells = ["red star,", *["background,,"] * 3, "red star,", *["background,,"] * 10, "gold cup,"]
    assert text == "".join(" " + c for c in cells)


def test_partial_cells_read_the_colour_alone_but_never_the_centre():
    text = ws.scene_text([("star", "red")], [[5, 6, 9, 10]], np.random.default_rng(0), ws.SceneOptions(partial=1.0))
    cells = ["background,,"] * 16
    cells[5], cells[6], cells[9], cells[10] = "red star,", "red,,", "red,,", "red,,"
    assert text == "".join(" " + c for c in cells)


def test_placed_blocks_are_disjoint_and_on_the_grid():
    for seed in range(50):
        blocks = ws.place(np.random.default_rng(seed), 4)
        cells = [c for b in blocks for c in b]
        assert len(cells) == len(set(cells)) and all(0 <= c < ws.GRID ** 2 for c in cells)
        for b in blocks:  # a block is a rectangle of at most 2x2 cells
            rows, cols = {c // ws.GRID for c in b}, {c % ws.GRID for c in b}
            assert len(b) == len(rows) * len(cols) and len(rows) <= 2 and len(cols) <= 2


def _cells(meta):
    return {c: (o["shape"], o["colour"]) for o in meta["objects"] for c in o["cells"]}


@pytest.mark.parametrize("index", range(60))
def test_existence_label_follows_the_scene(index):
    prompt, chosen, rejected, meta = ws.make_scene_example(3, index, EXIST)
    objects = [(o["shape"], o["colour"]) for o in meta["objects"]]
    query = (meta["query"]["shape"], meta["query"]["colour"])
    assert (query in objects) == meta["present"]
    if meta["kind"] == "colour distractor":
        assert any(c == query[1] for _, c in objects) and query not in objects
    if meta["kind"] == "shape distractor":
        assert any(s == query[0] for s, _ in objects) and query not in objects
    # The scene names the query's colour and noun in one cell exactly when the object is there.
    assert (f" {query[1]} {query[0]}," in prompt) == meta["present"]


@pytest.mark.parametrize("index", range(30))
def test_colour_and_object_questions_name_one_object(index):
    _, chosen, rejected, meta = ws.make_scene_example(4, index, COLOUR)
    nouns = [o["shape"] for o in meta["objects"]]
    assert nouns.count(nouns[0]) == 1 and meta["objects"][0]["colour"] == meta["true"] != meta["fake"]
    assert meta["true"] in chosen and meta["fake"] in rejected
    _, chosen, rejected, meta = ws.make_scene_example(4, index, OBJECT)
    colours = [o["colour"] for o in meta["objects"]]
    assert colours.count(colours[0]) == 1 and meta["objects"][0]["shape"] == meta["true"] != meta["fake"]


@pytest.mark.parametrize("index", range(30))
def test_a_description_swaps_one_attribute_of_one_object(index):
    from basereward.data.synthetic.base import a

    _, chosen, rejected, meta = ws.make_scene_example(6, index, DESC, ws.SceneOptions(pad=0.0))
    objects = [(o["shape"], o["colour"]) for o in meta["objects"]]
    target, fake = objects[meta["target"]], (meta["fake"]["shape"], meta["fake"]["colour"])
    assert fake not in objects and (fake[0] == target[0]) != (fake[1] == target[1])
    # Unpadded, the two answers differ in that one object only.
    t, f = a(f"{target[1]} {target[0]}"), a(f"{fake[1]} {fake[0]}")
    assert t.lower() in chosen.lower() and f.lower() in rejected.lower()
    assert chosen.lower().replace(t.lower(), "#") == rejected.lower().replace(f.lower(), "#")


def _read_cells(prompt):
    """The 16 cells of a scene prompt as word lists ("red star," -> ["red", "star"])."""
    import re

    cells = re.findall(r" ?([a-z]+(?: [a-z]+)?)(,+)", prompt)[: ws.GRID ** 2]
    assert all(len(words.split()) + len(commas) == ws.SLOTS for words, commas in cells)
    return [words.split() for words, _ in cells]


@pytest.mark.parametrize("index", range(60))
def test_count_counts_objects_not_the_cells_they_cover(index):
    from basereward.data.synthetic.base import NUM_WORDS

    prompt, chosen, rejected, meta = ws.make_scene_example(8, index, COUNT, ws.SceneOptions(pad=0.0, partial=0.0))
    key = "shape" if meta["by"] == "shape" else "colour"
    asked = meta["objects"][0][key]
    objects = meta["objects"]
    assert sum(o[key] == asked for o in objects) == meta["true"] != meta["fake"]
    assert 1 <= meta["true"] <= 4 and 1 <= meta["fake"] <= 4 and len(objects) <= 5
    # Each object is one block; the asked word is read once per covered cell, so the number of
    # cells naming it is the count only when every target covers a single cell.
    read = _read_cells(prompt)
    naming = [i for i, words in enumerate(read) if words[0 if key == "colour" else -1] == asked]
    assert sorted(naming) == sorted(c for o in objects if o[key] == asked for c in o["cells"])
    targets = [(o["shape"], o["colour"]) for o in objects if o[key] == asked]
    other = "colour" if key == "shape" else "shape"
    assert len({o[other] for o in objects if o[key] == asked}) == len(targets)  # no two targets read alike
    words = lambda n: {NUM_WORDS[n], NUM_WORDS[n].capitalize(), str(n)}
    assert any(w in chosen for w in words(meta["true"])) and any(w in rejected for w in words(meta["fake"]))


@pytest.mark.parametrize("index", range(60))
def test_spatial_relation_follows_the_blocks(index):
    prompt, chosen, rejected, meta = ws.make_scene_example(9, index, SPATIAL, ws.SceneOptions(pad=0.0))
    a, b = meta["objects"][:2]
    (ax, ay), (bx, by) = ws._centroid(a["cells"]), ws._centroid(b["cells"])
    offset = {"left": bx - ax, "right": ax - bx, "above": by - ay, "below": ay - by}[meta["true"]]
    across = abs(ay - by) if meta["true"] in ("left", "right") else abs(ax - bx)
    assert offset >= 1 and across <= 0.5 * offset
    assert {meta["true"], meta["fake"]} in ({"left", "right"}, {"above", "below"})
    assert f"{a['colour']} {a['shape']}" in prompt and f"{b['colour']} {b['shape']}" in prompt
    assert chosen != rejected


def test_plural_of_scene_nouns():
    from basereward.data.synthetic.base import plural
    from basereward.data.synthetic.render import PLURAL

    assert [plural(w) for w in ("cup", "cross", "box", "fish", "glass")] == ["cups", "crosses", "boxes", "fish",
                                                                           "glasses"]
    assert PLURAL["cross"] == "crosses" and PLURAL["star"] == "stars"


def test_absent_objects_are_mostly_conjunction_foils():
    kinds = [ws.make_scene_example(5, i, EXIST)[3]["kind"] for i in range(600)]
    absent = [k for k in kinds if k != "present"]
    assert 0.4 < len(absent) / len(kinds) < 0.6
    assert 0.4 < absent.count("colour distractor") / len(absent) < 0.6


def test_default_kinds_and_chosen_shares(tmp_path):
    cats = ws.scene_categories(700, 0)
    assert {c: cats.count(c) for c in set(cats)} == {EXIST: 280, COLOUR: 140, OBJECT: 140, DESC: 140}
    cats = ws.scene_categories(9, 0, {COUNT: 2, SPATIAL: 1})
    assert sorted(cats) == [COUNT] * 6 + [SPATIAL] * 3
    with pytest.raises(ValueError, match="unknown kind"):
        ws.scene_categories(9, 0, {"reasoning/chart": 1})
    with pytest.raises(ValueError, match="shares must be >= 0"):
        ws.scene_categories(9, 0, {COUNT: 0})


@pytest.mark.parametrize("weights", [None, {COUNT: 0.5, SPATIAL: 0.5}])
def test_no_heldout_combination_and_no_heldout_wording(tmp_path, weights):
    pairs = ws.generate_word_scenes(str(tmp_path), 300, seed=0, progress=False, weights=weights)
    names = {"scene/" + k.split("/")[1]: k for k in ws.KINDS}
    assert len(pairs) == 300 and {names[p.category] for p in pairs} == set(weights or ws.CATEGORY_WEIGHTS)
    heldout_texts = {t for v in HELDOUT_BANK.values() if isinstance(v, tuple)
                     for t in (v if isinstance(v[0], str) else [x for pair in v for x in pair])}
    stems = {t.split("{")[0] for t in heldout_texts if len(t.split("{")[0]) > 12}
    for i, p in enumerate(pairs):
        cat = names[p.category]
        meta = ws.make_scene_example(0, i, cat)[3]
        used = {(o["shape"], o["colour"]) for o in meta["objects"]}
        if cat == EXIST:
            used.add((meta["query"]["shape"], meta["query"]["colour"]))
        elif cat == COLOUR:
            used.add((meta["objects"][0]["shape"], meta["fake"]))
        elif cat == DESC:
            used.add((meta["fake"]["shape"], meta["fake"]["colour"]))
        elif cat == OBJECT:
            used.add((meta["fake"], meta["objects"][0]["colour"]))
        assert not used & HELDOUT_COMBOS
        assert not any(s in text for s in stems for text in (p.prompt, p.chosen, p.rejected))


def test_deterministic_by_seed(tmp_path):
    a = ws.generate_word_scenes(str(tmp_path / "a"), 40, seed=1, progress=False)
    b = ws.generate_word_scenes(str(tmp_path / "b"), 40, seed=1, progress=False)
    c = ws.generate_word_scenes(str(tmp_path / "c"), 40, seed=2, progress=False)
    assert a == b and a != c
    assert (tmp_path / "a" / "pairs.jsonl").read_bytes() == (tmp_path / "b" / "pairs.jsonl").read_bytes()


def test_every_word_is_one_token_as_the_projector_reads_it():
    from transformers import AutoTokenizer

    from basereward.models.mini_vl.projector import word_token_ids
    from basereward.models.mini_vl.weights import smollm2_dir

    tok = AutoTokenizer.from_pretrained(str(smollm2_dir()))
    for w in (*ws.EXTRA_COLOURS, *ws.EXTRA_NOUNS, ws.BACKGROUND):
        assert len(word_token_ids(tok, [w])) == 1, w


def test_cli_scene_share(tmp_path, capsys):
    from basereward.cli import main
    from basereward.data.pairs import load_pairs

    assert main(["data", "synth", "--distribution", "word-scenes", "--out", str(tmp_path / "s"), "--n", "12",
                 "--seed", "1", "--scene-share", "count=2", "--scene-share", "reasoning/spatial=1"]) == 0
    written = [p.category for p in load_pairs(tmp_path / "s" / "pairs.jsonl")]
    assert sorted(written) == ["scene/count"] * 8 + ["scene/spatial"] * 4
    for bad, message in ((["--scene-share", "chart=1"], "expected KIND=SHARE"),
                         (["--scene-share", "count=-1"], "expected KIND=SHARE"),
                         (["--scene-share", "count=0"], "a share of 0"),
                         (["--distribution", "heldout", "--scene-share", "count=1"], "option of --distribution word-scenes")):
        argv = ["data", "synth", "--out", str(tmp_path / "bad"), "--n", "4", *bad]
        if "--distribution" not in bad:
            argv += ["--distribution", "word-scenes"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
