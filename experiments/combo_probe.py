#!/usr/bin/env python
"""How a mini-vl model's word projector reads objects whose colour/shape combination it never saw
in training (`combos.HELDOUT_COMBOS`) against familiar ones: for every object of the held-out
distribution's shape pictures, the words of the grid cell holding its centre.

    python experiments/combo_probe.py --model runs/demo/model --out runs/demo/combo_probe.json

Reported per kind of object (unseen / seen combination) and picture style (the training layouts
or the held-out layouts, `heldout.Shift(layout=...)`): how often the cell's first slot names the
object's colour, how often its second slot starts the shape's name, and how often the first slot
says "background" (the object not seen at all).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from typing import Any

import torch

from basereward.data.synthetic import assign_categories
from basereward.data.synthetic.combos import HELDOUT_COMBOS
from basereward.data.synthetic.heldout import Shift, make_heldout_example
from basereward.demo import SYNTH_HELDOUT as SEED
from basereward.io import write_json
from basereward.models.mini_vl.projector import point_cell


def probe(backbone: Any, shift: Shift, n_pairs: int) -> dict[str, dict[str, float]]:
    from basereward.models.mini_vl.vision import encode_into_cache

    grid = backbone.cfg.mini_vl.image_grid
    vocab = [backbone.tokenizer.decode([t]).strip() for t in backbone.word_ids.tolist()]
    examples, paths = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, cat in enumerate(assign_categories(n_pairs, SEED)):
            if cat in ("reasoning/chart", "general/photo"):
                continue
            ex = make_heldout_example(SEED, i, cat, shift)
            paths.append(f"{tmp}/{i}.png")
            ex.image.save(paths[-1])
            examples.append(ex)
        feats = encode_into_cache(backbone.vision, {}, paths, backbone.cfg.mini_vl.image_size, progress=False)
    with torch.no_grad():
        words = backbone.word_logits(feats).argmax(-1).reshape(len(paths), grid * grid, backbone.slots)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for ex, cells in zip(examples, words):
        size = ex.image.size[0]
        for obj in ex.meta["objects"]:
            cx, cy = obj["center"]
            cell = point_cell(cx / size, cy / size, grid)
            first, second = (vocab[int(j)] for j in cells[cell, :2])
            c = counts["unseen" if (obj["shape"], obj["colour"]) in HELDOUT_COMBOS else "seen"]
            c[0] += 1
            c[1] += first == obj["colour"]
            c[2] += bool(second) and second != "," and obj["shape"].startswith(second)
            c[3] += first == "background"
    return {k: {"objects": n, "colour_right": col / n, "shape_right": shp / n, "read_as_background": bg / n}
            for k, (n, col, shp, bg) in sorted(counts.items())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a mini-vl model directory with the `words` projector")
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    from basereward.models.reward_model import RewardModel

    backbone = RewardModel.from_pretrained(args.model).backbone
    if getattr(backbone, "word_ids", None) is None:
        raise SystemExit(f"error: {args.model}: not a mini-vl model with an aligned `words` projector")
    report: dict[str, Any] = {"model": args.model, "seed": SEED}
    for name, shift in (("training layouts", Shift(wording=False, layout=False)), ("held-out layouts", Shift())):
        report[name] = probe(backbone, shift, args.pairs)
        for kind, r in report[name].items():
            print(f"{name:<17} {kind:<7} {r['objects']:4d} objects: colour {100 * r['colour_right']:5.1f}%  "
                  f"shape {100 * r['shape_right']:5.1f}%  read as background {100 * r['read_as_background']:5.1f}%")
    if args.out:
        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
