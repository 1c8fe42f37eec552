"""Word scenes: a binding curriculum in the space mini-vl's `words` projector reads images into.

The `words` projector turns each cell of a 4x4 grid into soft words ("red star ,", "background , ,").
A reward model then has to *bind* a colour to its shape to answer "is there a yellow star?": a
scene with a yellow circle and a blue star holds both words, in different cells. On the demo's
visual pairs the language model learns the shortcut "is the colour anywhere?" instead (README,
"Does the model bind a colour to its shape?"): the rendered scenes carry too few pairs where it
fails, and the projector's noisy shape words make the shortcut the safer bet.

A word scene is a text-only pair whose prompt *starts with a picture written as those words*,
cell by cell in raster order, followed directly by the question (where the image tokens would be
followed by it). Attributes and nouns come from a vocabulary far larger than the rendered one
(28 colours x 38 nouns), so no combination can be memorised: the only rule that fits is to find
the asked attribute and noun *in the same cell*. Descriptions swap one object's colour or noun. Absent objects are mostly conjunction foils (the
colour on another noun, or the noun in another colour). Questions and answers are worded from the
training phrase bank (`paraphrases.TRAIN_BANK`, with its lead-ins and neutral padding), never the
held-out one, and the held-out colour/shape combinations (`combos.HELDOUT_COMBOS`) never occur.

Count and spatial questions (`KINDS`) can be mixed in with `weights`; they are not in the default
mix: the LM does not learn them from scenes at the demo's budget (README, "Count and spatial scenes").

Deterministic by seed; the pair's facts are in the returned `meta` of `make_scene_example`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from basereward.data.pairs import save_pairs
from basereward.data.schema import PreferencePair
from basereward.data.synthetic.base import pick
from basereward.data.synthetic.combos import HELDOUT_COMBOS
from basereward.data.synthetic.paraphrases import TRAIN_BANK
from basereward.data.synthetic.render import COLOUR_NAMES, SHAPES
from basereward.data.synthetic.rephrase import pad_pair, rephrase

SOURCE = "word-scenes"
GRID = 4
BACKGROUND = "background"
SLOTS = 3  # words per cell, padded with ","
# Words of one token each in SmolLM2's tokenizer after a space (tests check), none of them rendered:
# with the rendered ones, no colour/noun combination recurs often enough to be learnt by heart.
EXTRA_COLOURS = ("gold", "silver", "navy", "olive", "lime", "violet", "cyan", "tan", "grey", "ivory", "amber",
                 "coral", "indigo", "mint", "peach", "plum", "rose", "rust")
EXTRA_NOUNS = ("cup", "car", "dog", "tree", "house", "kite", "bottle", "chair", "lamp", "book", "ball", "hat", "boat",
               "bird", "fish", "key", "shoe", "clock", "bell", "flower", "apple", "moon", "sun", "cloud", "heart",
               "arrow", "ring", "box", "cube", "cone")
# Share of each question kind by default; every one needs the attribute bound to its noun.
CATEGORY_WEIGHTS = {"hallucination/existence": 0.4, "hallucination/color": 0.2, "hallucination/object": 0.2,
                    "general/description": 0.2}
# Kinds a caller may add with their own shares (`scene_categories(weights=...)`): count needs the
# objects told apart from the cells they cover (a large object repeats its words over up to four
# cells, as the projector reads it), spatial the cells' places in the raster order. Neither is in
# the default: trained on 1,500 count scenes alone, the demo's mini-vl stays at chance on new ones
# (README, "Count and spatial scenes").
KINDS = (*CATEGORY_WEIGHTS, "hallucination/count", "reasoning/spatial")
# An absent object's kind: its colour on another noun, its noun in another colour, or unrelated.
ABSENT_KINDS = {"colour distractor": 0.5, "shape distractor": 0.3, "unrelated": 0.2}


@dataclass(frozen=True)
class SceneOptions:
    rendered_share: float = 0.5
    """Chance that an attribute (a noun) is drawn from the rendered colours (shapes), else from
    the extra words."""
    partial: float = 0.15
    """Chance that a cell an object covers, other than the one holding its centre, reads its
    colour alone ("red , ,"), as the projector reads the edge of a shape."""
    pad: float = 0.5
    """Neutral padding per answer (`rephrase.pad_pair`), as the demo's visual pairs have."""


def _attribute(rng: np.random.Generator, opts: SceneOptions) -> str:
    return str(pick(rng, COLOUR_NAMES if rng.random() < opts.rendered_share else EXTRA_COLOURS))


def _noun(rng: np.random.Generator, opts: SceneOptions) -> str:
    return str(pick(rng, SHAPES if rng.random() < opts.rendered_share else EXTRA_NOUNS))


def allowed(noun: str, colour: str) -> bool:
    """False for the held-out colour/shape combinations, which no training pair may show or name."""
    return (noun, colour) not in HELDOUT_COMBOS


def _draw_object(rng: np.random.Generator, opts: SceneOptions, taken: set[tuple[str, str]],
                 noun: str | None = None, colour: str | None = None) -> tuple[str, str]:
    """A (noun, colour) not in `taken` and allowed, with the given noun or colour kept fixed."""
    for _ in range(1000):
        obj = (noun or _noun(rng, opts), colour or _attribute(rng, opts))
        if obj not in taken and allowed(*obj):
            return obj
    raise RuntimeError(f"no object with noun={noun!r} colour={colour!r} outside {sorted(taken)}")


def place(rng: np.random.Generator, n: int, grid: int = GRID) -> list[list[int]]:
    """Disjoint cell blocks (1x1, 1x2, 2x1 or 2x2, raster indices) for n objects; the first cell
    of each block is the one that holds its centre."""
    free = np.ones((grid, grid), dtype=bool)
    blocks: list[list[int]] = []
    for k in range(n):
        for _ in range(200):
            h, w = int(rng.integers(1, 3)), int(rng.integers(1, 3))
            r, c = int(rng.integers(grid - h + 1)), int(rng.integers(grid - w + 1))
            # A block must leave a free cell for each object still to come.
            if free[r:r + h, c:c + w].all() and int(free.sum()) - h * w >= n - k - 1:
                free[r:r + h, c:c + w] = False
                cells = [rr * grid + cc for rr in range(r, r + h) for cc in range(c, c + w)]
                centre = cells[int(rng.integers(len(cells)))]
                blocks.append([centre] + [x for x in cells if x != centre])
                break
        else:  # the grid is too full for a block: any free cell
            r, c = np.argwhere(free)[int(rng.integers(int(free.sum())))]
            free[r, c] = False
            blocks.append([int(r) * grid + int(c)])
    return blocks


def scene_text(objects: list[tuple[str, str]], blocks: list[list[int]], rng: np.random.Generator,
               opts: SceneOptions, grid: int = GRID) -> str:
    """The picture as the projector's words, raster order: every cell `SLOTS` words padded with ","."""
    cells = [[BACKGROUND] for _ in range(grid * grid)]
    for (noun, colour), block in zip(objects, blocks):
        for k, cell in enumerate(block):
            cells[cell] = [colour] if k and rng.random() < opts.partial else [colour, noun]
    out = []
    for words in cells:
        out.append(" " + " ".join(words) + "," * (SLOTS - len(words)))
    return "".join(out)


def _existence(rng: np.random.Generator, opts: SceneOptions) -> dict[str, Any]:
    n = int(rng.integers(1, 5))
    objects: list[tuple[str, str]] = []
    for _ in range(n):
        objects.append(_draw_object(rng, opts, set(objects)))
    present = bool(rng.random() < 0.5)
    if present:
        query, kind = objects[int(rng.integers(n))], "present"
    else:
        kind = str(rng.choice(list(ABSENT_KINDS), p=list(ABSENT_KINDS.values())))
        anchor = objects[int(rng.integers(n))]
        taken = set(objects)
        if kind == "colour distractor":
            query = _draw_object(rng, opts, taken | {(s, anchor[1]) for s, _ in objects}, colour=anchor[1])
        elif kind == "shape distractor":
            query = _draw_object(rng, opts, taken | {(anchor[0], c) for _, c in objects}, noun=anchor[0])
        else:
            colours, nouns = {c for _, c in objects}, {s for s, _ in objects}
            for _ in range(1000):
                query = _draw_object(rng, opts, taken)
                if query[0] not in nouns and query[1] not in colours:
                    break
    return {"objects": objects, "query": {"shape": query[0], "colour": query[1]}, "present": present, "kind": kind}


def _one_attribute_asked(rng: np.random.Generator, opts: SceneOptions, asked: int) -> dict[str, Any]:
    """A colour question (`asked` = 1: which colour is the <noun>?) or an object question (`asked`
    = 0: which thing is <colour>?) over objects (noun, colour). The other attribute is unique to
    the asked-about object; the first distractor carries the wrong answer half the time, so
    spotting the answer word anywhere in the picture does not answer."""
    fixed = 1 - asked
    given = _noun(rng, opts) if asked == 1 else _attribute(rng, opts)
    keep = {"noun": given} if asked == 1 else {"colour": given}

    def obj_with(value: str) -> tuple[str, str]:
        return (given, value) if asked == 1 else (value, given)

    true = _draw_object(rng, opts, set(), **keep)[asked]
    fake = _draw_object(rng, opts, {obj_with(true)}, **keep)[asked]
    objects = [obj_with(true)]
    for k in range(int(rng.integers(0, 4))):
        wrong = fake if k == 0 and rng.random() < 0.5 else None
        taken = {o[fixed] for o in objects}
        for _ in range(1000):
            obj = _draw_object(rng, opts, set(objects), **({"colour": wrong} if asked == 1 else {"noun": wrong}))
            if obj[fixed] not in taken:
                break
        objects.append(obj)
    return {"objects": objects, "true": true, "fake": fake}


def _colour(rng: np.random.Generator, opts: SceneOptions) -> dict[str, Any]:
    return _one_attribute_asked(rng, opts, asked=1)


def _object(rng: np.random.Generator, opts: SceneOptions) -> dict[str, Any]:
    return _one_attribute_asked(rng, opts, asked=0)


def _description(rng: np.random.Generator, opts: SceneOptions) -> dict[str, Any]:
    objects: list[tuple[str, str]] = []
    for _ in range(int(rng.integers(1, 5))):
        objects.append(_draw_object(rng, opts, set(objects)))
    target = int(rng.integers(len(objects)))
    noun, colour = objects[target]
    # One object's colour or noun swapped, never into another object's combination (a repeated
    # "a red star ... a red star" would mark the rejected answer without the scene).
    if rng.random() < 0.5:
        fake = _draw_object(rng, opts, set(objects), noun=noun)
    else:
        fake = _draw_object(rng, opts, set(objects), colour=colour)
    return {"objects": objects, "target": target, "fake": {"shape": fake[0], "colour": fake[1]},
            "texture": "plain"}


def _count(rng: np.random.Generator, opts: SceneOptions) -> dict[str, Any]:
    """How many objects share a noun (`by` = "shape") or a colour (`by` = "colour"): 1-4 targets, each
    its own object, and 0-2 distractors, which may carry a target's other attribute (a red cup
    among red stars when stars are counted), so counting a word that is not asked about fails."""
    true_n, fake_n = (int(v) for v in rng.permutation([1, 2, 3, 4])[:2])
    by = "shape" if rng.random() < 0.5 else "colour"
    keep = {"noun": _noun(rng, opts)} if by == "shape" else {"colour": _attribute(rng, opts)}
    objects: list[tuple[str, str]] = []
    for _ in range(100 * true_n):
        if len(objects) == true_n:
            break
        obj = _draw_object(rng, opts, set(objects), **keep)
        # Targets differ in their other attribute too, so no two cells of different objects read alike.
        if all(obj[by == "shape"] != o[by == "shape"] for o in objects):
            objects.append(obj)
    true_n = len(objects)
    fixed = 0 if by == "shape" else 1  # index of the attribute every target shares
    for _ in range(int(rng.integers(0, min(2, 5 - true_n) + 1))):
        foil = objects[int(rng.integers(true_n))]
        shared = {"colour": foil[1]} if by == "shape" else {"noun": foil[0]}
        for _ in range(1000):
            obj = _draw_object(rng, opts, set(objects), **(shared if rng.random() < 0.5 else {}))
            if obj[fixed] != objects[0][fixed]:
                break
        objects.append(obj)
    return {"objects": objects, "by": by, "true": true_n, "fake": fake_n if fake_n != true_n else true_n % 4 + 1,
            "targets": list(range(true_n))}


def _centroid(block: list[int]) -> tuple[float, float]:
    """(column, row) of a block's middle, in cells."""
    return (float(np.mean([c % GRID for c in block])), float(np.mean([c // GRID for c in block])))


def _spatial(rng: np.random.Generator, opts: SceneOptions) -> dict[str, Any]:
    """Where A (the first object) lies against B (the second): left/right or above/below, the
    blocks placed so that A's offset along the asked axis is at least a cell and at least twice
    the offset across it (one clear answer, the visual builder's rule on the grid)."""
    horizontal = bool(rng.random() < 0.5)
    true_rel, fake_rel = ("left", "right") if horizontal else ("above", "below")
    if rng.random() < 0.5:
        true_rel, fake_rel = fake_rel, true_rel
    objects: list[tuple[str, str]] = []
    for _ in range(int(rng.integers(2, 5))):
        objects.append(_draw_object(rng, opts, set(objects)))
    for _ in range(1000):
        blocks = place(rng, len(objects))
        (ax, ay), (bx, by_) = _centroid(blocks[0]), _centroid(blocks[1])
        along, across = (ax - bx, ay - by_) if horizontal else (ay - by_, ax - bx)
        if true_rel in ("right", "below"):
            along = -along
        if -along >= 1 and abs(across) <= 0.5 * -along:
            break
    else:
        raise RuntimeError(f"no placement puts A {true_rel} of B")
    return {"objects": objects, "true": true_rel, "fake": fake_rel, "blocks": blocks}


_FACTS = {"hallucination/existence": _existence, "hallucination/color": _colour, "hallucination/object": _object,
          "general/description": _description, "hallucination/count": _count, "reasoning/spatial": _spatial}


def make_scene_example(seed: int, index: int, category: str,
                       opts: SceneOptions = SceneOptions()) -> tuple[str, str, str, dict[str, Any]]:
    """(prompt, chosen, rejected, meta) of pair `index`: the scene's words, then the question."""
    rng = np.random.default_rng([seed, 20, index])
    facts = _FACTS[category](rng, opts)
    objects = facts["objects"]
    blocks = facts.pop("blocks", None) or place(rng, len(objects))
    scene = scene_text(objects, blocks, rng, opts)
    # A block's centre cell gives the object's place (descriptions list objects left to right).
    meta = {**facts, "objects": [{"shape": s, "colour": c, "cells": b,
                                  "center": [(b[0] % GRID + 0.5) / GRID, (b[0] // GRID + 0.5) / GRID]}
                                 for (s, c), b in zip(objects, blocks)]}
    question, chosen, rejected = rephrase(category, meta, TRAIN_BANK, rng)
    chosen, rejected, padding = pad_pair(chosen, rejected, TRAIN_BANK, rng, opts.pad, opts.pad)
    meta["padding"] = padding
    return scene.lstrip() + question, chosen, rejected, meta


def scene_categories(n_pairs: int, seed: int, weights: Mapping[str, float] | None = None) -> list[str]:
    """Exact quotas of `weights` (kinds of `KINDS` -> shares, normalised; None: CATEGORY_WEIGHTS)
    over n_pairs, shuffled by seed."""
    weights = CATEGORY_WEIGHTS if weights is None else check_weights(weights)
    names = [c for c in weights if weights[c] > 0]
    total = sum(weights[c] for c in names)
    counts = [int(n_pairs * weights[c] / total) for c in names]
    for k in range(n_pairs - sum(counts)):
        counts[k % len(names)] += 1
    cats = [c for c, k in zip(names, counts) for _ in range(k)]
    order = np.random.default_rng([seed, 21]).permutation(len(cats))
    return [cats[i] for i in order]


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """`weights` as a dict, or ValueError naming the unknown kind / the bad share."""
    unknown = [k for k in weights if k not in KINDS]
    if unknown:
        raise ValueError(f"word scenes: unknown kind(s) {unknown}; kinds are {list(KINDS)}")
    bad = {k: v for k, v in weights.items() if not v >= 0}
    if bad or not any(v > 0 for v in weights.values()):
        raise ValueError(f"word scenes: shares must be >= 0 with one > 0, got {dict(weights)}")
    return dict(weights)


def generate_word_scenes(out_dir: str, n_pairs: int, seed: int, opts: SceneOptions = SceneOptions(),
                         progress: bool = True, weights: Mapping[str, float] | None = None) -> list[PreferencePair]:
    """Write `n_pairs` word-scene pairs to `out_dir/pairs.jsonl` and return them (`weights`: the
    kinds' shares, `scene_categories`)."""
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be >= 0, got {n_pairs}")
    pairs = []
    for i, category in enumerate(tqdm(scene_categories(n_pairs, seed, weights), desc="word scenes", file=sys.stderr,
                                      disable=not progress)):
        prompt, chosen, rejected, _ = make_scene_example(seed, i, category, opts)
        pairs.append(PreferencePair(id=f"scene-s{seed}-{i:06d}", prompt=prompt, chosen=chosen, rejected=rejected,
                                    source=SOURCE, category="scene/" + category.split("/")[1]))
    os.makedirs(out_dir, exist_ok=True)
    save_pairs(pairs, os.path.join(out_dir, "pairs.jsonl"))
    return pairs
