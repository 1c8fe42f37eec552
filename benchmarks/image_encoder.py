#!/usr/bin/env python
"""What mini-vl's image-encoding path costs per picture, before and after its two speed-ups,
measured in one run.

The frozen EfficientNet-Lite0 encoder reads every picture of the demo once (training, alignment
copies, evaluation: ~5,000 pictures). Two changes made that path faster without changing what it
computes: each BatchNorm is folded into the convolution before it (`vision.fold_batchnorm`), and a
batch of resized uint8 pictures is normalised in one pass (`vision.normalise_pixels`) instead of
each picture in numpy. This script encodes the same rendered pictures both ways, under the demo's
bf16 autocast and in float32, and prints pictures per second, the speed-up, and how far the new
features are from the old ones (float32: rounding only).

    python benchmarks/image_encoder.py                 # ~1 min on 2 CPU cores
    python benchmarks/image_encoder.py --size 384 --images 64
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

from bench_common import best_time, machine, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=320, help="input side (configs/demo.yaml: 320)")
    ap.add_argument("--images", type=int, default=128, help="pictures per timed pass")
    ap.add_argument("--batch", type=int, default=64, help="pictures per encoder call (the demo's)")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes per path; the best counts")
    args = ap.parse_args()

    from PIL import Image

    from basereward.data.pairs import load_pairs
    from basereward.data.synthetic import generate
    from basereward.models.mini_vl import ImageEncoder, efficientnet_lite0
    from basereward.models.mini_vl.vision import IMAGENET_MEAN, IMAGENET_STD, normalise_pixels, resized_pixels

    tmp = tempfile.mkdtemp(prefix="encoder-bench-")
    generate(tmp, n_pairs=args.images, seed=5, progress=False)
    paths = sorted({p.images[0] for p in load_pairs(f"{tmp}/pairs.jsonl") if p.images})[: args.images]
    pictures = [Image.open(p).convert("RGB") for p in paths]  # decoding is not what is measured

    def per_image_numpy(img: Image.Image) -> torch.Tensor:  # the former preprocessing
        arr = np.asarray(img.resize((args.size, args.size), Image.BICUBIC), dtype=np.float32) / 255.0
        arr = (arr - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    new = ImageEncoder(4, tap_max_pool=True).eval()
    old = ImageEncoder(4, tap_max_pool=True).eval()
    old.net = efficientnet_lite0().eval().to(memory_format=torch.channels_last)  # BatchNorm as it ships

    def encode(encoder: ImageEncoder, batched: bool) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for i in range(0, len(pictures), args.batch):
                chunk = pictures[i:i + args.batch]
                if batched:
                    pixels = normalise_pixels(torch.stack([resized_pixels(im, args.size) for im in chunk]))
                else:
                    pixels = torch.stack([per_image_numpy(im) for im in chunk])
                out.append(encoder(pixels))
        return torch.cat(out)

    rows: dict[str, float] = {}
    feats: dict[str, torch.Tensor] = {}
    for dtype in ("bf16", "float32"):
        old.bf16 = new.bf16 = dtype == "bf16"
        for name, enc, batched in (("before", old, False), ("after", new, True)):
            encode(enc, batched)  # warm-up: oneDNN picks its kernels on first use
            best, feats[f"{name} {dtype}"] = best_time(lambda: encode(enc, batched), args.repeats)
            rows[f"{name} {dtype}"] = len(pictures) / best

    def rel(a: str, b: str) -> float:
        return float((feats[a] - feats[b]).norm() / feats[b].norm())

    speedups = {d: rows[f"after {d}"] / rows[f"before {d}"] for d in ("bf16", "float32")}
    drift = {"after float32 vs before float32": rel("after float32", "before float32"),
             "before bf16 vs before float32": rel("before bf16", "before float32"),
             "after bf16 vs before float32": rel("after bf16", "before float32")}
    table = "\n".join([
        f"{len(pictures)} rendered pictures at {args.size}x{args.size}, {args.batch} per encoder call, "
        f"{torch.get_num_threads()} threads",
        f"{'path':<16} {'pictures/s':>10}",
        *(f"{k:<16} {v:10.1f}" for k, v in rows.items()),
        *(f"speed-up ({d}): {s:.2f}x" for d, s in speedups.items()),
        *(f"relative feature difference, {k}: {v:.1e}" for k, v in drift.items()),
    ])
    print(table)
    out = write_results("image_encoder", {
        "machine": machine(), "size": args.size, "pictures": len(pictures), "batch": args.batch,
        "pictures_per_second": rows, "speedup": speedups, "relative_feature_difference": drift}, table)
    print(f"saved to {out}")


if __name__ == "__main__":
    main()
