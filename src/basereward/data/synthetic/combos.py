"""Colour/shape combinations kept out of training, and which combinations a generated pair uses.

`HELDOUT_COMBOS` are ten (shape, colour) pairs, one per colour, spread over the shapes: every
colour and every shape still appears in training (each shape with at least six colours), only
these ten never together. The training generator excludes them when
`Variety(exclude_heldout_combos=True)` (the demo's default data keeps them, so its pinned bytes do
not change); the held-out distribution (`heldout.py`) puts one of them into every shape question.

A pair "uses" a combination when its image shows it or one of its texts names it (a rejected
answer "the star is black" names a black star): a combination only ever named in rejected
answers would teach "unfamiliar means wrong", the opposite of reading the image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

HELDOUT_COMBOS: frozenset[tuple[str, str]] = frozenset({
    ("square", "red"), ("diamond", "green"), ("cross", "blue"), ("triangle", "yellow"),
    ("hexagon", "purple"), ("circle", "orange"), ("star", "black"), ("pentagon", "white"),
    ("square", "pink"), ("diamond", "brown"),
})


def _combo(obj: Mapping[str, Any]) -> tuple[str, str]:
    return (obj["shape"], obj["colour"])


def key_combos(category: str, meta: Mapping[str, Any]) -> set[tuple[str, str]]:
    """The combinations the question is about, for the true and the hallucinated answer alike.

    Symmetric in true and fake (both or neither are in the set), so conditioning on it keeps the
    two answers exchangeable. Empty for charts and photos (no shapes).
    """
    objs = meta.get("objects", [])
    if category == "hallucination/object":
        c0 = objs[0]["colour"]
        return {(meta["true"], c0), (meta["fake"], c0)}
    if category == "hallucination/color":
        s = objs[0]["shape"]
        return {(s, meta["true"]), (s, meta["fake"])}
    if category == "hallucination/count":
        # The first target only: "any target" would favour scenes with more targets (a larger
        # true count), and the count must not follow from which combinations appear.
        return {_combo(objs[0])}
    if category == "hallucination/existence":
        return {(meta["query"]["shape"], meta["query"]["colour"])}
    if category == "reasoning/spatial":
        return {_combo(objs[0]), _combo(objs[1])}
    if category == "general/description":
        return {_combo(objs[meta["target"]]), (meta["fake"]["shape"], meta["fake"]["colour"])}
    return set()


def used_combos(category: str, meta: Mapping[str, Any]) -> set[tuple[str, str]]:
    """Every combination the pair shows or names: the rendered objects and the key combinations."""
    return {_combo(o) for o in meta.get("objects", [])} | key_combos(category, meta)


def label_of(category: str, meta: Mapping[str, Any]) -> Any:
    """The draw a redraw must keep so that conditioning on combinations cannot skew the labels.

    Existence: whether the answer is "yes" (a present query adds no combination, an absent one
    does); count: the true number (more targets, more combinations). Other categories condition
    symmetrically on true and fake (`key_combos`), so they keep nothing.
    """
    if category == "hallucination/existence":
        return bool(meta["present"])
    if category == "hallucination/count":
        return int(meta["true"])
    return None
