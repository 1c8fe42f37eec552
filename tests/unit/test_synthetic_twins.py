"""Counterfactual twins (data/synthetic/twins.py): the same texts, the other answer made true."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from basereward.data import synthetic as S
from basereward.data.synthetic.combos import HELDOUT_COMBOS
from basereward.data.synthetic.twins import TWIN_CATEGORIES, counterfactual_meta

TWINNED = S.Variety(paraphrase=True, pad=0.5, layout=True, exclude_heldout_combos=True, twins=1.0)


@pytest.fixture(scope="module")
def twinned(tmp_path_factory):
    out = tmp_path_factory.mktemp("twins")
    return S.generate(str(out), 240, 5, progress=False, variety=TWINNED)


def _pixels(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _truth(category: str, meta: dict) -> object:
    """What the pictured scene says, computed from the rendered objects and bars alone."""
    objs = meta.get("objects", [])
    if category == "hallucination/object":
        return objs[0]["shape"]
    if category == "hallucination/color":
        return objs[0]["colour"]
    if category == "hallucination/count":
        key = "shape" if meta["by"] == "shape" else "colour"
        return sum(o[key] == objs[0][key] for o in objs)
    if category == "hallucination/existence":
        return any((o["shape"], o["colour"]) == (meta["query"]["shape"], meta["query"]["colour"]) for o in objs)
    if category == "reasoning/spatial":
        (ax, ay), (bx, by) = objs[0]["center"], objs[1]["center"]
        return {"left": ax < bx, "right": ax > bx, "above": ay < by, "below": ay > by}[meta["true"]]
    bars = meta["bars"]
    if meta["kind"] == "tallest":
        return max(range(len(bars)), key=lambda i: bars[i]["value"])
    if meta["kind"] == "value":
        return bars[meta["target"]]["value"]
    ia, ib = meta["target"]
    return bars[ia]["value"] > bars[ib]["value"]


def _stated(category: str, meta: dict) -> object:
    """What the chosen answer states, from the meta's record of the true fact."""
    if category in ("hallucination/object", "hallucination/color", "hallucination/count"):
        return meta["true"]
    if category == "hallucination/existence":
        return meta["present"]
    if category == "reasoning/spatial":
        return True
    if meta["kind"] in ("tallest", "value"):
        return meta["target"] if meta["kind"] == "tallest" else meta["bars"][meta["target"]]["value"]
    return True


def _claims(category: str, meta: dict) -> tuple[object, object]:
    """(what the chosen answer states, what the rejected one states), from the meta record."""
    if category == "hallucination/existence":
        return meta["present"], not meta["present"]
    if category != "reasoning/chart":
        return meta["true"], meta["fake"]
    bars = meta["bars"]
    if meta["kind"] == "tallest":
        return bars[meta["target"]]["colour"], meta["fake"]
    if meta["kind"] == "value":
        return bars[meta["target"]]["value"], meta["fake"]
    return [bars[i]["value"] for i in meta["target"]], list(meta["fake"])


def test_each_twin_swaps_the_answers_and_makes_the_other_one_true(twinned):
    examples = list(S.generator._examples(S.assign_categories(240, 5), 5, 224, TWINNED, 240))
    assert [(e.prompt, e.chosen, e.rejected) for e in examples] == [(p.prompt, p.chosen, p.rejected) for p in twinned]
    n_twins = 0
    for prev, ex, pair in zip(examples, examples[1:], twinned[1:]):
        if not ex.meta.get("twin"):
            continue
        n_twins += 1
        assert ex.category == prev.category in TWIN_CATEGORIES
        assert (ex.prompt, ex.chosen, ex.rejected) == (prev.prompt, prev.rejected, prev.chosen)
        # The twin's chosen answer is the pair's rejected one, so it states what that one did ...
        chosen, rejected = _claims(ex.category, ex.meta)
        assert (chosen, rejected) == tuple(reversed(_claims(prev.category, prev.meta)))
        # ... and each picture shows what its chosen answer states.
        for e in (prev, ex):
            assert _truth(e.category, e.meta) == _stated(e.category, e.meta), (e.category, e.meta)
        assert not np.array_equal(np.asarray(prev.image.resize((64, 64))), np.asarray(ex.image.resize((64, 64))))
        assert np.array_equal(_pixels(pair.images[0]), np.asarray(ex.image.convert("RGB")))
        # The padded side moves with its text.
        if "padding" in prev.meta:
            flip = {"chosen": "rejected", "rejected": "chosen"}
            assert ex.meta["padding"] == {flip[k]: v for k, v in prev.meta["padding"].items()}
    assert n_twins >= 80


def test_twins_keep_the_heldout_combinations_out(twinned):
    examples = list(S.generator._examples(S.assign_categories(240, 5), 5, 224, TWINNED, 240))
    for e in examples:
        assert not {(o["shape"], o["colour"]) for o in e.meta.get("objects", [])} & HELDOUT_COMBOS


def test_counterfactual_meta_by_hand():
    rng = np.random.default_rng(0)
    count = {"objects": [{"shape": "star", "colour": "red"}, {"shape": "star", "colour": "blue"},
                         {"shape": "circle", "colour": "red"}], "by": "shape", "targets": [0, 1], "true": 2, "fake": 3}
    new = counterfactual_meta("hallucination/count", count, rng)
    assert [o["shape"] for o in new["objects"]].count("star") == 3 and new["true"] == 3 and new["fake"] == 2
    assert new["objects"][3] == {"shape": "circle", "colour": "red"}  # the distractor stays
    fewer = counterfactual_meta("hallucination/count", {**count, "fake": 1}, rng)
    assert [o["shape"] for o in fewer["objects"]] == ["star", "circle"]
    chart = {"bars": [{"colour": "red", "value": 40}, {"colour": "blue", "value": 70}], "kind": "tallest",
             "target": 1, "fake": "red"}
    flipped = counterfactual_meta("reasoning/chart", chart, rng)
    assert [b["value"] for b in flipped["bars"]] == [70, 40] and flipped["target"] == 0 and flipped["fake"] == "blue"
    value = counterfactual_meta("reasoning/chart", {**chart, "kind": "value", "target": 0, "fake": 60}, rng)
    assert value["bars"][0]["value"] == 60 and value["fake"] == 40
    alone = {"objects": [{"shape": "star", "colour": "red"}], "query": {"shape": "star", "colour": "red"},
             "present": True}
    gone = counterfactual_meta("hallucination/existence", alone, rng)
    o = gone["objects"][0]
    assert gone["present"] is False and (o["shape"], o["colour"]) != ("star", "red")
    assert o["shape"] == "star" or o["colour"] == "red"  # a near miss
    assert counterfactual_meta("general/description", {"objects": []}, rng) is None
    # The input is not changed.
    assert count["true"] == 2 and len(count["objects"]) == 3


def test_twins_option_is_validated_and_off_by_default():
    assert S.Variety().twins == 0.0
    with pytest.raises(ValueError, match="twins"):
        S.Variety(twins=1.5)


def test_data_synth_cli_writes_the_twinned_set(tmp_path, capsys):
    from basereward.cli import main
    from basereward.data.pairs import load_pairs

    assert main(["data", "synth", "--out", str(tmp_path / "cli"), "--n", "24", "--seed", "5", "--varied",
                 "--twins", "1"]) == 0
    direct = S.generate(str(tmp_path / "lib"), 24, 5, progress=False, variety=TWINNED)
    written = load_pairs(tmp_path / "cli" / "pairs.jsonl")
    assert [(p.prompt, p.chosen, p.rejected) for p in written] == [(p.prompt, p.chosen, p.rejected) for p in direct]
    assert main(["data", "synth", "--out", str(tmp_path / "bad"), "--n", "4", "--twins", "2"]) != 0
    assert "--twins must be in [0, 1]" in capsys.readouterr().err


def test_data_synth_cli_reweight_equals_the_library(tmp_path, capsys):
    from basereward.cli import main
    from basereward.data.pairs import load_pairs

    assert main(["data", "synth", "--out", str(tmp_path / "cli"), "--n", "40", "--seed", "3",
                 "--reweight", "existence=2", "--reweight", "reasoning/chart=0.5"]) == 0
    written = [p.category for p in load_pairs(tmp_path / "cli" / "pairs.jsonl")]
    assert written == S.assign_categories(40, 3, reweight={"hallucination/existence": 2, "reasoning/chart": 0.5})
    # Shares w = 0.95/7 (x2 for existence, x0.5 for chart), photo 0.05, sum 1.0679; of 40 pairs:
    # existence 10.17 -> 10, chart 2.54 -> 3 (the two largest remainders: photo .87, chart .54).
    assert written.count("hallucination/existence") == 10 and written.count("reasoning/chart") == 3
    for bad, message in ((["--reweight", "existance=2"], "expected CATEGORY=FACTOR"),
                         (["--reweight", "chart"], "expected CATEGORY=FACTOR"),
                         (["--reweight", "chart=-1"], "must be a finite number >= 0"),
                         (["--distribution", "heldout", "--reweight", "chart=2"], "options of the training")):
        assert main(["data", "synth", "--out", str(tmp_path / "bad"), "--n", "4", *bad]) != 0
        assert message in capsys.readouterr().err
