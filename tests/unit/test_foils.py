"""Conjunction foils (`Variety(foils=p)`): absent-object existence questions whose colour and shape
are both in the picture, on different objects."""

from __future__ import annotations

import dataclasses

import numpy as np

from basereward.data import synthetic as S
from basereward.data.synthetic.combos import HELDOUT_COMBOS
from basereward.data.synthetic.variety import conjunction_foil

EXIST = "hallucination/existence"
BASE = S.Variety(paraphrase=True, pad=0.5, layout=True, exclude_heldout_combos=True)


def _objs(*pairs):
    return [{"shape": s, "colour": c} for s, c in pairs]


def test_a_foil_takes_one_objects_colour_and_anothers_shape():
    rng = np.random.default_rng(0)
    scene = _objs(("circle", "red"), ("triangle", "blue"))
    got = {conjunction_foil(scene, np.random.default_rng(k), False) for k in range(40)}
    assert got == {("triangle", "red"), ("circle", "blue")}
    # ("square", "red") is a held-out combination: with them excluded only the other foil is left.
    assert ("square", "red") in HELDOUT_COMBOS
    scene = _objs(("circle", "red"), ("square", "blue"))
    assert {conjunction_foil(scene, np.random.default_rng(k), True) for k in range(40)} == {("circle", "blue")}
    # No foil without two objects that differ in both colour and shape, or when the scene shows it.
    assert conjunction_foil(_objs(("circle", "red")), rng, False) is None
    assert conjunction_foil(_objs(("circle", "red"), ("circle", "blue")), rng, False) is None
    assert conjunction_foil(_objs(("circle", "red"), ("star", "blue"), ("star", "red"), ("circle", "blue")),
                            rng, False) is None


def test_foils_change_only_the_query_of_absent_existence_pairs():
    foiled = dataclasses.replace(BASE, foils=1.0)
    n_foils = 0
    for k in range(120):
        plain = S.make_example(9, k, EXIST, variety=BASE)
        ex = S.make_example(9, k, EXIST, variety=foiled)
        assert ex.meta["present"] == plain.meta["present"]
        assert ex.meta["objects"] == plain.meta["objects"]
        assert np.array_equal(np.asarray(ex.image), np.asarray(plain.image))
        q = (ex.meta["query"]["shape"], ex.meta["query"]["colour"])
        scene = {(o["shape"], o["colour"]) for o in ex.meta["objects"]}
        if ex.meta["present"]:
            assert ex == plain
            continue
        assert q not in scene and q not in HELDOUT_COMBOS
        # The texts ask about the query: its colour and shape words are in the prompt.
        assert f"{q[1]} {q[0]}" in ex.prompt
        if conjunction_foil(ex.meta["objects"], np.random.default_rng(0), True) is not None:
            n_foils += 1
            assert any(o["colour"] == q[1] for o in ex.meta["objects"])
            assert any(o["shape"] == q[0] for o in ex.meta["objects"])
    assert n_foils > 25
    # Other categories are untouched.
    for k in range(10):
        assert S.make_example(9, k, "hallucination/count", variety=foiled) == \
            S.make_example(9, k, "hallucination/count", variety=BASE)


def test_existence_binding_sorts_absent_objects_by_the_distractor_the_picture_shows():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "experiments" / "existence_binding.py"
    spec = importlib.util.spec_from_file_location("existence_binding_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def meta(present, query, *objs):
        return {"present": present, "query": {"shape": query[0], "colour": query[1]}, "objects": _objs(*objs)}

    assert mod.kind_of(meta(True, ("star", "red"), ("star", "red"), ("circle", "red"))) == "present"
    # Colour on another shape wins over shape in another colour: both are there.
    assert mod.kind_of(meta(False, ("star", "red"), ("circle", "red"), ("star", "blue"))) == "absent: colour distractor"
    assert mod.kind_of(meta(False, ("star", "red"), ("star", "blue"))) == "absent: shape distractor"
    assert mod.kind_of(meta(False, ("star", "red"), ("circle", "blue"))) == "absent: unrelated"
