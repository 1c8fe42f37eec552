#!/usr/bin/env python
"""Scaling curves: scoring time and peak memory vs the number of pairs and vs sequence length.

On the scaled-down Qwen2.5-VL (benchmarks/bench_common.py), each pair one 224 x 224 image (64
visual tokens), the prefix shared (the default). Every point runs in its own process so that its
peak memory is its own: peak resident memory (CPU: ru_maxrss) minus the resident memory after the
model loaded, or CUDA's max_memory_allocated on a GPU. Reported per point: seconds, seconds per
pair, memory; and the exponent of time ~ size^k between neighbouring points (k > 1: faster than
linear).

    python benchmarks/scaling.py               # ~3 min on 2 CPU cores
    python benchmarks/scaling.py --quick
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
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


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def point(path: str, pairs: int, response_words: int, repeats: int) -> dict:
    """One measurement (run in a child process): score `pairs` pairs of ~response_words-word responses."""
    from basereward.data.schema import Group
    from basereward.scoring.scorer import Scorer

    torch.set_grad_enabled(False)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = reward_model("qwen2.5-vl", path=path, max_length=8192, max_prompt_length=512)
    groups = [Group(f"Describe the picture. {words(20, i)}",
                    (words(response_words, 2 * i), words(response_words, 2 * i + 1)), (noise_image(224, i % 8),))
              for i in range(pairs)]
    scorer = Scorer(model, batch_size=16, device=dev)
    scorer.score_groups(groups[:1])  # warm-up
    base = torch.cuda.memory_allocated() if dev == "cuda" else rss_mb()
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t, _ = best_time(lambda: scorer.score_groups(groups), repeats)
    if dev == "cuda":
        mem = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:  # ru_maxrss is in KiB on Linux
        mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    tokens = int(model.collate(groups[:1])["attention_mask"].sum(1).max())
    return {"pairs": pairs, "response_words": response_words, "tokens_per_sequence": tokens, "seconds": t,
            "seconds_per_pair": t / pairs, "peak_memory_mb": round(mem, 1)}


def exponents(xs: list[float], ts: list[float]) -> list[float]:
    return [round(math.log(t1 / t0) / math.log(x1 / x0), 2) for x0, x1, t0, t1 in zip(xs, xs[1:], ts, ts[1:])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="scaling", help="results folder (under benchmarks/results/ unless absolute)")
    ap.add_argument("--point", nargs=4, metavar=("PATH", "PAIRS", "WORDS", "REPEATS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.point:
        p, n, w, r = args.point
        print(json.dumps(point(p, int(n), int(w), int(r))))
        return
    pair_counts, lengths, fixed_pairs, fixed_words = (8, 32, 128), (32, 128, 512, 1536), 8, 64
    if args.quick:
        pair_counts, lengths, fixed_pairs, fixed_words, args.repeats = (2, 4), (8, 16), 2, 8, 1
        if args.out == "scaling":
            args.out = tempfile.mkdtemp(prefix="scaling-quick-")
    path = str(scaled_qwen25vl_dir(tempfile.mkdtemp(prefix="scaling-")))

    def run(n: int, w: int) -> dict:
        res = subprocess.run([sys.executable, __file__, "--point", path, str(n), str(w), str(args.repeats)],
                             capture_output=True, text=True, check=True)
        return json.loads(res.stdout.strip().splitlines()[-1])

    curves = {"pairs": [run(n, fixed_words) for n in pair_counts],
              "length": [run(fixed_pairs, w) for w in lengths]}
    lines = []
    for name, rows in curves.items():
        x = [r["pairs"] if name == "pairs" else r["tokens_per_sequence"] for r in rows]
        k = exponents(x, [r["seconds"] for r in rows])
        lines.append(f"vs {name}: {'pairs':>6} {'tokens/seq':>10} {'seconds':>8} {'s/pair':>8} {'peak MB':>8}  time ~ x^k")
        for i, r in enumerate(rows):
            lines.append(f"{'':<10}{r['pairs']:>6} {r['tokens_per_sequence']:>10} {r['seconds']:>8.2f} "
                         f"{r['seconds_per_pair']:>8.3f} {r['peak_memory_mb']:>8.1f}  {'' if i == 0 else f'k={k[i - 1]}'}")
        for r, e in zip(rows[1:], k):
            r["exponent_from_previous"] = e
    print("\n".join(lines))
    summary = {"time_exponents_vs_pairs": [r.get("exponent_from_previous") for r in curves["pairs"][1:]],
               "time_exponents_vs_length": [r.get("exponent_from_previous") for r in curves["length"][1:]],
               "quick": args.quick}
    out = write_results(args.out, {"benchmark": "scaling", "machine": machine(), "summary": summary, "curves": curves,
                                   "model": "scaled-down Qwen2.5-VL (bench_common), 224px image, prefix shared, "
                                            "batch 16 sequences"}, "\n".join(lines))
    try_plot(out, {"seconds": ([r["pairs"] for r in curves["pairs"]], [r["seconds"] for r in curves["pairs"]])},
             "pairs scored", "seconds", "scoring time vs number of pairs", file="pairs.png", log="xy")
    tokens = [r["tokens_per_sequence"] for r in curves["length"]]
    try_plot(out, {"seconds": (tokens, [r["seconds"] for r in curves["length"]]),
                   "peak MB / 100": (tokens, [r["peak_memory_mb"] / 100 for r in curves["length"]])},
             "tokens per sequence", "seconds (peak MB / 100)", f"scaling vs length ({fixed_pairs} pairs)",
             file="length.png", log="xy")
    print(f"wrote {out}/results.json and table.txt")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
