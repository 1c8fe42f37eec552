#!/usr/bin/env python
"""What mini-vl's frozen image encoder costs per picture on a CPU, by pictures per CNN pass.

The frozen EfficientNet-Lite0 encoder reads every picture of the demo once (training, alignment
copies, evaluation: ~4,000 pictures). Callers hand it batches of 64; on a CPU it runs them
`ImageEncoder.CPU_PICTURES_PER_PASS` (4) at a time, since a pass over 64 pictures at 320x320 no
longer fits its activations in the cores' caches. Measured in one run, under the demo's bf16
autocast and in float32: pictures per second for 64, 16, 8, 4, 2 and 1 pictures per pass, the
speed-up over one pass of 64 (the encoder until the twelfth session) and the largest difference of
the features from it (0.0: the same bits). "folded 4" is the default with every BatchNorm folded
into the convolution before it (`fold_batchnorm` below; measured, not used: under bf16 it moves
the features as much as bf16 itself does, and that alone took the demo's seed-42 model from 69.8%
to 67.2% on the held-out distribution).

    python benchmarks/image_encoder.py                 # ~1.5 min on 2 CPU cores
    python benchmarks/image_encoder.py --size 384 --images 64
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from bench_common import best_time, machine, write_results

PASS_SIZES = (64, 16, 8, 4, 2, 1)


def fold_batchnorm(net: torch.nn.Module) -> torch.nn.Module:
    """EfficientNet-Lite `net` in eval mode with every BatchNorm folded into the convolution before
    it (torch's `fuse_conv_bn_eval`) and replaced by Identity."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net.eval()
    pairs = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
    for block in net._blocks:
        if block._block_args.expand_ratio != 1:
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for owner, conv, bn in pairs:
        setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, bn)))
        setattr(owner, bn, torch.nn.Identity())
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=320, help="input side (configs/demo.yaml: 320)")
    ap.add_argument("--images", type=int, default=128, help="pictures per timed pass")
    ap.add_argument("--batch", type=int, default=64, help="pictures per encoder call (the demo's)")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes per path; the best counts")
    args = ap.parse_args()

    from basereward.data.pairs import load_pairs
    from basereward.data.synthetic import generate
    from basereward.models.mini_vl import ImageEncoder, efficientnet_lite0
    from basereward.models.mini_vl.vision import pixel_batch

    tmp = tempfile.mkdtemp(prefix="encoder-bench-")
    generate(tmp, n_pairs=args.images, seed=5, progress=False)
    paths = sorted({p.images[0] for p in load_pairs(f"{tmp}/pairs.jsonl") if p.images})[: args.images]
    pixels = pixel_batch(paths, args.size)  # decoding and resizing are not what is measured

    plain = ImageEncoder(4, tap_max_pool=True).eval()  # the library's encoder: BatchNorm as it ships
    folded = ImageEncoder(4, tap_max_pool=True).eval()
    folded.net = fold_batchnorm(efficientnet_lite0()).to(memory_format=torch.channels_last)
    default = ImageEncoder.CPU_PICTURES_PER_PASS

    def encode(encoder: ImageEncoder, per_pass: int) -> torch.Tensor:
        encoder.CPU_PICTURES_PER_PASS = per_pass  # on the instance: the class default stays
        with torch.no_grad():
            return torch.cat([encoder(pixels[i:i + args.batch]) for i in range(0, len(pixels), args.batch)])

    paths_run = [(f"{n} per pass", plain, n) for n in PASS_SIZES] + [(f"folded {default}", folded, default)]
    rows: dict[str, float] = {}
    feats: dict[str, torch.Tensor] = {}
    for dtype in ("bf16", "float32"):
        plain.bf16 = folded.bf16 = dtype == "bf16"
        for name, enc, n in paths_run:
            encode(enc, n)  # warm-up: oneDNN picks its kernels on first use
            best, feats[f"{name} {dtype}"] = best_time(lambda: encode(enc, n), args.repeats)
            rows[f"{name} {dtype}"] = len(pixels) / best

    base = f"{args.batch} per pass"
    speedups = {k: v / rows[f"{base} {k.rsplit(' ', 1)[1]}"] for k, v in rows.items()}
    max_diff = {k: float((v - feats[f"{base} {k.rsplit(' ', 1)[1]}"]).abs().max()) for k, v in feats.items()}
    table = "\n".join([
        f"{len(pixels)} rendered pictures at {args.size}x{args.size}, {args.batch} per encoder call, "
        f"{torch.get_num_threads()} threads; the default runs {default} per pass",
        f"{'path':<22} {'pictures/s':>10} {'vs one pass':>12} {'max feature diff':>17}",
        *(f"{k:<22} {v:10.1f} {speedups[k]:11.2f}x {max_diff[k]:17.2e}" for k, v in rows.items()),
    ])
    print(table)
    out = write_results("image_encoder", {
        "machine": machine(), "size": args.size, "pictures": len(pixels), "batch": args.batch,
        "default_pictures_per_pass": default, "pictures_per_second": rows, "speedup_over_one_pass": speedups,
        "max_feature_difference_from_one_pass": max_diff}, table)
    print(f"saved to {out}")


if __name__ == "__main__":
    main()
