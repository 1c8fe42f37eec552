#!/usr/bin/env python
"""Where a model loses on the held-out distribution: the same 400 pairs' facts with one factor of
the distribution at a time taken from the training generator instead (wording, layouts, colour/
shape combinations, padding), and with all four.

    python experiments/heldout_factors.py --model runs/demo/model --out runs/demo/heldout_factors.json

Each split is `generate_heldout(..., shift=Shift(...))` (data/synthetic/heldout.py) with the
held-out distribution's seed, so the k-th pair asks the same kind of question in every split; a
factor's cost is the accuracy it takes away. `--model` is a model, router or ensemble directory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from typing import Any

from basereward import metrics
from basereward.data.synthetic.heldout import Shift, generate_heldout
from basereward.demo import SYNTH_HELDOUT as SEED
from basereward.io import write_json

OFF = dict(wording=False, layout=False, combos=False, padding=False)
SPLITS: dict[str, Shift] = {
    "held-out distribution": Shift(),
    "training wording": Shift(wording=False),
    "training layouts": Shift(layout=False),
    "seen combinations only": Shift(combos=False),
    "no padding": Shift(padding=False),
    "all four from training": Shift(**OFF),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model, router or ensemble directory")
    ap.add_argument("--pairs", type=int, default=400)
    ap.add_argument("--out", default="", help="write the report here as JSON")
    args = ap.parse_args()

    from basereward.load import load_scorer
    from basereward.scoring.interface import score_pairs

    source = load_scorer(args.model, batch_size=32)
    report: dict[str, Any] = {"model": args.model, "seed": SEED, "pairs": args.pairs, "splits": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, shift) in enumerate(SPLITS.items()):
            pairs = generate_heldout(f"{tmp}/{k}", args.pairs, SEED, progress=False, shift=shift)
            scores = score_pairs(source, pairs)
            chosen, rejected = [c for c, _ in scores], [r for _, r in scores]
            by_cat = metrics.accuracy_by_key(chosen, rejected, [p.category for p in pairs])
            report["splits"][name] = {"shift": vars(shift), "accuracy": metrics.pair_accuracy(chosen, rejected),
                                      "per_category": {c: v["accuracy"] for c, v in by_cat.items()}}
            print(f"{name:<24} {100 * report['splits'][name]['accuracy']:5.1f}%", flush=True)
    cats = sorted(next(iter(report["splits"].values()))["per_category"])
    print("\n| split | overall | " + " | ".join(c.split("/")[1] for c in cats) + " |")
    print("|---" * (len(cats) + 2) + "|")
    for name, r in report["splits"].items():
        print(f"| {name} | {100 * r['accuracy']:.1f}% | "
              + " | ".join(f"{100 * r['per_category'][c]:.1f}%" for c in cats) + " |")
    if args.out:
        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
