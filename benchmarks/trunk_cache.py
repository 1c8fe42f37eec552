#!/usr/bin/env python
"""What the frozen-trunk cache (`model.backbone.mini_vl.cache_trunk`) buys on the embedded default, measured in one run.

mini-vl as the demo trains it: 12 SmolLM2 layers, the top 4 trained, 4x4 image grid, 8 pairs per
forward. Each mode runs the same micro-batches (forward + Bradley-Terry backward, no optimizer
step, so every mode sees identical weights) and reports seconds per micro-batch:

  projector trained      `mini_vl.train_projector: true`: gradients flow through all 12 layers to the projector
  trunk frozen           `mini_vl.train_projector: false`: backward stops at the first trained layer
  cache, first visit     `mini_vl.cache_trunk`: the frozen trunk runs without autograd and is stored
  cache, later visits    only the 4 trained layers run (every epoch after the first)

It also checks that cached rewards equal uncached ones (max |difference|).

    python benchmarks/trunk_cache.py            # ~30 s on 2 CPU cores
    python benchmarks/trunk_cache.py --batches 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=8, help="micro-batches per mode")
    ap.add_argument("--micro", type=int, default=8, help="pairs per micro-batch")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()

    from basereward.config import BackboneConfig, HeadConfig, MiniVLConfig, ModelConfig
    from basereward.data.pairs import load_pairs
    from basereward.data.synthetic import generate
    from basereward.losses import reward_loss
    from basereward.models.reward_model import RewardModel

    tmp = tempfile.mkdtemp(prefix="trunk-bench-")
    generate(tmp, n_pairs=args.batches * args.micro, seed=5, progress=False)
    pairs = load_pairs(f"{tmp}/pairs.jsonl")
    batches = [[p.to_group() for p in pairs[i:i + args.micro]] for i in range(0, len(pairs), args.micro)]

    def build(train_projector: bool) -> RewardModel:
        torch.manual_seed(0)
        bb = BackboneConfig(name="mini-vl", train_lm_layers=4, max_length=128,
                            mini_vl=MiniVLConfig(lm_layers=12, image_grid=4, train_projector=train_projector))
        return RewardModel(ModelConfig(backbone=bb, head=HeadConfig(zero_init_last=False))).train()

    def run(model: RewardModel) -> tuple[float, list[torch.Tensor]]:
        collated = [model.collate(g) for g in batches]  # collation is not what is measured
        out, t0 = [], time.perf_counter()
        for batch in collated:
            model.zero_grad(set_to_none=True)
            r = model(batch).float().view(-1, 2)
            reward_loss(r[:, 0], r[:, 1]).backward()
            out.append(r.detach())
        return (time.perf_counter() - t0) / len(collated), out

    rows: dict[str, float] = {}
    rows["projector trained"], _ = run(build(True))
    frozen = build(False)
    rows["trunk frozen"], ref = run(frozen)
    frozen.backbone.enable_trunk_cache()
    rows["cache, first visit"], first = run(frozen)
    rows["cache, later visits"], later = run(frozen)
    frozen.backbone.disable_trunk_cache()
    diff = max(float((a - b).abs().max()) for a, b in zip(ref + ref, first + later))

    base = rows["projector trained"]
    print(f"{'mode':<22} {'s/batch':>8} {'speed-up':>9}")
    for k, v in rows.items():
        print(f"{k:<22} {v:8.2f} {base / v:8.2f}x")
    print(f"max |reward difference| cached vs uncached: {diff:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seconds_per_batch": rows, "speedup": {k: base / v for k, v in rows.items()},
                       "max_abs_reward_diff": diff, "pairs_per_batch": args.micro}, f, indent=2)


if __name__ == "__main__":
    main()
