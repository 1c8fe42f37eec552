"""Grounded captions of generated images: the alignment data (`regions.jsonl`, see data/regions.py)."""

from __future__ import annotations

from basereward.data.regions import Region
from basereward.data.synthetic.base import Example
from basereward.data.synthetic.photo_task import PHOTO_LABELS


def example_regions(ex: Example, size: int) -> tuple[Region, ...]:
    """Grounded captions of one rendered image.

    Shapes: a box around each object named "<colour> <shape>"; bars: each bar named
    "<colour> bar"; photos: the whole image named by a short label of its subject.
    """
    def clip(v: float) -> float:
        return min(max(v / size, 0.0), 1.0)

    meta = ex.meta
    if "objects" in meta:
        return tuple(
            Region((clip(o["center"][0] - o["radius"]), clip(o["center"][1] - o["radius"]),
                    clip(o["center"][0] + o["radius"]), clip(o["center"][1] + o["radius"])),
                   f"{o['colour']} {o['shape']}")
            for o in meta["objects"]
        )
    if "bars" in meta:
        return tuple(
            Region((clip(b["x0"]), clip(b["top"]), clip(b["x1"]), clip(meta["baseline"])), f"{b['colour']} bar")
            for b in meta["bars"]
        )
    return (Region((0.0, 0.0, 1.0, 1.0), PHOTO_LABELS[meta["photo"]]),)
