"""Task builder on bar charts: which bar is tallest, what one bar reads, the difference of two.

The kind of question decides which facts are drawn (and how they are misread); rendering and
phrasing are shared by all three kinds, in one fixed order of random draws.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from basereward.data.synthetic import phrases
from basereward.data.synthetic.base import Draft, answer_pair, ask, other, pick
from basereward.data.synthetic.render import COLOUR_NAMES, render_chart

_CHART_VALUES = tuple(range(10, 100, 5))  # all two-digit: reading a value never changes the length


class _Reading(NamedTuple):
    """What a chart question is about: the bar values to draw, the facts stated in the true and
    the misread answer, the fields both share (the question uses them too), and the meta record."""

    values: list[int]
    true: dict[str, Any]
    fake: dict[str, Any]
    shared: dict[str, Any]
    target: Any
    misread: Any


def _tallest(rng: np.random.Generator, colours: list[str], values: list[int]) -> _Reading:
    # Bars are assigned to colours at random, so the true colour (argmax) and the fake one
    # (another bar) form an exchangeable pair; the stated height is the true maximum in both.
    n = len(colours)
    t = int(rng.integers(n))
    top = int(pick(rng, [v for v in _CHART_VALUES if v >= 30]))
    values = [top if i == t else int(pick(rng, [v for v in _CHART_VALUES if v < top])) for i in range(n)]
    f = other(rng, list(range(n)), t)
    return _Reading(values, {"c": colours[t]}, {"c": colours[f]}, {"v": top}, t, colours[f])


def _value(rng: np.random.Generator, colours: list[str], values: list[int]) -> _Reading:
    t = int(rng.integers(len(colours)))
    true_v = values[t]
    # At least one gridline apart: a half-gridline misreading is too subtle to call wrong.
    fake_v = pick(rng, [v for v in _CHART_VALUES if abs(v - true_v) >= 10])
    return _Reading(values, {"v": true_v}, {"v": fake_v}, {"c": colours[t]}, t, fake_v)


def _difference(rng: np.random.Generator, colours: list[str], values: list[int]) -> _Reading:
    # (va, vb) uniform over ordered pairs va > vb: then each value is uniform given the other,
    # so the misread value below (drawn from the same conditional set) is exchangeable with
    # the true one. va >= 20 and vb <= 85 leave every value at least one alternative.
    lows, highs = [v for v in _CHART_VALUES if v <= 85], [v for v in _CHART_VALUES if v >= 20]
    pairs = [(a, b) for a in highs for b in lows if a > b]
    va, vb = pick(rng, pairs)
    ia, ib = (int(i) for i in rng.permutation(len(colours))[:2])
    values[ia], values[ib] = va, vb
    if rng.random() < 0.5:
        fa, fb = other(rng, [v for v in highs if v > vb], va), vb
    else:
        fa, fb = va, other(rng, [v for v in lows if v < va], vb)
    true, fake = ({"va": x, "vb": y, "d": x - y} for x, y in ((va, vb), (fa, fb)))
    return _Reading(values, true, fake, {"a": colours[ia], "b": colours[ib]}, [ia, ib], [fa, fb])


# kind -> (how its facts are drawn, question templates, answer templates)
_KINDS = {
    "tallest": (_tallest, phrases.TALLEST_Q, phrases.TALLEST_A),
    "value": (_value, phrases.VALUE_Q, phrases.VALUE_A),
    "difference": (_difference, phrases.DIFF_Q, phrases.DIFF_A),
}


def build_chart(rng: np.random.Generator, size: int) -> Draft:
    n = int(rng.integers(3, 6))
    # White bars would vanish on the light chart background.
    colours = [str(c) for c in rng.permutation([c for c in COLOUR_NAMES if c != "white"])[:n]]
    kind = pick(rng, tuple(_KINDS))
    draw_facts, questions, answers = _KINDS[kind]
    reading = draw_facts(rng, colours, [int(pick(rng, _CHART_VALUES)) for _ in range(n)])
    image, meta = render_chart(rng, colours, reading.values, size)
    chosen, rejected = answer_pair(pick(rng, answers), reading.true, reading.fake, **reading.shared)
    meta.update(kind=kind, target=reading.target, fake=reading.misread)
    return Draft(ask(rng, questions, **reading.shared), chosen, rejected, image, meta)
