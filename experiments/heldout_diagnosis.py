#!/usr/bin/env python
"""Why a model misses on the held-out distribution: accuracy by padding (which answer got the
neutral sentence, before or after), canvas size, object scale and background texture, and, for a
mini-vl model, how often its word projector reads each grid cell right on held-out pictures
against the training generator's own pictures (perception) -- so a drop can be put on the
wording, on the padding or on the eyes.

    python experiments/heldout_diagnosis.py --model runs/demo/model --data runs/demo/data \
        --out runs/demo/heldout_diagnosis.json

`--data` is a `basereward demo` data folder: its `synth-heldout-dist` (held-out distribution,
seed 2) and `synth-heldout` (training generator, seed 2) splits. The pairs' facts (padding,
sizes, scales) are re-derived from the generators, which are deterministic by seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from basereward import metrics
from basereward.data.pairs import load_pairs
from basereward.data.synthetic import assign_categories, example_regions, make_example
from basereward.data.synthetic.base import Example
from basereward.data.synthetic.heldout import make_heldout_example
from basereward.demo import SYNTH_HELDOUT as SEED
from basereward.io import write_json


def padding_key(ex: Example) -> str:
    pad = ex.meta["padding"]
    return {(False, False): "none", (True, False): "chosen only", (False, True): "rejected only",
            (True, True): "both"}[("chosen" in pad, "rejected" in pad)]


def scale_key(ex: Example) -> str:
    objs = ex.meta.get("objects")
    if not objs:
        return "no shapes"
    return "small" if max(o["radius"] for o in objs) / ex.image.size[0] < 0.1 else "large"


def accuracy_by(scores: Sequence[tuple[float, float]], examples: Sequence[Example],
                key: Callable[[Example], Any]) -> dict[str, Any]:
    return metrics.accuracy_by_key([c for c, _ in scores], [r for _, r in scores], [str(key(ex)) for ex in examples])


def projector_reading(backbone: Any, examples: Sequence[Example], paths: Sequence[str]) -> dict[str, float]:
    """Share of grid cells whose every word slot the projector gets right, and of slots."""
    from basereward.data.regions import GroundedImage
    from basereward.models.mini_vl.vision import encode_into_cache

    x = encode_into_cache(backbone.vision, {}, list(paths), backbone.cfg.mini_vl.image_size, progress=False)
    y = backbone.alignment_targets([GroundedImage(p, example_regions(ex, ex.image.size[0]))
                                    for ex, p in zip(examples, paths)])
    with torch.no_grad():
        pred = backbone.word_logits(x).argmax(-1).reshape(y.shape)
    return {"cells_all_right": float((pred == y).all(-1).float().mean()), "slots_right": float((pred == y).float().mean()),
            "images": len(paths)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="a `basereward demo` data folder")
    ap.add_argument("--out", default="", help="write the report here as JSON")
    args = ap.parse_args()

    from basereward.models.reward_model import RewardModel
    from basereward.scoring import Scorer
    from basereward.scoring.interface import score_pairs

    data = Path(args.data)
    pairs = load_pairs(data / "synth-heldout-dist" / "pairs.jsonl")
    cats = assign_categories(len(pairs), SEED)
    examples = [make_heldout_example(SEED, i, c) for i, c in enumerate(cats)]
    if [p.category for p in pairs] != [ex.category for ex in examples] or any(
            p.chosen != ex.chosen for p, ex in zip(pairs, examples)):
        raise SystemExit(f"error: {data / 'synth-heldout-dist'} is not the held-out distribution with seed {SEED}")
    model = RewardModel.from_pretrained(args.model)
    scores = score_pairs(Scorer(model, batch_size=32, progress=True), pairs)
    report: dict[str, Any] = {
        "model": args.model, "pairs": len(pairs),
        "accuracy": metrics.pair_accuracy([c for c, _ in scores], [r for _, r in scores]),
        "by_padding": accuracy_by(scores, examples, padding_key),
        "by_category_and_padding": accuracy_by(scores, examples, lambda ex: f"{ex.category} | {padding_key(ex)}"),
        "by_canvas_size": accuracy_by(scores, examples, lambda ex: ex.image.size[0]),
        "by_object_scale": accuracy_by(scores, examples, scale_key),
        "by_texture": accuracy_by(scores, examples, lambda ex: ex.meta.get("texture", "no shapes")),
    }
    padded, plain = [], []
    for (c, r), ex in zip(scores, examples):
        (padded if "chosen" in ex.meta["padding"] else plain).append(c)
        (padded if "rejected" in ex.meta["padding"] else plain).append(r)
    report["mean_reward"] = {"padded answers": float(np.mean(padded)), "unpadded answers": float(np.mean(plain))}
    backbone = model.backbone
    if getattr(backbone, "word_ids", None) is not None:
        shapes = [i for i, ex in enumerate(examples) if "objects" in ex.meta]
        own_pairs = load_pairs(data / "synth-heldout" / "pairs.jsonl")
        own_cats = assign_categories(len(own_pairs), SEED)
        own = [i for i, c in enumerate(own_cats) if c not in ("reasoning/chart", "general/photo")]
        report["projector"] = {
            "held-out distribution": projector_reading(backbone, [examples[i] for i in shapes],
                                                       [pairs[i].images[0] for i in shapes]),
            "training generator (seed 2)": projector_reading(backbone, [make_example(SEED, i, own_cats[i]) for i in own],
                                                             [own_pairs[i].images[0] for i in own]),
        }
    for name in ("by_padding", "by_canvas_size", "by_object_scale", "by_texture"):
        print(f"{name.replace('_', ' ')}:")
        for k, v in report[name].items():
            print(f"  {k:<16} {100 * v['accuracy']:5.1f}%  ({v['n']} pairs)")
    print(f"accuracy {100 * report['accuracy']:.1f}% over {len(pairs)} pairs; mean reward "
          + ", ".join(f"{k} {v:.3f}" for k, v in report["mean_reward"].items()))
    for k, v in report.get("projector", {}).items():
        print(f"projector on {k}: {100 * v['cells_all_right']:.1f}% of cells all right, "
              f"{100 * v['slots_right']:.1f}% of slots ({v['images']} images)")
    if args.out:
        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
