#!/usr/bin/env python
"""Does a model bind a colour to its shape? Existence questions of the held-out distribution by the
kind of object asked about, on three splits of `heldout_factors.py`.

    python experiments/existence_binding.py --model runs/demo/model --out runs/demo/existence_binding.json

An absent object is a *colour distractor* when the picture shows its colour on another shape ("a
yellow triangle" over a yellow circle), a *shape distractor* when it shows its shape in another
colour, else *unrelated*. A model that only checks whether the asked colour is in the picture
answers every present object and every shape distractor right and every colour distractor wrong.
`--model` is a model, router or ensemble directory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from typing import Any

from basereward.data.synthetic.heldout import Shift, generate_heldout, make_heldout_example
from basereward.demo import SYNTH_HELDOUT as SEED
from basereward.io import write_json

EXIST = "hallucination/existence"
SPLITS: dict[str, Shift] = {
    "held-out distribution": Shift(),
    "seen combinations only": Shift(combos=False),
    "all four from training": Shift(wording=False, layout=False, combos=False, padding=False),
}
KINDS = ("present", "absent: colour distractor", "absent: shape distractor", "absent: unrelated")


def kind_of(meta: dict[str, Any]) -> str:
    if meta["present"]:
        return KINDS[0]
    q = (meta["query"]["shape"], meta["query"]["colour"])
    others = [(o["shape"], o["colour"]) for o in meta["objects"] if (o["shape"], o["colour"]) != q]
    if any(c == q[1] for _, c in others):
        return KINDS[1]
    if any(s == q[0] for s, _ in others):
        return KINDS[2]
    return KINDS[3]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model, router or ensemble directory")
    ap.add_argument("--pairs", type=int, default=800, help="pairs of every category generated (existence: ~1/7)")
    ap.add_argument("--out", default="", help="write the report here as JSON")
    args = ap.parse_args()

    from basereward.load import load_scorer
    from basereward.scoring.interface import score_pairs

    source = load_scorer(args.model, batch_size=32)
    report: dict[str, Any] = {"model": args.model, "seed": SEED, "splits": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, shift) in enumerate(SPLITS.items()):
            pairs = [p for p in generate_heldout(f"{tmp}/{k}", args.pairs, SEED, progress=False, shift=shift)
                     if p.category == EXIST]
            scores = score_pairs(source, pairs)
            right: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for p, (c, r) in zip(pairs, scores):
                meta = make_heldout_example(SEED, int(p.id.rsplit("-", 1)[1]), EXIST, shift).meta
                for key in (kind_of(meta), "all"):
                    right[key][0] += c > r
                    right[key][1] += 1
            report["splits"][name] = {key: {"right": a, "pairs": n, "accuracy": a / n} for key, (a, n) in right.items()}
    print("| split | all | " + " | ".join(KINDS) + " |")
    print("|---" * (len(KINDS) + 2) + "|")
    for name, r in report["splits"].items():
        cells = [f"{100 * r[k]['accuracy']:.0f}% ({r[k]['right']}/{r[k]['pairs']})" if k in r else "-"
                 for k in ("all", *KINDS)]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.out:
        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
