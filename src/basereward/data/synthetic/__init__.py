"""Seeded generator of rendered multimodal preference pairs (the embedded data set).

Each pair asks a question about a rendered image; `chosen` states the true fact and `rejected`
is a hallucination: the same answer template with only the fact changed, so wording and length
carry no signal and only the image separates them. Scenes are simple shapes on a plain or lightly
textured background, bar charts, or crops of the real photos bundled with scikit-image and
scikit-learn (no downloads).

Label-leak rule used throughout: the true fact and the hallucinated one are drawn as an
exchangeable pair (the true value uniform, the fake uniform among the others, or a uniform draw
from a symmetric set of pairs; bar values are all two-digit, so their reading never changes a
length), and only then is the image rendered from the true one. Any text-only feature - length,
a colour word, "yes" - is therefore as likely in `rejected` as in `chosen` across the data set.

Modules: `generator` (categories, `make_example`, `generate`: the files), `render` (scenes,
charts, photos), `base` (what the task builders share), `shape_tasks`, `chart_task`,
`photo_task` (one builder per category), `captions` (grounded regions of each image).
Transfer: `heldout` (the held-out distribution: its own wording, padding, layouts and colour/shape
combinations), `variety` (the training generator's options: paraphrases, padding, layouts, held-out
combinations left out, counterfactual twins), `twins` (the same texts over a picture in which the
other answer is true), `rephrase` (wording from facts with any bank), `paraphrases` (the training
bank), `layouts` (re-rendering facts in another style), `combos` (the held-out combinations).
"""

from basereward.data.synthetic.base import Example
from basereward.data.synthetic.captions import example_regions
from basereward.data.synthetic.generator import (
    CATEGORIES,
    CATEGORY_WEIGHTS,
    SOURCE,
    assign_categories,
    generate,
    make_example,
)
from basereward.data.synthetic.heldout import generate_heldout, make_heldout_example
from basereward.data.synthetic.render import COLOUR_NAMES, COLOURS, PLURAL, SHAPES
from basereward.data.synthetic.variety import Variety

__all__ = [
    "CATEGORIES",
    "CATEGORY_WEIGHTS",
    "COLOURS",
    "COLOUR_NAMES",
    "PLURAL",
    "SHAPES",
    "SOURCE",
    "Example",
    "Variety",
    "assign_categories",
    "example_regions",
    "generate",
    "generate_heldout",
    "make_example",
    "make_heldout_example",
]
