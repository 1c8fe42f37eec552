#!/usr/bin/env python
"""P1: scoring GRPO rollout groups (N responses to one image + prompt) vs per-sample batched scoring.

The anchors (TRL's model reward, OpenRLHF's remote RM, verl's RM worker) score every rollout as an
independent sequence: the image is re-encoded and the prompt re-read N times. Three ways are timed
on the same model and the same inputs, in one run:

  per-sample   each (image, prompt, response) its own sequence, batched 16 at a time (the anchors)
  image once   whole groups, each group's image encoded once; every sequence still runs in full
  prefix once  whole groups with the prefix (chat template + image tokens + prompt) run once on a
               KV cache and the responses on top (`share_prefix`, the default)

over group sizes 4, 8, 16 and two prefix:response shapes, on the embedded mini-vl (4 SmolLM2
layers) and on a scaled-down Qwen2.5-VL (benchmarks/bench_common.py: random weights, a 448 x 448
image = 256 visual tokens). Every way's rewards are checked equal (max |difference| reported).
The last line printed is one JSON object: `speedup_8` is per-sample / prefix-once time at 8
rollouts with the prefix at least as long as a response, on the backbone where it is lowest.

    python benchmarks/group_scoring.py            # ~5 min on 2 CPU cores
    python benchmarks/group_scoring.py --quick    # smoke test: a few seconds after the models load
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

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

# (name, prompt words, response words): the first has the prefix (image + prompt) longer than a
# response, the second a short prompt under long responses.
SHAPES = [("long prompt", 120, 60), ("long responses", 10, 250)]
WAYS = ("per-sample", "image once", "prefix once")


def groups_for(n_prompts: int, group_size: int, prompt_words: int, response_words: int, image_px: int):
    from basereward.data.schema import Group

    return [Group(f"Look at the picture. {words(prompt_words, p)} What is shown?",
                  tuple(f"{words(response_words - (k % 4), 100 * p + k)}." for k in range(group_size)),
                  (noise_image(image_px, p),)) for p in range(n_prompts)]


def measure(shared, full, groups, repeats: int, batch_size: int) -> dict:
    from basereward.data.schema import Group
    from basereward.scoring.scorer import Scorer

    singles = [Group(g.prompt, (r,), g.images) for g in groups for r in g.responses]
    flat = lambda rows: [x for row in rows for x in row]
    runs = {
        "per-sample": lambda: flat(Scorer(full, batch_size=batch_size, device="cpu").score_groups(singles)),
        "image once": lambda: flat(Scorer(full, batch_size=batch_size, device="cpu").score_groups(groups)),
        "prefix once": lambda: flat(Scorer(shared, batch_size=batch_size, device="cpu").score_groups(groups)),
    }
    seconds, rewards = {}, {}
    for way, fn in runs.items():
        seconds[way], rewards[way] = best_time(fn, repeats)
    ref = torch.tensor(rewards["per-sample"])
    diff = max(float((torch.tensor(r) - ref).abs().max()) for r in rewards.values())
    return {"seconds": seconds, "max_abs_reward_diff": diff,
            "speedup": {w: seconds["per-sample"] / seconds[w] for w in WAYS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one small case per backbone (smoke test)")
    ap.add_argument("--prompts", type=int, default=4, help="prompts (groups) per case")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per way (the fastest counts)")
    ap.add_argument("--backbones", default="qwen2.5-vl,mini-vl")
    ap.add_argument("--out", default="group-scoring", help="results folder (under benchmarks/results/ unless absolute)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    sizes, shapes, repeats, image_px = (4, 8, 16), SHAPES, args.repeats, 448
    if args.quick:
        sizes, shapes, repeats, image_px = (4,), [("long prompt", 20, 10)], 1, 112
        args.prompts = 1
        if args.out == "group-scoring":  # a smoke test never replaces the recorded results
            args.out = tempfile.mkdtemp(prefix="p1-quick-")

    backbones = {}
    for name in args.backbones.split(","):
        if name == "qwen2.5-vl":
            path = str(scaled_qwen25vl_dir(tempfile.mkdtemp(prefix="p1-")))
            kw = dict(path=path, max_length=2048, max_prompt_length=1024)
        else:
            kw = dict(lm_layers=2 if args.quick else 4, max_length=1024, max_prompt_length=512)
        backbones[name] = (reward_model(name, share_prefix=True, **kw), reward_model(name, share_prefix=False, **kw))

    cases, lines = [], [f"{'backbone':<11} {'shape':<17} {'N':>3} {'prefix':>6} {'resp':>5} "
                        + " ".join(f"{w + ' s':>13}" for w in WAYS) + f" {'speed-up':>9} {'img-once':>9}"]
    for name, (shared, full) in backbones.items():
        for shape, pw, rw in shapes:
            for n in sizes:
                groups = groups_for(args.prompts, n, pw, rw, image_px)
                batch = shared.collate(groups[:1])
                prefix_tokens = int(batch["prefix_mask"].sum())
                resp_tokens = float(batch["resp_mask"].sum(1).float().mean())
                r = measure(shared, full, groups, repeats, batch_size=16)
                cases.append({"backbone": name, "shape": shape, "group_size": n, "prompts": args.prompts,
                              "prefix_tokens": prefix_tokens, "mean_response_tokens": resp_tokens, **r})
                lines.append(f"{name:<11} {shape:<17} {n:>3} {prefix_tokens:>6} {resp_tokens:>5.0f} "
                             + " ".join(f"{r['seconds'][w]:>13.3f}" for w in WAYS)
                             + f" {r['speedup']['prefix once']:>8.2f}x {r['speedup']['image once']:>8.2f}x")
                print(lines[-1], flush=True)
    # Batches the prefix-once way ran in full after all (mini-vl always shares: it keeps no count).
    fell_back = {name: getattr(shared.backbone, "unshared_batches", 0) for name, (shared, _) in backbones.items()}

    target = [c for c in cases if c["group_size"] == (4 if args.quick else 8) and c["prefix_tokens"] >= c["mean_response_tokens"]]
    low = min(target, key=lambda c: c["speedup"]["prefix once"])
    summary = {
        "speedup_8": round(low["speedup"]["prefix once"], 3),
        "speedup_8_backbone": low["backbone"],
        "speedup_8_by_backbone": {c["backbone"]: round(c["speedup"]["prefix once"], 3) for c in target},
        "image_once_speedup_8_by_backbone": {c["backbone"]: round(c["speedup"]["image once"], 3) for c in target},
        "max_abs_reward_diff": max(c["max_abs_reward_diff"] for c in cases),
        "unshared_batches": fell_back,
        "quick": args.quick,
    }
    data = {"benchmark": "P1 group scoring", "machine": machine(), "summary": summary, "cases": cases,
            "models": {"qwen2.5-vl": "bench_common.QWEN_TEXT / QWEN_VISION, random weights, 448px image = 256 tokens",
                       "mini-vl": "embedded SmolLM2-135M (first 4 layers) + EfficientNet-lite0, 3x3 image grid"}}
    out = write_results(args.out, data, "\n".join(lines))
    series = {}
    for c in cases:
        x, y = series.setdefault(f"{c['backbone']}, {c['shape']}", ([], []))
        x.append(c["group_size"])
        y.append(c["speedup"]["prefix once"])
    try_plot(out, series, "rollouts per prompt (group size)", "speed-up vs per-sample scoring",
             "P1: prefix-once group scoring")
    print(f"wrote {out}/results.json and table.txt (speed-up = per-sample / prefix-once; img-once = per-sample / image-once)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
