"""Task builder on real photos: a caption of the photo's subject against one of another photo.

The photos are bundled with scikit-image and scikit-learn (nothing is downloaded); crops and
flips give variety. `PHOTO_LABELS` names each photo's subject for the grounded captions.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageEnhance

from basereward.data.synthetic import phrases
from basereward.data.synthetic.base import Draft, answer_pair, ask, cap, pick
from basereward.data.synthetic.render import load_photo

# name -> (subject, detail). Written to stay true under the crops (>= 65% of the short side) and
# horizontal flips applied below; of similar length so a wrong caption is not shorter or longer.
PHOTO_FACTS: dict[str, tuple[str, str]] = {
    "astronaut": ("an astronaut in an orange spacesuit", "posing for an official portrait"),
    "coffee": ("a cup of coffee on a red saucer", "with a small spoon beside the cup"),
    "chelsea": ("a close-up of a tabby cat's face", "staring straight at the camera"),
    "rocket": ("a rocket standing on its launch pad", "under a dark blue evening sky"),
    "camera": ("a man looking through a camera", "set up on a tripod on a lawn"),
    "coins": ("rows of old silver coins", "arranged on a dark grey surface"),
    "horse": ("a black silhouette of a horse", "standing on a plain white background"),
    "hubble_deep_field": ("a deep-space view full of galaxies", "scattered across a black sky"),
    "immunohistochemistry": ("a microscope image of stained tissue", "with brown and blue stained cells"),
    "moon": ("a grey close-up of the lunar surface", "with small craters and dark patches"),
    "retina": ("a medical image of a human retina", "with red blood vessels on an orange disc"),
    "brick": ("a grey wall of long thin bricks", "laid in neat staggered rows"),
    "grass": ("a black-and-white close-up of grass", "with thin blades filling the frame"),
    "gravel": ("a grey close-up of loose gravel", "with small stones covering the ground"),
    "text": ("handwritten mathematical formulas", "written on a sheet of paper"),
    "page": ("a printed page of text", "about region-based image segmentation"),
    "motorcycle": ("a red motorcycle parked in a garage", "in front of shelves with boxes"),
    "china": ("a traditional Chinese temple tower", "rising above trees next to a lake"),
    "flower": ("an orange dahlia flower in bloom", "against a dark green background"),
    "colorwheel": ("a circular colour wheel", "showing a rainbow of hues on black"),
}
# Short labels for the grounded captions (regions.jsonl): words of the subject above.
PHOTO_LABELS: dict[str, str] = {
    "astronaut": "astronaut spacesuit", "coffee": "coffee cup", "chelsea": "tabby cat", "rocket": "rocket",
    "camera": "camera tripod", "coins": "silver coins", "horse": "horse silhouette", "hubble_deep_field": "galaxies",
    "immunohistochemistry": "stained tissue", "moon": "lunar craters", "retina": "retina vessels",
    "brick": "brick wall", "grass": "grass", "gravel": "gravel stones", "text": "handwritten formulas",
    "page": "printed page", "motorcycle": "red motorcycle", "china": "temple tower", "flower": "dahlia flower",
    "colorwheel": "colour wheel",
}
_NO_FLIP = {"text", "page"}  # mirrored writing would not be "a page of text" any more
_PHOTO_NAMES = tuple(PHOTO_FACTS)
_PHOTO_LEN_TOL = 10  # max caption length difference within a pair, in characters


def _caption_fields(name: str) -> dict[str, str]:
    subject, detail = PHOTO_FACTS[name]
    return {"subject": subject, "Subject": cap(subject), "detail": detail}


@lru_cache(maxsize=None)
def _caption_pairs(template: str) -> tuple[tuple[str, str], ...]:
    """Ordered (true, fake) photo pairs whose captions differ by at most `_PHOTO_LEN_TOL` characters.

    The relation is symmetric, so drawing uniformly from it keeps true/fake exchangeable.
    """
    lens = {p: len(template.format(**_caption_fields(p))) for p in _PHOTO_NAMES}
    names = _PHOTO_NAMES
    return tuple((a, b) for a in names for b in names if a != b and abs(lens[a] - lens[b]) <= _PHOTO_LEN_TOL)


def build_photo(rng: np.random.Generator, size: int) -> Draft:
    # The template comes first: which photos may stand in for each other depends on its length.
    template = pick(rng, phrases.PHOTO_A)
    true_p, fake_p = pick(rng, _caption_pairs(template))
    photo = load_photo(true_p)
    w, h = photo.size
    side = int(min(w, h) * rng.uniform(0.65, 1.0))
    x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    flip = true_p not in _NO_FLIP and rng.random() < 0.5
    img = photo.crop((x0, y0, x0 + side, y0 + side))
    img = img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    brightness = float(rng.uniform(0.9, 1.1))
    img = ImageEnhance.Brightness(img).enhance(brightness)
    meta = {"photo": true_p, "fake": fake_p, "crop": [x0, y0, side], "flip": bool(flip),
            "brightness": brightness}
    chosen, rejected = answer_pair(template, _caption_fields(true_p), _caption_fields(fake_p))
    return Draft(ask(rng, phrases.PHOTO_Q), chosen, rejected, img, meta)
