#!/usr/bin/env python
"""P5: achieved FLOP/s of scoring on the causal-LM path as a fraction of this machine's matmul peak,
both measured in the same run.

  peak      torch.matmul of two n x n float32 matrices (2 n^3 FLOPs), the fastest of several runs
  scoring   `Scorer.score_groups` on the `causal-lm` backbone with the embedded SmolLM2-135M
            (30 layers, hidden 576, float32), batches of >= 8 sequences; its FLOPs are counted by
            torch's FlopCounterMode on one run (matmuls and attention), its time measured on others

Both with the prefix shared (fewer FLOPs: each prompt once) and in full (every token runs).

    python benchmarks/flops.py                 # ~2 min on 2 CPU cores
    python benchmarks/flops.py --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import best_time, machine, reward_model, try_plot, words, write_results


def matmul_peak(n: int, repeats: int) -> float:
    """FLOP/s of an n x n float32 matmul (device of the run)."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    torch.matmul(a, b)  # warm-up
    t, _ = best_time(lambda: torch.matmul(a, b), repeats)
    return 2 * n**3 / t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=8, help="sequences per forward (>= 8)")
    ap.add_argument("--groups", type=int, default=2, help="prompt groups scored per run")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="flops", help="results folder (under benchmarks/results/ unless absolute)")
    args = ap.parse_args()
    n, prompt_w, resp_w = 2048, 100, 60
    if args.quick:
        # The peak keeps its full size (a smaller matmul under-reads it): ~1 s.
        prompt_w, resp_w, args.groups, args.repeats, args.batch = 20, 10, 1, 1, 8
        if args.out == "flops":
            args.out = tempfile.mkdtemp(prefix="p5-quick-")
    from torch.utils.flop_counter import FlopCounterMode

    from basereward.data.schema import Group
    from basereward.models.mini_vl.weights import smollm2_dir
    from basereward.scoring.scorer import Scorer

    torch.set_grad_enabled(False)
    peak = matmul_peak(n, max(3, args.repeats))
    # Groups of `batch` responses to one prompt: every forward holds `batch` sequences.
    groups = [Group(words(prompt_w, g), tuple(words(resp_w - k % 5, 50 * g + k) for k in range(args.batch)))
              for g in range(args.groups)]
    rows, lines = {}, [f"{'path':<14} {'GFLOP':>8} {'seconds':>8} {'GFLOP/s':>8} {'of peak':>8}"]
    for share in (False, True):
        model = reward_model("causal-lm", path=str(smollm2_dir()), share_prefix=share, max_length=1024,
                             max_prompt_length=512)
        scorer = Scorer(model, batch_size=args.batch, device="cuda" if torch.cuda.is_available() else "cpu")
        scorer.score_groups(groups[:1])  # warm-up
        counter = FlopCounterMode(display=False)
        with counter:
            scorer.score_groups(groups)
        flops = counter.get_total_flops()
        t, _ = best_time(lambda: scorer.score_groups(groups), args.repeats)
        key = "prefix shared" if share else "full sequences"
        rows[key] = {"flops": flops, "seconds": t, "flops_per_s": flops / t, "fraction_of_peak": flops / t / peak}
        lines.append(f"{key:<14} {flops / 1e9:>8.1f} {t:>8.2f} {flops / t / 1e9:>8.1f} {flops / t / peak:>7.1%}")
        print(lines[-1], flush=True)
    lines.append(f"matmul peak ({n}x{n} float32): {peak / 1e9:.1f} GFLOP/s")
    print(lines[-1])
    summary = {"matmul_peak_gflops": round(peak / 1e9, 2), "batch": args.batch,
               "fraction_of_peak": {k: round(v["fraction_of_peak"], 3) for k, v in rows.items()},
               "quick": args.quick}
    out = write_results(args.out, {"benchmark": "P5 FLOP/s", "machine": machine(), "summary": summary, "paths": rows,
                                   "model": "SmolLM2-135M-Instruct (embedded), causal-lm backbone, float32, sdpa"},
                        "\n".join(lines))
    try_plot(out, {"achieved": (list(rows), [100 * r["fraction_of_peak"] for r in rows.values()])},
             "scoring path", "% of the measured matmul peak", f"P5: FLOP/s at batch {args.batch}", bars=True)
    print(f"wrote {out}/results.json and table.txt")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
