#!/usr/bin/env python
"""What `train.mixed_precision: bf16-where-fast` buys on this CPU, measured in one run.

mini-vl as the demo trains it (12 SmolLM2 layers, the top 4 trained, projector frozen, 4x4 image
grid, 8 pairs per forward). Both modes run the same micro-batches (forward + Bradley-Terry
backward, no optimizer step, so both see identical weights), once in float32 and once under
`torch.autocast("cpu", torch.bfloat16)` (what Accelerate's bf16 does on a CPU), and report seconds
per micro-batch, the speed-up, and how far the bf16 rewards are from the float32 ones.

The demo config's `bf16-where-fast` turns bf16 on where the CPU has AVX-512 bf16 instructions and a
short probe (one decoder layer, `training.stages.cpu_bf16_speedup`) measures it >= 1.2x faster;
this script also prints the probe's ratio next to the whole step's, and elsewhere shows what forcing
bf16 would cost.

    python benchmarks/cpu_bf16.py              # ~1 min on 2 CPU cores
    python benchmarks/cpu_bf16.py --batches 2
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time

import torch

from bench_common import machine, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=6, help="micro-batches per mode")
    ap.add_argument("--micro", type=int, default=8, help="pairs per micro-batch")
    args = ap.parse_args()

    from basereward.config import BackboneConfig, HeadConfig, MiniVLConfig, ModelConfig
    from basereward.data.pairs import load_pairs
    from basereward.data.synthetic import generate
    from basereward.losses import reward_loss
    from basereward.models.reward_model import RewardModel
    from basereward.training.stages import cpu_bf16_speedup, cpu_has_native_bf16, resolve_mixed_precision

    tmp = tempfile.mkdtemp(prefix="bf16-bench-")
    generate(tmp, n_pairs=args.batches * args.micro, seed=5, progress=False)
    pairs = load_pairs(f"{tmp}/pairs.jsonl")
    batches = [[p.to_group() for p in pairs[i:i + args.micro]] for i in range(0, len(pairs), args.micro)]

    torch.manual_seed(0)
    bb = BackboneConfig(name="mini-vl", train_lm_layers=4, max_length=128,
                        mini_vl=MiniVLConfig(lm_layers=12, image_grid=4, train_projector=False))
    model = RewardModel(ModelConfig(backbone=bb, head=HeadConfig(zero_init_last=False))).train()
    collated = [model.collate(g) for g in batches]  # collation is not what is measured

    def run(bf16: bool) -> tuple[float, list[torch.Tensor]]:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        out, t0 = [], time.perf_counter()
        for batch in collated:
            model.zero_grad(set_to_none=True)
            with ctx:
                r = model(batch).float().view(-1, 2)
                loss = reward_loss(r[:, 0], r[:, 1])
            loss.backward()
            out.append(r.detach())
        return (time.perf_counter() - t0) / len(collated), out

    run(False), run(True)  # warm-up: oneDNN picks its kernels on first use
    rows: dict[str, float] = {}
    rows["float32"], ref = run(False)
    rows["bf16 autocast"], low = run(True)
    diff = max(float((a - b).abs().max()) for a, b in zip(ref, low))
    gap_ref = torch.cat([r[:, 0] - r[:, 1] for r in ref])
    gap_low = torch.cat([r[:, 0] - r[:, 1] for r in low])
    agree = float(((gap_ref > 0) == (gap_low > 0)).float().mean())

    speedup = rows["float32"] / rows["bf16 autocast"]
    native = cpu_has_native_bf16()
    probe = cpu_bf16_speedup()  # what bf16-where-fast measures at the start of a run
    table = "\n".join([
        f"{'mode':<15} {'s/batch':>8}",
        *(f"{k:<15} {v:8.3f}" for k, v in rows.items()),
        f"speed-up of bf16: {speedup:.2f}x",
        f"max |reward difference| bf16 vs float32: {diff:.2e}; pairs ordered the same: {100 * agree:.1f}%",
        f"bf16-where-fast's probe (one decoder layer, forward + backward): {probe:.2f}x",
        f"native bf16 on this CPU (AVX-512 bf16): {native}; "
        f"bf16-where-fast resolves to: {resolve_mixed_precision('bf16-where-fast')}",
    ])
    print(table)
    out = write_results("cpu_bf16", {
        "machine": machine(), "seconds_per_batch": rows, "speedup": speedup, "max_abs_reward_diff": diff,
        "pair_order_agreement": agree, "probe_speedup": probe, "native_bf16": native, "pairs_per_batch": args.micro,
        "batches": args.batches}, table)
    print(f"saved to {out}")


if __name__ == "__main__":
    main()
