#!/usr/bin/env python
"""Do the demo's visual models of several seeds, averaged, transfer better than each one?

    python experiments/seed_ensemble.py --data runs/demo/data --models runs/s42/model runs/s7/model \
        --out runs/seed_ensemble.json

Each model (trained with `basereward demo --no-text-rm data.text_ratio=0 train.seed=N`) and the
mean of their z-scored rewards (`ensemble.fit(normalize=True)`: each member's mean and spread from
its rewards on the demo's 200 validation pairs, `<data>/synth-val`) are scored on the held-out
distribution (`<data>/synth-heldout-dist`) with images in place and shuffled
(`eval.visual_split.visual_report`), under the demo's bf16-where-fast precision.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from basereward.data.pairs import load_pairs
from basereward.ensemble.combine import fit
from basereward.eval.visual_split import report_line, visual_report
from basereward.io import write_json
from basereward.load import load_scorer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the demo's data folder (runs/demo/data)")
    ap.add_argument("--models", nargs="+", required=True, help="two or more model directories")
    ap.add_argument("--out", default="", help="write the report here as JSON")
    args = ap.parse_args()
    if len(args.models) < 2:
        ap.error("--models takes two or more model directories")

    data = Path(args.data)
    heldout = load_pairs(data / "synth-heldout-dist" / "pairs.jsonl")
    val = load_pairs(data / "synth-val" / "pairs.jsonl")
    members = [load_scorer(m, batch_size=32, precision="bf16-where-fast") for m in args.models]
    ensemble = fit(members, val, method="mean", normalize=True, names=[Path(m).parent.name for m in args.models])
    report = {"models": args.models, "validation": ensemble.validation, "held_out_distribution": {}}
    for name, source in [*zip(args.models, members), ("mean of z-scores", ensemble)]:
        r = visual_report(source, heldout)
        report["held_out_distribution"][name] = r
        print(f"{name}: {report_line(r)}", flush=True)
    if args.out:
        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
