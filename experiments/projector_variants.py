#!/usr/bin/env python
"""Which alignment of mini-vl's `words` projector reads colour/shape combinations it was never
taught? Selected on combinations withheld from the alignment targets, not on the held-out
distribution's.

    python experiments/projector_variants.py --data runs/demo/data --out runs/projector_variants.json

The demo's alignment pictures (`<data>/synth-train/regions.jsonl`, with the demo's zoomed-out
copies) are encoded once. `VALIDATION_COMBOS`, ten colour/shape combinations that the training
generator does show (none of `combos.HELDOUT_COMBOS`), are then withheld: every grid cell a region
of theirs covers is left out of the alignment loss, so the projector is never told what they are.
Each variant trains a fresh projector on the same features and is read on the validation pictures
(`<data>/synth-val/regions.jsonl`, another seed of the training generator): for each region, the
cell holding its centre: does its first slot name the colour, its second the shape, is it read as
background; withheld against taught combinations. `--heldout` also reads the held-out
distribution's pictures (`combo_probe.py`'s measure) for the variants named, as a check after the
choice is made.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from typing import Any

import torch
from torch import nn

from combo_probe import probe  # experiments/, the script's own folder

from basereward.config import load_config
from basereward.data.regions import GroundedImage, load_regions, region_words, zoomed_regions
from basereward.data.synthetic.heldout import Shift
from basereward.demo import demo_config_path
from basereward.io import write_json
from basereward.models.mini_vl.projector import build_projector, region_cells, train_alignment, word_scores
from basereward.models.mini_vl.vision import encode_into_cache, encode_zoomed_out, zoom_draws
from basereward.models.reward_model import RewardModel

# One per colour, none of HELDOUT_COMBOS, spread over the shapes.
VALIDATION_COMBOS = frozenset({
    ("circle", "red"), ("square", "green"), ("diamond", "blue"), ("cross", "yellow"),
    ("star", "purple"), ("hexagon", "orange"), ("triangle", "black"), ("circle", "white"),
    ("pentagon", "pink"), ("star", "brown"),
})
IGNORE = -100  # cross_entropy's default ignore_index: the alignment loss skips these slots


def combo_of(text: str) -> tuple[str, str] | None:
    words = text.split()
    return (words[1], words[0]) if len(words) == 2 else None


def withheld_cells(item: GroundedImage, grid: int) -> set[int]:
    """Cells covered by (or holding the centre of) a region of a validation combination."""
    return {cell for reg in item.regions if combo_of(reg.text) in VALIDATION_COMBOS
            for cell in region_cells(reg.box, grid)[1]}


def masked_targets(backbone: Any, items: list[GroundedImage]) -> torch.Tensor:
    y = backbone.alignment_targets(items).clone()
    for i, it in enumerate(items):
        for cell in withheld_cells(it, backbone.cfg.mini_vl.image_grid):
            y[i, cell] = IGNORE
    return y


def read(backbone: Any, projector: nn.Module, feats: torch.Tensor, items: list[GroundedImage]) -> dict[str, Any]:
    grid, slots = backbone.cfg.mini_vl.image_grid, backbone.slots
    vocab = [backbone.tokenizer.decode([t]).strip() for t in backbone.word_ids.tolist()]
    with torch.no_grad():
        logits = word_scores(projector(feats.float()), backbone.word_table().float(), backbone.hidden_size)
    words = logits.argmax(-1).reshape(len(items), grid * grid, slots)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for it, cells in zip(items, words):
        for reg in it.regions:
            combo = combo_of(reg.text)
            if combo is None or combo[0] == "bar":
                continue
            cell, _ = region_cells(reg.box, grid)
            first, second = (vocab[int(j)] for j in cells[cell, :2])
            c = counts["withheld" if combo in VALIDATION_COMBOS else "taught"]
            c[0] += 1
            c[1] += first == combo[1]
            c[2] += bool(second) and second != "," and combo[0].startswith(second)
            c[3] += first == "background"
    return {k: {"objects": n, "colour": a / n, "shape": b / n, "background": g / n}
            for k, (n, a, b, g) in sorted(counts.items())}


class FeatureDropout(nn.Module):
    """Zeroes whole blocks of the encoder's channels (the semantic map, the early stages) at random
    while training, so no slot can rely on one block alone."""

    def __init__(self, blocks: list[tuple[int, int]], p: float) -> None:
        super().__init__()
        self.blocks, self.p = blocks, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.ones(*x.shape[:-1], x.shape[-1], device=x.device, dtype=x.dtype)
        for a, b in self.blocks:
            drop = (torch.rand(*x.shape[:-1], 1, device=x.device) < self.p).to(x.dtype)
            keep[..., a:b] = keep[..., a:b] * (1 - drop)
        return x * keep


class TapsOnly(nn.Module):
    """The early stages' channels alone (what `image_semantic=false` feeds the projector): all but
    the first `semantic` channels."""

    def __init__(self, semantic: int) -> None:
        super().__init__()
        self.semantic = semantic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.semantic:]


def make(kind: str, blocks: tuple[int, ...], hidden: int, slots: int) -> nn.Module:
    """A fresh projector of variant `kind` over features whose channel blocks are `blocks` (the
    semantic map first, `ImageEncoder.channel_blocks`)."""
    c, semantic, early = sum(blocks), blocks[0], blocks[1:]
    named = {
        "base": lambda: build_projector(c, hidden, slots),
        "linear": lambda: nn.Sequential(nn.LayerNorm(c), nn.Linear(c, hidden * slots)),
        "small": lambda: nn.Sequential(nn.LayerNorm(c), nn.Linear(c, hidden // 4), nn.GELU(),
                                       nn.Linear(hidden // 4, hidden * slots)),
        "blockln": lambda: build_projector(c, hidden, slots, blocks),  # projector_norm=per_block
        "taps": lambda: nn.Sequential(TapsOnly(semantic), build_projector(c - semantic, hidden, slots)),
        # image_semantic=false projector_norm=per_block
        "tapsln": lambda: nn.Sequential(TapsOnly(semantic), build_projector(c - semantic, hidden, slots, early)),
    }
    if kind in named:
        return named[kind]()
    if kind.startswith("hdrop"):  # hdrop0.3: hidden dropout
        p = build_projector(c, hidden, slots)
        return nn.Sequential(p[0], p[1], p[2], nn.Dropout(float(kind[5:])), p[3])
    if kind.startswith("drop"):  # drop0.3: input dropout
        return nn.Sequential(nn.Dropout(float(kind[4:])), build_projector(c, hidden, slots))
    if kind.startswith("block"):  # block0.3: drop the semantic block or the early ones
        return nn.Sequential(FeatureDropout([(0, semantic), (semantic, c)], float(kind[5:])),
                             build_projector(c, hidden, slots))
    raise SystemExit(f"unknown variant {kind}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a demo's data folder (synth-train, synth-val)")
    ap.add_argument("--variants", default="base,drop0.3,hdrop0.3,block0.3,linear")
    ap.add_argument("--epochs", default="20", help="alignment epochs, comma-separated")
    ap.add_argument("--heldout", default="", help="variants to also read on the held-out distribution's pictures")
    ap.add_argument("--val", default="", help="regions.jsonl files to read the variants on, comma-separated "
                    "(default: <data>/synth-val/regions.jsonl; more pictures: `basereward data synth --varied "
                    "--seed 5 --n 1000 --out DIR`, DIR/regions.jsonl)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    cfg = load_config(demo_config_path(), [])
    torch.manual_seed(args.seed)
    model = RewardModel(cfg.model)
    bb = model.backbone
    mv = bb.cfg.mini_vl
    train_items = load_regions(f"{args.data}/synth-train/regions.jsonl")
    val_items = [it for f in (args.val or f"{args.data}/synth-val/regions.jsonl").split(",") for it in load_regions(f)]
    bb.set_vocabulary(region_words(train_items))
    t0 = time.time()
    images = [it.image for it in train_items]
    x = encode_into_cache(bb.vision, {}, images, mv.image_size, 64, True, "train pictures")
    draws = zoom_draws(len(train_items), args.seed, mv.align_zoom)
    x = torch.cat([x, encode_zoomed_out(bb.vision, images, draws, mv.image_size, 64, True)])
    zoomed = [zoomed_regions(it, d) for it, d in zip(train_items, draws)]
    y = torch.cat([masked_targets(bb, train_items), masked_targets(bb, zoomed)])
    xv = encode_into_cache(bb.vision, {}, [it.image for it in val_items], mv.image_size, 64, True, "val pictures")
    print(f"features {tuple(x.shape)} in {time.time() - t0:.0f} s; withheld cells "
          f"{int((y[..., 0] == IGNORE).sum())} of {y.shape[0] * y.shape[1]}", flush=True)

    report: dict[str, Any] = {"validation_combos": sorted(map(list, VALIDATION_COMBOS)), "variants": {}}
    for kind in args.variants.split(","):
        for epochs in map(int, args.epochs.split(",")):
            torch.manual_seed(args.seed)
            proj = make(kind, bb.vision.channel_blocks, bb.hidden_size, bb.slots)
            t = time.time()
            m = train_alignment(proj, bb.word_table(), bb.hidden_size, x, y, epochs=epochs, lr=mv.align_lr,
                                seed=args.seed, progress=False)
            proj.eval()
            r = read(bb, proj, xv, val_items)
            name = f"{kind}/e{epochs}"
            report["variants"][name] = {"val": r, "align": m, "seconds": round(time.time() - t, 1)}
            w, s = r["withheld"], r["taught"]
            print(f"{name:<14} withheld colour {100 * w['colour']:5.1f} shape {100 * w['shape']:5.1f} "
                  f"bg {100 * w['background']:4.1f} | taught colour {100 * s['colour']:5.1f} "
                  f"shape {100 * s['shape']:5.1f} bg {100 * s['background']:4.1f} | {time.time() - t:.0f} s", flush=True)
            if kind in args.heldout.split(","):
                bb.projector = proj
                report["variants"][name]["heldout"] = h = probe(bb, Shift(), 300)
                for k, v in h.items():
                    print(f"    held-out layouts {k:<7} colour {100 * v['colour_right']:5.1f} shape "
                          f"{100 * v['shape_right']:5.1f} bg {100 * v['read_as_background']:4.1f}", flush=True)
    if args.out:
        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
