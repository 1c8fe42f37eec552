"""The held-out DISTRIBUTION: visual pairs that test transfer, not a re-seeded copy of training.

Same kinds of question as the training generator (object, colour, count, existence, spatial,
chart, description, photo), same category shares, but:
- wording: a phrase bank of its own (`HELDOUT_BANK`), no template shared with the training bank
  (`paraphrases.TRAIN_BANK`, which holds today's templates too); photo captions reworded;
- padding: in a quarter of the pairs the chosen answer gets a neutral sentence, in a quarter the
  rejected one, in a quarter both (before or after the answer), so length and filler cannot decide;
- pictures: canvas sizes, backgrounds, textures, shades, object scales, clustered placement and a
  chart style that no training style uses (`layouts.HELDOUT_LAYOUT`);
- combinations: every shape question is about a colour/shape combination of
  `combos.HELDOUT_COMBOS`, in the true or the hallucinated answer alike, which the training
  generator leaves out with `Variety(exclude_heldout_combos=True)`.
The facts are drawn by the training generator's builders (so the questions are the same tasks),
then re-rendered and re-worded here. Deterministic by seed; `meta` records padding and combos.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from basereward.data.pairs import save_pairs
from basereward.data.schema import PreferencePair
from basereward.data.synthetic.base import Example
from basereward.data.synthetic.combos import HELDOUT_COMBOS, key_combos, used_combos
from basereward.data.synthetic.generator import (
    assign_categories,
    check_seed,
    save_image,
    task_builder,
)
from basereward.data.synthetic.layouts import HELDOUT_LAYOUT, TRAIN_LAYOUT, rerender
from basereward.data.synthetic.paraphrases import TRAIN_BANK
from basereward.data.synthetic.rephrase import pad_pair, rephrase
from basereward.data.synthetic.variety import draw_until

SOURCE = "synthetic-heldout"
_STREAM_PAIRS, _STREAM_STYLE = 10, 12  # see generator.py: 10-12 are the held-out distribution's
_PAD_MODES = ("none", "chosen", "rejected", "both")

HELDOUT_BANK: dict[str, object] = {
    "object_q_single": ("Say which form is drawn on this canvas.", "Name the outline of the figure here.",
                        "Which form does the single item in the image take?"),
    "object_q_multi": ("Which form does the {c} item take?", "Among the items, the {c} one has which form?",
                       "Look for the thing painted {c}. Which form is it?"),
    "object_a": ("That item is {a_s}, clearly.", "What I notice is {a_s}.", "Its form is that of {a_s}.",
                 "Answer: {a_s}."),
    "colour_q": ("What hue does the {s} have?", "Could you say what colour the {s} on the canvas is?",
                 "Which paint was used for the {s}?"),
    "colour_a": ("The {s} here is {c} in colour.", "Colour of the {s}: {c}.", "Its hue is {c}.",
                 "I would call the {s} {c}."),
    "count_q": ("Please count the {p} on the canvas.", "What number of {p} is drawn?",
                "How many {p} are visible on the canvas?"),
    "count_a": ("The canvas holds {nw} {noun}.", "My count: {nd} {noun}.", "Visible are {nw} {noun}, no more.",
                "Total number of {p}: {nd}."),
    "exist_q": ("Is any {q} drawn on the canvas?", "Would you find {a_q} on this canvas?",
                "Does the canvas include {a_q}?"),
    "exist_a": (("Indeed, {a_q} is drawn on the canvas.", "Not at all, no {q} is drawn on the canvas."),
                ("Sure, the canvas includes {a_q}.", "Nope, the canvas lacks any {q}."),
                ("Affirmative: {a_q} appears.", "Negative: no {q} appears.")),
    "exist_a_others": (("Indeed. The canvas has {others}, plus {a_q}.",
                        "Not at all. The canvas has {others}, yet no {q}."),),
    "spatial_q_h": ("Horizontally, where is the {A} compared with the {B}?",
                    "Looking across the canvas, is the {A} left or right of the {B}?"),
    "spatial_q_v": ("Vertically, where is the {A} compared with the {B}?",
                    "Looking up and down the canvas, is the {A} higher or lower than the {B}?"),
    "spatial_a": ("You will find the {A} {rel} the {B}.", "Position: the {A} is {rel} the {B}.",
                  "On this canvas, the {A} stays {rel} the {B}."),
    "relations": {"left": "on the left side of", "right": "on the right side of", "above": "higher up than",
                  "below": "lower down than"},
    "desc_q": ("Summarize the canvas.", "List what is drawn on this canvas.", "Give a caption for this canvas."),
    "desc_a": ("Drawn on the canvas: {items}.", "This canvas features {items}.", "Items present are {items}."),
    "tallest_q": ("In this plot, which column rises highest?", "Which column has the peak value in the plot?"),
    "tallest_a": ("Peak column: {c}, at {v}.", "The column in {c} rises highest, to {v}.",
                  "The {c} column tops the plot with {v}."),
    "value_q": ("In this plot, what does the {c} column read?", "Give the reading of the {c} column."),
    "value_a": ("Reading: {v} for the {c} column.", "The {c} column reads {v}.", "That column stands at {v}."),
    "diff_q": ("In this plot, what is the gap between the {a} column and the {b} column?",
               "Take the {a} column and subtract the {b} column: what remains?"),
    "diff_a": ("Gap: {d}, because {a} reads {va} and {b} reads {vb}.", "What remains is {d} ({va} less {vb}).",
               "The {a} column stands {d} above the {b} one ({va} against {vb})."),
    "photo_q": ("Caption this photograph, please.", "What does the photograph capture?"),
    "photo_a": ("Captured here: {subject}.", "A photograph capturing {subject}, {detail}.",
                "We are looking at {subject}, {detail}."),
    # The photos' facts reworded (still true under the crops of layouts.HELDOUT_LAYOUT).
    "photos": {
        "astronaut": ("a space traveller in an orange suit", "in a formal portrait"),
        "coffee": ("coffee served in a cup on a red plate", "with a spoon next to it"),
        "chelsea": ("the face of a striped cat up close", "looking into the lens"),
        "rocket": ("a rocket waiting on its pad", "against a deep blue dusk"),
        "camera": ("a photographer behind a camera", "mounted on a tripod outdoors"),
        "coins": ("several rows of antique coins", "laid out on a dark surface"),
        "horse": ("the dark outline of a horse", "on an empty white backdrop"),
        "hubble_deep_field": ("countless distant galaxies", "spread over black space"),
        "immunohistochemistry": ("tissue stained for microscopy", "showing brown and blue cells"),
        "moon": ("the cratered grey surface of the moon", "seen up close"),
        "retina": ("a scan of the back of an eye", "with blood vessels across an orange disc"),
        "brick": ("a wall made of narrow grey bricks", "in staggered courses"),
        "grass": ("blades of grass in black and white", "filling the whole frame"),
        "gravel": ("a bed of small grey pebbles", "covering the ground"),
        "text": ("maths formulas written by hand", "on a paper sheet"),
        "page": ("a page of printed text", "on segmenting image regions"),
        "motorcycle": ("a red motorbike inside a garage", "with boxes on shelves behind it"),
        "china": ("an old Chinese pagoda", "above the trees beside a lake"),
        "flower": ("a blooming orange dahlia", "in front of dark green leaves"),
        "colorwheel": ("a round wheel of colours", "with every hue on a black ground"),
    },
    # Neutral sentences: no colour, shape, number, position or yes/no.
    "pad": ("Feel free to ask a follow-up.", "I based this on a close look.", "Hopefully that answers it.",
            "That is what I observed.", "Glad to assist with this.", "I examined everything shown."),
}


@dataclass(frozen=True)
class Shift:
    """Which of the held-out distribution's departures from the training generator a split keeps
    (all of them by default: the held-out distribution itself). A factor turned off comes from the
    training generator instead, so a model's loss on the held-out distribution can be split by
    factor (`experiments/heldout_factors.py`); the facts of pair i stay those of pair i wherever
    the factor allows."""

    wording: bool = True
    """HELDOUT_BANK's phrasings and padding sentences; off: the training bank's (`TRAIN_BANK`)."""
    layout: bool = True
    """HELDOUT_LAYOUT's pictures; off: the training layouts (`TRAIN_LAYOUT`)."""
    combos: bool = True
    """A held-out colour/shape combination in every shape question; off: only combinations that
    the training generator shows (none of HELDOUT_COMBOS drawn or named)."""
    padding: bool = True
    """A neutral sentence on the chosen, the rejected, both or neither answer (a quarter each);
    off: no padding."""


HELDOUT = Shift()


def _accept(category: str, combos: bool):
    if category in ("reasoning/chart", "general/photo"):
        return lambda meta: True
    if combos:
        return lambda meta: bool(key_combos(category, meta) & HELDOUT_COMBOS)
    return lambda meta: not (used_combos(category, meta) & HELDOUT_COMBOS)


def make_heldout_example(seed: int, index: int, category: str, shift: Shift = HELDOUT) -> Example:
    """Pair `index` of the held-out distribution drawn with `seed` (category from `assign_categories`);
    `shift` turns factors of the distribution off (`Shift`)."""
    build = task_builder(category)
    draft = draw_until(build, category, lambda k: np.random.default_rng([seed, _STREAM_PAIRS, index, k]), 224,
                       _accept(category, shift.combos))
    rng = np.random.default_rng([seed, _STREAM_STYLE, index])
    bank = HELDOUT_BANK if shift.wording else TRAIN_BANK
    image, meta = rerender(category, draft.meta, rng, HELDOUT_LAYOUT if shift.layout else TRAIN_LAYOUT)
    prompt, chosen, rejected = rephrase(category, meta, bank, rng)
    mode = _PAD_MODES[int(rng.integers(len(_PAD_MODES)))] if shift.padding else "none"
    chosen, rejected, record = pad_pair(chosen, rejected, bank, rng, float(mode in ("chosen", "both")),
                                        float(mode in ("rejected", "both")))
    meta.update(padding=record, heldout_combos=sorted(map(list, key_combos(category, meta) & HELDOUT_COMBOS)))
    image_format = "jpeg" if category == "general/photo" else "png"
    return Example(prompt, chosen, rejected, category, image, image_format, meta)


def generate_heldout(out_dir: str, n_pairs: int, seed: int, categories: Sequence[str] | None = None,
                     progress: bool = True, shift: Shift = HELDOUT) -> list[PreferencePair]:
    """Render `n_pairs` held-out-distribution pairs into `out_dir/images/` and `out_dir/pairs.jsonl`
    (`shift`: the factors of the distribution to keep, `Shift`)."""
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be >= 0, got {n_pairs}")
    check_seed(seed)
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    pairs = []
    cats = assign_categories(n_pairs, seed, categories)
    for index, category in enumerate(tqdm(cats, desc="held-out distribution", file=sys.stderr, disable=not progress)):
        ex = make_heldout_example(seed, index, category, shift)
        pair_id = f"heldout-s{seed}-{index:06d}"
        path = save_image(ex, os.path.join(image_dir, pair_id))
        pairs.append(PreferencePair(id=pair_id, prompt=ex.prompt, chosen=ex.chosen, rejected=ex.rejected,
                                    images=(path,), source=SOURCE, category=category))
    save_pairs(pairs, os.path.join(out_dir, "pairs.jsonl"))
    return pairs
