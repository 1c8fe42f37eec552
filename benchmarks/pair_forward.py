#!/usr/bin/env python
"""P2: a training step on preference pairs, chosen and rejected sharing the image (+ prefix) vs
encoded separately, measured in one run on the same model and pairs.

  separate      TRL / LLaMA-Factory: chosen and rejected are two independent sequences in one
                batch (chosen then rejected), each with its own copy of the image and prompt
  image once    our collate: a pair is a group of two, its image encoded once; both sequences run in full
  prefix once   the pair's prefix (template + image tokens + prompt) runs once on a KV cache and
                both responses on top, with autograd through the cache (`share_prefix`)

Each way runs the same micro-batches: forward, Bradley-Terry loss, backward (no optimizer step,
so every way sees identical weights). The losses must agree to 1e-5 (asserted). Image-heavy pairs:
one 448 x 448 image (256 visual tokens on Qwen2.5-VL), a short question, ~40-token responses.

    python benchmarks/pair_forward.py             # ~2 min on 2 CPU cores
    python benchmarks/pair_forward.py --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (
    best_time,
    machine,
    noise_image,
    reward_model,
    scaled_qwen25vl_dir,
    try_plot,
    words,
    write_results,
)

WAYS = ("separate", "image once", "prefix once")


def pairs_for(n: int, image_px: int, response_words: int):
    from basereward.data.schema import Group

    return [Group(f"Which shape is on the left? {words(12, i)}",
                  (words(response_words, 2 * i), words(response_words + 5, 2 * i + 1)), (noise_image(image_px, i),))
            for i in range(n)]


def step_fn(model, batches):
    from basereward.losses import bradley_terry

    def run() -> list[float]:
        losses = []
        for batch, split in batches:
            model.zero_grad(set_to_none=True)
            r = model(batch).float()
            # separate: (chosen..., rejected...) as TRL concatenates them; grouped: (c0, r0, c1, r1, ...)
            chosen, rejected = r.chunk(2) if split else (r[0::2], r[1::2])
            loss = bradley_terry(chosen, rejected).mean()
            loss.backward()
            losses.append(loss.item())
        return losses
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--pairs", type=int, default=4, help="pairs per micro-batch")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backbones", default="qwen2.5-vl,mini-vl")
    ap.add_argument("--out", default="pair-forward", help="results folder (under benchmarks/results/ unless absolute)")
    args = ap.parse_args()
    image_px, resp = 448, 40
    if args.quick:
        args.pairs, args.batches, args.repeats, image_px, resp = 2, 1, 1, 112, 8
        if args.out == "pair-forward":
            args.out = tempfile.mkdtemp(prefix="p2-quick-")
    from basereward.data.schema import Group

    rows, lines = {}, [f"{'backbone':<11} " + " ".join(f"{w + ' s/step':>18}" for w in WAYS)
                       + f" {'speed-up':>9} {'img-once':>9} {'|dloss|':>9}"]
    for name in args.backbones.split(","):
        if name == "qwen2.5-vl":
            kw = dict(path=str(scaled_qwen25vl_dir(tempfile.mkdtemp(prefix="p2-"))), max_length=1024, max_prompt_length=512)
        else:
            kw = dict(lm_layers=2 if args.quick else 4, max_length=512, max_prompt_length=384)
        shared = reward_model(name, share_prefix=True, **kw).train()
        full = reward_model(name, share_prefix=False, **kw).train()
        data = [pairs_for(args.pairs, image_px, resp) for _ in range(args.batches)]
        # Collation is not what is measured: every way's batches are built up front.
        sep = [(full.collate([Group(g.prompt, (g.responses[0],), g.images) for g in b]
                             + [Group(g.prompt, (g.responses[1],), g.images) for g in b]), True) for b in data]
        grouped_full = [(full.collate(b), False) for b in data]
        grouped_shared = [(shared.collate(b), False) for b in data]
        seconds, losses = {}, {}
        for way, model, batches in (("separate", full, sep), ("image once", full, grouped_full),
                                    ("prefix once", shared, grouped_shared)):
            t, losses[way] = best_time(step_fn(model, batches), args.repeats)
            seconds[way] = t / len(batches)
        dloss = max(abs(a - b) for w in WAYS for a, b in zip(losses[w], losses["separate"]))
        assert dloss < 1e-5, f"{name}: losses differ by {dloss:.2e}"
        rows[name] = {"seconds_per_step": seconds, "speedup": {w: seconds["separate"] / seconds[w] for w in WAYS},
                      "max_abs_loss_diff": dloss, "pairs_per_step": args.pairs,
                      "prefix_tokens": int(grouped_shared[0][0]["prefix_mask"][0].sum()),
                      "response_tokens": float(grouped_shared[0][0]["resp_mask"].sum(1).float().mean())}
        lines.append(f"{name:<11} " + " ".join(f"{seconds[w]:>18.3f}" for w in WAYS)
                     + f" {rows[name]['speedup']['prefix once']:>8.2f}x {rows[name]['speedup']['image once']:>8.2f}x"
                     + f" {dloss:>9.1e}")
        print(lines[-1], flush=True)
    summary = {"speedup_by_backbone": {k: round(v["speedup"]["prefix once"], 3) for k, v in rows.items()},
               "image_once_speedup_by_backbone": {k: round(v["speedup"]["image once"], 3) for k, v in rows.items()},
               "max_abs_loss_diff": max(v["max_abs_loss_diff"] for v in rows.values()), "quick": args.quick}
    out = write_results(args.out, {"benchmark": "P2 pair forward", "machine": machine(), "summary": summary,
                                   "backbones": rows}, "\n".join(lines))
    try_plot(out, {name: (list(WAYS), [r["seconds_per_step"][w] for w in WAYS]) for name, r in rows.items()},
             "way", "seconds per training step", "P2: pair forward + backward", bars=True)
    print(f"wrote {out}/results.json and table.txt (speed-up = separate / prefix-once, training step)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
