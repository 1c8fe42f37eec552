#!/usr/bin/env python
"""mini-vl with hard image words: each grid cell's slots read the one word the projector ranks
first (a one-hot over its vocabulary) instead of the softmax-weighted mean of the vocabulary's
embeddings. On training-style pictures the projector is confident and the two barely differ; on
the held-out distribution's pictures it is not, and the LM reads blends it never saw in training.

    # a trained model, scored with soft (as trained), hard or sharpened (t0.5: softmax at
    # temperature 0.5) words on the held-out distribution of its demo data folder
    python experiments/hard_words.py score --model runs/demo/model --data runs/demo/data --modes soft,hard,t0.5 --out F
    # the demo's visual model trained and scored with hard words
    python experiments/hard_words.py train --out runs/hard-words --seed 42
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

import basereward.models.mini_vl.model as mini_vl_model
from basereward.io import write_json
from basereward.models.mini_vl.projector import word_scores

_SOFT = mini_vl_model.soft_words


def words(mode: str) -> Any:
    """A stand-in for `projector.soft_words`: "soft" (the library's), "hard", or "t<T>"."""
    if mode == "soft":
        return _SOFT

    def read(out: torch.Tensor, table: torch.Tensor, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
        logits = word_scores(out, table, hidden)
        if mode == "hard":
            weights = torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
        elif mode.startswith("t"):
            weights = torch.softmax(logits.float() / float(mode[1:]), dim=-1).to(logits.dtype)
        else:
            raise SystemExit(f"error: unknown mode {mode!r} (soft, hard, t<temperature>)")
        return weights @ table.to(logits.dtype), logits

    return read


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score")
    s.add_argument("--model", required=True)
    s.add_argument("--data", required=True, help="the demo's data folder (synth-heldout-dist/pairs.jsonl)")
    s.add_argument("--modes", default="soft,hard")
    s.add_argument("--out", default="")
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    if args.cmd == "train":
        from basereward.demo import run_demo

        mini_vl_model.soft_words = words("hard")
        run_demo(args.out, ["data.text_ratio=0", f"train.seed={args.seed}"], text_rm=False)
        return 0
    from basereward.data.pairs import load_pairs
    from basereward.eval.visual_split import report_line, visual_report
    from basereward.load import load_scorer

    pairs = load_pairs(f"{args.data}/synth-heldout-dist/pairs.jsonl")
    report: dict[str, Any] = {"model": args.model}
    for mode in args.modes.split(","):
        mini_vl_model.soft_words = words(mode)
        scorer = load_scorer(args.model, batch_size=32, precision="bf16-where-fast")
        report[mode] = r = visual_report(scorer, pairs)
        print(f"{mode:<5} {report_line(r)}", flush=True)
    if args.out:
        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
