#!/usr/bin/env python
"""Can a model answer word scenes it never saw? Accuracy per kind on new word scenes
(data/synthetic/word_scenes.py, a seed no training run uses): the LM's skill on a clean picture
written as the projector's words, with no perception in the way.

    python experiments/scene_skill.py --model runs/demo/model [--model ...] --n 150 \
        --out experiments/results/count_scenes/scene_skill_runs.json
"""

from __future__ import annotations

import argparse
import sys

from basereward.data.schema import PreferencePair
from basereward.data.synthetic import word_scenes as ws
from basereward.io import write_json
from basereward.metrics import pair_accuracy


def scenes(kind: str, n: int, seed: int) -> list[PreferencePair]:
    out = []
    for i in range(n):
        prompt, chosen, rejected, _ = ws.make_scene_example(seed, i, kind)
        out.append(PreferencePair(id=f"{kind}-{i}", prompt=prompt, chosen=chosen, rejected=rejected))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, help="a model directory (repeatable)")
    ap.add_argument("--kinds", default="hallucination/count,reasoning/spatial,hallucination/existence")
    ap.add_argument("--n", type=int, default=150, help="scenes per kind")
    ap.add_argument("--seed", type=int, default=99)
    ap.add_argument("--precision", default="bf16-where-fast")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    from basereward.models.reward_model import RewardModel
    from basereward.scoring import Scorer
    from basereward.scoring.interface import score_pairs

    kinds = args.kinds.split(",")
    sets = {k: scenes(k, args.n, args.seed) for k in kinds}
    report = {"seed": args.seed, "n_per_kind": args.n, "models": {}}
    for path in args.model:
        scorer = Scorer(RewardModel.from_pretrained(path), batch_size=32, precision=args.precision)
        row = {}
        for kind, pairs in sets.items():
            scores = score_pairs(scorer, pairs)
            row[kind] = pair_accuracy([c for c, _ in scores], [r for _, r in scores])
        report["models"][path] = row
        print(path + ": " + ", ".join(f"{k.split('/')[1]} {100 * v:.1f}%" for k, v in row.items()), flush=True)
    if args.out:
        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
