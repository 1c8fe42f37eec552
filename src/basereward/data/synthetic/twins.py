"""Counterfactual twins: the same question and answers over a picture in which the other answer is true.

A pair's twin keeps the prompt and both answer texts and swaps which one is chosen; its image is
re-rendered (`layouts.rerender`, the training layout) from the pair's facts edited so that the
hallucinated answer becomes the true one: the asked-about shape or colour changed, targets added
or removed, the queried object put in or taken out, the spatial relation reversed, bar values
moved. Over a pair and its twin every text feature (wording, a number, "yes", padding, length)
sits once on each side, so only the picture decides, which is what a reward model must learn
to read. Contrast sets (Gardner et al., 2020) and counterfactual VQA augmentation do the same.

Descriptions (answers list objects left to right, which a re-render reorders) and photos have no
twin. Each edit keeps the answers true to the new picture (checked in tests against the meta).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from basereward.data.synthetic.base import Draft, pick
from basereward.data.synthetic.combos import HELDOUT_COMBOS
from basereward.data.synthetic.layouts import TRAIN_LAYOUT, rerender
from basereward.data.synthetic.render import COLOUR_NAMES, SHAPES

TWIN_CATEGORIES = (
    "hallucination/object",
    "hallucination/color",
    "hallucination/count",
    "hallucination/existence",
    "reasoning/spatial",
    "reasoning/chart",
)
_MAX_SCENE = 5  # the layouts' crowding table goes up to five objects


def _free_combo(rng: np.random.Generator, shapes: list[str], colours: list[str], avoid: frozenset) -> tuple[str, str]:
    options = [(s, c) for s in shapes for c in colours if (s, c) not in avoid]
    return pick(rng, options)


def counterfactual_meta(category: str, meta: Mapping[str, Any], rng: np.random.Generator,
                        avoid: frozenset = frozenset()) -> dict[str, Any] | None:
    """The pair's facts with the hallucinated answer made true; None when the category has no twin.

    `avoid`: (shape, colour) combinations no new object may take (`combos.HELDOUT_COMBOS` when
    the training data leaves them out).
    """
    if category not in TWIN_CATEGORIES:
        return None
    new = copy.deepcopy(dict(meta))
    objs = new.get("objects")
    if category == "hallucination/object":
        objs[0]["shape"] = new["fake"]
        new["true"], new["fake"] = meta["fake"], meta["true"]
    elif category == "hallucination/color":
        objs[0]["colour"] = new["fake"]
        new["true"], new["fake"] = meta["fake"], meta["true"]
    elif category == "hallucination/count":
        true_n, fake_n = int(meta["true"]), int(meta["fake"])
        targets, others = objs[:true_n], objs[true_n:]
        if fake_n < true_n:
            targets = targets[:fake_n]
        else:
            key = "shape" if meta["by"] == "shape" else "colour"
            for _ in range(fake_n - true_n):
                if key == "shape":
                    s, c = _free_combo(rng, [targets[0]["shape"]], COLOUR_NAMES, avoid)
                else:
                    s, c = _free_combo(rng, SHAPES, [targets[0]["colour"]], avoid)
                targets.append({"shape": s, "colour": c})
        others = others[: max(0, _MAX_SCENE - len(targets))]
        new["objects"] = targets + others
        new["targets"] = list(range(len(targets)))
        new["true"], new["fake"] = fake_n, true_n
    elif category == "hallucination/existence":
        q = (meta["query"]["shape"], meta["query"]["colour"])
        if meta["present"]:
            rest = [o for o in objs if (o["shape"], o["colour"]) != q]
            if not rest:
                # The only object was the query: a near miss takes its place (same shape or colour).
                taken = avoid | {q}
                near = [(s, c) for s, c in ((q[0], c) for c in COLOUR_NAMES) if (s, c) not in taken]
                near += [(s, c) for s, c in ((s, q[1]) for s in SHAPES) if (s, c) not in taken]
                s, c = pick(rng, near)
                rest = [{"shape": s, "colour": c}]
            new["objects"] = rest
        else:
            if len(objs) >= _MAX_SCENE:
                return None
            new["objects"] = objs + [{"shape": q[0], "colour": q[1]}]
        new["present"] = not meta["present"]
    elif category == "reasoning/spatial":
        new["true"], new["fake"] = meta["fake"], meta["true"]
    elif category == "reasoning/chart":
        bars = new["bars"]
        kind = meta["kind"]
        if kind == "tallest":
            t = int(meta["target"])
            f = next(i for i, b in enumerate(bars) if b["colour"] == meta["fake"])
            bars[t]["value"], bars[f]["value"] = bars[f]["value"], bars[t]["value"]
            new["target"], new["fake"] = f, bars[t]["colour"]
        elif kind == "value":
            t = int(meta["target"])
            new["fake"] = bars[t]["value"]
            bars[t]["value"] = int(meta["fake"])
        else:  # difference
            (ia, ib), (fa, fb) = meta["target"], meta["fake"]
            new["fake"] = [bars[ia]["value"], bars[ib]["value"]]
            bars[ia]["value"], bars[ib]["value"] = int(fa), int(fb)
    return new


def twin_draft(category: str, draft: Draft, rng: np.random.Generator, avoid: frozenset = frozenset()) -> Draft | None:
    """The counterfactual twin of a pair (texts kept, chosen and rejected swapped, image re-rendered
    from `counterfactual_meta` in the training layout); None when the pair has no twin."""
    meta = counterfactual_meta(category, draft.meta, rng, avoid)
    if meta is None:
        return None
    image, meta = rerender(category, meta, rng, TRAIN_LAYOUT)
    if "padding" in meta:
        pad = meta["padding"]
        meta["padding"] = {("rejected" if k == "chosen" else "chosen"): v for k, v in pad.items()}
    meta["twin"] = True
    return Draft(draft.prompt, draft.rejected, draft.chosen, image, meta)


def avoid_for(exclude_heldout_combos: bool) -> frozenset:
    return HELDOUT_COMBOS if exclude_heldout_combos else frozenset()
