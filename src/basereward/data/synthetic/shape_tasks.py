"""Task builders on shape scenes: object, colour, count, existence, spatial relation, description.

Each builder draws the true fact and the hallucinated one as an exchangeable pair, renders the
scene from the true one, then phrases the question and the two answers (`base.py`; the wording
is in `phrases.py`). The order of the random draws is part of the data set: changing it changes
every generated pair.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from basereward.data.synthetic import phrases
from basereward.data.synthetic.base import (
    NUM_WORDS,
    Draft,
    a,
    answer_pair,
    ask,
    cap,
    listing,
    noun,
    other,
    pick,
    true_and_fake,
)
from basereward.data.synthetic.render import (
    COLOUR_NAMES,
    PLURAL,
    SHAPES,
    distinct_objects,
    render_scene,
)

_MAX_OBJECTS = 4  # per scene; a count question may add distractors up to 5 objects in all


def _n_objects(rng: np.random.Generator, least: int = 1) -> int:
    """How many objects a scene holds: uniform over least.._MAX_OBJECTS."""
    return int(rng.integers(least, _MAX_OBJECTS + 1))


def build_object(rng: np.random.Generator, size: int) -> Draft:
    true_shape, fake_shape = true_and_fake(rng, SHAPES)
    n = _n_objects(rng)
    if n == 1:
        objects = [(true_shape, pick(rng, COLOUR_NAMES))]
        prompt = ask(rng, phrases.OBJECT_Q_SINGLE)
    else:
        # Distinct colours so the colour names exactly one object; other shapes are free.
        colours = [COLOUR_NAMES[i] for i in rng.permutation(len(COLOUR_NAMES))[:n]]
        objects = [(true_shape, colours[0])] + [(pick(rng, SHAPES), c) for c in colours[1:]]
        prompt = ask(rng, phrases.OBJECT_Q_MULTI, c=colours[0])
    template = pick(rng, phrases.OBJECT_A)
    image, meta = render_scene(rng, objects, size)
    meta.update(target=0, true=true_shape, fake=fake_shape)
    chosen, rejected = answer_pair(template, {"a_s": a(true_shape)}, {"a_s": a(fake_shape)})
    return Draft(prompt, chosen, rejected, image, meta)


def build_colour(rng: np.random.Generator, size: int) -> Draft:
    true_c, fake_c = true_and_fake(rng, COLOUR_NAMES)
    n = _n_objects(rng)
    shape = pick(rng, SHAPES)
    # The asked-about shape is unique; distractors (other shapes) may well carry the fake colour,
    # so the model has to bind colour to shape rather than spot a colour anywhere.
    others = distinct_objects(rng, n - 1, [s for s in SHAPES if s != shape], COLOUR_NAMES)
    image, meta = render_scene(rng, [(shape, true_c)] + others, size)
    meta.update(target=0, true=true_c, fake=fake_c)
    template = pick(rng, phrases.COLOUR_A)
    chosen, rejected = answer_pair(
        template, {"c": true_c, "C": cap(true_c)}, {"c": fake_c, "C": cap(fake_c)}, s=shape
    )
    return Draft(ask(rng, phrases.COLOUR_Q, s=shape), chosen, rejected, image, meta)


def _count_words(n: int, singular: str, plural: str) -> dict[str, Any]:
    """The fields of a count answer that change with the number."""
    return {"be": "is" if n == 1 else "are", "nw": NUM_WORDS[n], "NW": cap(NUM_WORDS[n]), "nd": n,
            "noun": noun(n, singular, plural)}


def build_count(rng: np.random.Generator, size: int) -> Draft:
    true_n, fake_n = true_and_fake(rng, (1, 2, 3, 4))
    # Up to 5 objects in all, so that a count of four can still come with a distractor.
    n_distract = int(rng.integers(0, min(2, 5 - true_n) + 1))
    by_shape = rng.random() < 0.5
    if by_shape:
        shape = pick(rng, SHAPES)
        targets = [(shape, pick(rng, COLOUR_NAMES)) for _ in range(true_n)]
        other_shapes = [s for s in SHAPES if s != shape]
        others = [(pick(rng, other_shapes), pick(rng, COLOUR_NAMES)) for _ in range(n_distract)]
        singular, plural = shape, PLURAL[shape]
    else:
        colour = pick(rng, COLOUR_NAMES)
        targets = [(pick(rng, SHAPES), colour) for _ in range(true_n)]
        other_colours = [c for c in COLOUR_NAMES if c != colour]
        others = [(pick(rng, SHAPES), pick(rng, other_colours)) for _ in range(n_distract)]
        singular, plural = f"{colour} shape", f"{colour} shapes"
    image, meta = render_scene(rng, targets + others, size)
    meta.update(targets=list(range(true_n)), by="shape" if by_shape else "colour", true=true_n, fake=fake_n)
    template = pick(rng, phrases.COUNT_A)
    chosen, rejected = answer_pair(
        template, _count_words(true_n, singular, plural), _count_words(fake_n, singular, plural), p=plural
    )
    return Draft(ask(rng, phrases.COUNT_Q, p=plural), chosen, rejected, image, meta)


def _absent_query(rng: np.random.Generator, objects: list[tuple[str, str]]) -> tuple[str, str]:
    """A (shape, colour) not in the scene.

    Near misses (right shape wrong colour, or the reverse) are the hallucinations that benchmarks
    such as POPE probe; a third of queries are unrelated objects.
    """
    kind = int(rng.integers(3))
    anchor = objects[int(rng.integers(len(objects)))]
    while True:
        if kind == 0:
            query = (anchor[0], other(rng, COLOUR_NAMES, anchor[1]))
        elif kind == 1:
            query = (other(rng, SHAPES, anchor[0]), anchor[1])
        else:
            query = (pick(rng, SHAPES), pick(rng, COLOUR_NAMES))
        if query not in objects:
            return query


def build_existence(rng: np.random.Generator, size: int) -> Draft:
    present = rng.random() < 0.5
    n = _n_objects(rng)
    objects = distinct_objects(rng, n, SHAPES, COLOUR_NAMES)
    query = objects[int(rng.integers(n))] if present else _absent_query(rng, objects)
    image, meta = render_scene(rng, objects, size)
    q = f"{query[1]} {query[0]}"
    others = [a(f"{c} {s}") for s, c in objects if (s, c) != query]
    # The yes and the no answer are two templates, so `answer_pair` (one template) does not apply.
    yes_no = pick(rng, phrases.EXIST_A_OTHERS if others and rng.random() < 0.5 else phrases.EXIST_A)
    yes, no = (t.format(a_q=a(q), q=q, others=listing(others) if others else "") for t in yes_no)
    meta.update(query={"shape": query[0], "colour": query[1]}, present=bool(present))
    chosen, rejected = (yes, no) if present else (no, yes)
    return Draft(ask(rng, phrases.EXIST_Q, a_q=a(q)), chosen, rejected, image, meta)


def build_spatial(rng: np.random.Generator, size: int) -> Draft:
    horizontal = rng.random() < 0.5
    true_rel, fake_rel = ("left", "right") if horizontal else ("above", "below")
    if rng.random() < 0.5:
        true_rel, fake_rel = fake_rel, true_rel
    n = _n_objects(rng, least=2)
    objects = distinct_objects(rng, n, SHAPES, COLOUR_NAMES)
    min_sep = 0.12 * size

    def ok(a: tuple[float, float], b: tuple[float, float]) -> bool:
        # A's offset from B along the asked axis is large and dominates the other axis, so
        # "left of" / "above" has one clear answer.
        along, across = (a[0] - b[0], a[1] - b[1]) if horizontal else (a[1] - b[1], a[0] - b[0])
        if true_rel in ("right", "below"):
            along = -along
        return -along >= min_sep and abs(across) <= 0.5 * -along

    image, meta = render_scene(rng, objects, size, first_pair_ok=ok)
    names = {k: f"{c} {s}" for k, (s, c) in zip("AB", objects[:2])}
    template = pick(rng, phrases.SPATIAL_A)
    chosen, rejected = answer_pair(
        template, {"rel": phrases.RELATIONS[true_rel]}, {"rel": phrases.RELATIONS[fake_rel]}, **names
    )
    prompt = ask(rng, phrases.SPATIAL_Q_H if horizontal else phrases.SPATIAL_Q_V, **names)
    meta.update(true=true_rel, fake=fake_rel)
    return Draft(prompt, chosen, rejected, image, meta)


def build_description(rng: np.random.Generator, size: int) -> Draft:
    n = _n_objects(rng)
    objects = distinct_objects(rng, n, SHAPES, COLOUR_NAMES)
    image, meta = render_scene(rng, objects, size)
    # Listed left to right, the order a reader scans in.
    order = sorted(range(n), key=lambda i: meta["objects"][i]["center"][0])
    target = int(rng.integers(n))
    attr = "colour" if rng.random() < 0.5 else "shape"
    s, c = objects[target]
    # The swap never recreates another object's combination: true scenes have no repeats, so a
    # repeated "a red star ... a red star" would mark the rejected answer without the image.
    if attr == "colour":
        fake = (s, pick(rng, [x for x in COLOUR_NAMES if (s, x) not in objects]))
    else:
        fake = (pick(rng, [x for x in SHAPES if (x, c) not in objects]), c)
    template = pick(rng, phrases.DESC_A)
    faked = list(objects)
    faked[target] = fake

    def items(objs: list[tuple[str, str]]) -> dict[str, str]:
        text = listing([a(f"{objs[i][1]} {objs[i][0]}") for i in order])
        return {"items": text, "Items": cap(text)}

    chosen, rejected = answer_pair(
        template, items(objects), items(faked),
        count=f"{NUM_WORDS[n]} {noun(n, 'shape', 'shapes')}", be="is" if n == 1 else "are",
        texture=meta["texture"],
    )
    meta.update(target=target, attribute=attr, fake={"shape": fake[0], "colour": fake[1]})
    return Draft(ask(rng, phrases.DESC_Q), chosen, rejected, image, meta)
