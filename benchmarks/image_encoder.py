#!/usr/bin/env python
"""What mini-vl's image-encoding path costs per picture, three ways, measured in one run.

The frozen EfficientNet-Lite0 encoder reads every picture of the demo once (training, alignment
copies, evaluation: ~5,000 pictures). "before": each picture normalised on its own in numpy (the
encoder path until the eleventh session); "after": a batch of resized uint8 pictures normalised in
one pass (`vision.normalise_pixels`, the same values bit for bit; the default); "folded": the
same with every BatchNorm folded into the convolution before it (`fold_batchnorm` below; measured,
not used: under bf16 it moves the features as much as bf16 itself does, and that alone took the
demo's seed-42 model from 69.8% to 67.2% on the held-out distribution). Under the demo's bf16
autocast and in float32: pictures per second, speed-ups over "before", and how far each path's
features are from float32 "before".

    python benchmarks/image_encoder.py                 # ~1 min on 2 CPU cores
    python benchmarks/image_encoder.py --size 384 --images 64
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

from bench_common import best_time, machine, write_results


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

    from PIL import Image

    from basereward.data.pairs import load_pairs
    from basereward.data.synthetic import generate
    from basereward.models.mini_vl import ImageEncoder, efficientnet_lite0
    from basereward.models.mini_vl.vision import IMAGENET_MEAN, IMAGENET_STD, pixel_batch

    tmp = tempfile.mkdtemp(prefix="encoder-bench-")
    generate(tmp, n_pairs=args.images, seed=5, progress=False)
    paths = sorted({p.images[0] for p in load_pairs(f"{tmp}/pairs.jsonl") if p.images})[: args.images]
    pictures = [Image.open(p).convert("RGB") for p in paths]  # decoding is not what is measured

    def per_image_numpy(img: Image.Image) -> torch.Tensor:  # the former preprocessing
        arr = np.asarray(img.resize((args.size, args.size), Image.BICUBIC), dtype=np.float32) / 255.0
        arr = (arr - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    plain = ImageEncoder(4, tap_max_pool=True).eval()  # the library's encoder: BatchNorm as it ships
    folded = ImageEncoder(4, tap_max_pool=True).eval()
    folded.net = fold_batchnorm(efficientnet_lite0()).to(memory_format=torch.channels_last)

    def encode(encoder: ImageEncoder, batched: bool) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for i in range(0, len(pictures), args.batch):
                chunk = pictures[i:i + args.batch]
                if batched:
                    pixels = pixel_batch(chunk, args.size)
                else:
                    pixels = torch.stack([per_image_numpy(im) for im in chunk])
                out.append(encoder(pixels))
        return torch.cat(out)

    rows: dict[str, float] = {}
    feats: dict[str, torch.Tensor] = {}
    for dtype in ("bf16", "float32"):
        plain.bf16 = folded.bf16 = dtype == "bf16"
        for name, enc, batched in (("before", plain, False), ("after", plain, True), ("folded", folded, True)):
            encode(enc, batched)  # warm-up: oneDNN picks its kernels on first use
            best, feats[f"{name} {dtype}"] = best_time(lambda: encode(enc, batched), args.repeats)
            rows[f"{name} {dtype}"] = len(pictures) / best

    def rel(a: str, b: str) -> float:
        return float((feats[a] - feats[b]).norm() / feats[b].norm())

    speedups = {f"{name} {d}": rows[f"{name} {d}"] / rows[f"before {d}"]
                for name in ("after", "folded") for d in ("bf16", "float32")}
    drift = {f"{k} vs before float32": rel(k, "before float32")
             for k in ("after float32", "folded float32", "before bf16", "after bf16", "folded bf16")}
    table = "\n".join([
        f"{len(pictures)} rendered pictures at {args.size}x{args.size}, {args.batch} per encoder call, "
        f"{torch.get_num_threads()} threads",
        f"{'path':<16} {'pictures/s':>10}",
        *(f"{k:<16} {v:10.1f}" for k, v in rows.items()),
        *(f"speed-up over before, {k}: {v:.2f}x" for k, v in speedups.items()),
        *(f"relative feature difference, {k}: {v:.1e}" for k, v in drift.items()),
    ])
    print(table)
    out = write_results("image_encoder", {
        "machine": machine(), "size": args.size, "pictures": len(pictures), "batch": args.batch,
        "pictures_per_second": rows, "speedup": speedups, "relative_feature_difference": drift}, table)
    print(f"saved to {out}")


if __name__ == "__main__":
    main()
