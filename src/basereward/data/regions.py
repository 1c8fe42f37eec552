"""Grounded captions: the alignment data format for `mini-vl`'s word projector.

One image per line:
`{"image": path, "regions": [{"box": [x0, y0, x1, y1], "text": str}, ...]}`
with the box in fractions of the image's width and height (0 <= x0 < x1 <= 1, same for y) and
`text` a short phrase naming what is inside it ("red star", "blue bar", "tabby cat"). The image
path is relative to the file's directory, as in the pair format. A whole-image caption is one
region with box [0, 0, 1, 1]. This is the shape of grounded caption sets (Flickr30k Entities,
GRIT, Visual Genome region descriptions), reduced to what the alignment stage reads.

Every problem is reported as `file:line: reason`; the image itself is checked when it is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from basereward.errors import DataError
from basereward.io import iter_jsonl, write_jsonl


@dataclass(frozen=True)
class Region:
    box: tuple[float, float, float, float]
    """(x0, y0, x1, y1) as fractions of the image width/height."""
    text: str


@dataclass(frozen=True)
class GroundedImage:
    image: str
    """Absolute image path."""
    regions: tuple[Region, ...]


def zoomed_regions(item: GroundedImage, draw: tuple[float, float, float]) -> GroundedImage:
    """The grounded image's regions after shrinking the image by `draw`'s scale and placing it at its
    (left, top), all as fractions of the canvas side (mini-vl's `align_zoom` copies)."""
    s, left, top = draw

    def moved(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = box
        return (left + s * x0, top + s * y0, left + s * x1, top + s * y1)

    return GroundedImage(item.image, tuple(Region(moved(r.box), r.text) for r in item.regions))


def _parse(row: dict[str, Any], base: str) -> GroundedImage:
    for key in ("image", "regions"):
        if key not in row:
            raise ValueError(f"missing field '{key}'")
    if not isinstance(row["image"], str) or not row["image"]:
        raise ValueError("field 'image' must be a non-empty path string")
    if not isinstance(row["regions"], list):
        raise ValueError("field 'regions' must be a list")
    regions = []
    for k, reg in enumerate(row["regions"]):
        if not isinstance(reg, dict) or "box" not in reg or "text" not in reg:
            raise ValueError(f"regions[{k}] must be an object with 'box' and 'text'")
        box, text = reg["box"], reg["text"]
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise ValueError(f"regions[{k}].box must be four numbers [x0, y0, x1, y1]")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise ValueError(f"regions[{k}].box {box} is not inside [0, 1] with x0 < x1 and y0 < y1")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"regions[{k}].text must be a non-empty string")
        regions.append(Region((x0, y0, x1, y1), " ".join(text.split())))
    path = os.path.normpath(os.path.join(base, row["image"]))
    if not os.path.isfile(path):
        raise ValueError(f"image not found: {row['image']}")
    return GroundedImage(path, tuple(regions))


def load_regions(path: str | os.PathLike[str]) -> list[GroundedImage]:
    """Read and validate a grounded-caption file; DataError(`file:line: reason`) on the first bad row."""
    base = str(Path(path).resolve().parent)
    out = []
    for where, row in iter_jsonl(path, empty="no grounded images"):
        try:
            out.append(_parse(row, base))
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from None
    return out


def save_regions(items: list[GroundedImage], path: str | os.PathLike[str]) -> None:
    """Write grounded images with image paths relative to the file's directory (atomically)."""
    base = os.path.dirname(os.path.abspath(path))
    write_jsonl(path, (
        {
            "image": os.path.relpath(item.image, base),
            "regions": [{"box": [round(v, 4) for v in r.box], "text": r.text} for r in item.regions],
        }
        for item in items
    ))


def region_words(items: list[GroundedImage]) -> tuple[str, ...]:
    """The sorted distinct words of all region texts: the word projector's vocabulary."""
    return tuple(sorted({w for item in items for r in item.regions for w in r.text.split()}))
