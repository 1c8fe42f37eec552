"""Peak memory and speed of `data build` and of starting training on its output, by pair count.

For each N: writes a synthetic mix in published layouts (RLAIF-V JSONL rows pointing at 16
shared images, half the pairs; SHP JSONL rows, the other half), then in fresh processes
(so each peak RSS is its own):
  build   `basereward.data.build.build` of a recipe with dedup and 1,000 validation pairs
  train   `load_training_data` on the build + the training plan (lengths column) + the first
          20 micro-batches read through `MicroBatches` (what the trainer does before any model)
and prints one table: pairs/s and peak RSS for both. The goal: peak RSS flat in N (no Python
object per pair is held), >= 20k pairs/s built.

    python benchmarks/data_build.py --n 50000 100000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _write_sources(d: Path, n: int) -> None:
    from PIL import Image

    (d / "img").mkdir(parents=True, exist_ok=True)
    for k in range(16):
        Image.new("RGB", (8, 8), (16 * k, 0, 0)).save(d / "img" / f"{k}.png")
    half = n // 2
    with open(d / "rlaif.jsonl", "w") as fh:
        fh.writelines(json.dumps({"ds_name": "RLAIF-V", "image": f"img/{i % 16}.png", "question": f"What is in image {i}?",
                                 "chosen": f"A red square, number {i}, near the top left corner.",
                                 "rejected": f"A blue circle {i}.", "origin_dataset": "coco", "origin_split": "train",
                                 "idx": i, "image_path": f"img/{i % 16}.png"}) + "\n" for i in range(half))
    with open(d / "shp.jsonl", "w") as fh:
        fh.writelines(json.dumps({"post_id": f"p{i}", "domain": "askscience_train", "upvote_ratio": 0.9,
                                 "history": f"Question number {i}: why is the sky blue?", "c_root_id_A": f"a{i}",
                                 "c_root_id_B": f"b{i}", "created_at_utc_A": 1, "created_at_utc_B": 2, "score_A": 9,
                                 "score_B": 3, "human_ref_A": f"Rayleigh scattering ({i}).", "human_ref_B": f"No idea {i}.",
                                 "labels": 1, "seconds_difference": 1.0, "score_ratio": 3.0}) + "\n" for i in range(n - half))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


_ANON = [0.0]


def _sample_anon() -> None:
    """Peak anonymous RSS (heap, not pages of memory-mapped files, which the OS can drop and
    which ru_maxrss also counts when save_to_disk / training reads the Arrow file)."""
    import threading

    def loop() -> None:
        while True:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("RssAnon:"):
                        _ANON[0] = max(_ANON[0], int(line.split()[1]) / 1024)
            time.sleep(0.02)

    threading.Thread(target=loop, daemon=True).start()


def _child(mode: str, d: Path) -> dict:
    _sample_anon()
    if mode == "build":
        from basereward.data.build import build, parse_recipe

        recipe = parse_recipe({"seed": 0, "validation": 1000, "sources": [
            {"adapter": "rlaif-v", "path": str(d / "rlaif.jsonl")}, {"adapter": "shp", "path": str(d / "shp.jsonl")}]})
        t0 = time.perf_counter()
        stats = build(recipe, d / "built", log=lambda _: None)
        return {"pairs": stats["pairs"], "seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_mb(), "anon_mb": _ANON[0]}
    from basereward.config.schema import DataConfig
    from basereward.data.built import pair_lengths
    from basereward.training.data import load_training_data
    from basereward.training.plan import MicroBatches, StepPlan

    t0 = time.perf_counter()
    train, _ = load_training_data(DataConfig(train=(str(d / "built"),)), seed=0)
    plan = StepPlan(len(train), 128, 4, 1, seed=0, lengths=pair_lengths(train))
    data = MicroBatches(plan, train, lambda groups: groups, rank=0, start_step=0, end_step=1)
    n_read = sum(len(data[k]) for k in range(min(20, len(data))))
    return {"pairs": len(train), "read": n_read, "seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_mb(), "anon_mb": _ANON[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[50_000, 100_000])
    ap.add_argument("--child", choices=["build", "train"])
    ap.add_argument("--dir")
    ap.add_argument("--json", default="", help="also save the rows as JSON here")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, Path(args.dir))))
        return
    rows = []
    for n in args.n:
        with tempfile.TemporaryDirectory() as tmp:
            _write_sources(Path(tmp), n)
            res = {}
            for mode in ("build", "train"):
                out = subprocess.run([sys.executable, __file__, "--child", mode, "--dir", tmp], check=True,
                                     capture_output=True, text=True, env={**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"})
                res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((n, res))
    print(f"{'pairs':>9} {'build s':>8} {'pairs/s':>9} {'build RSS/anon MB':>18} {'train start s':>14} {'train RSS/anon MB':>18}")
    for n, r in rows:
        b, t = r["build"], r["train"]
        print(f"{b['pairs']:>9} {b['seconds']:>8.1f} {b['pairs'] / b['seconds']:>9.0f} "
              f"{b['peak_rss_mb']:>11.0f} / {b['anon_mb']:<4.0f} {t['seconds']:>14.2f} {t['peak_rss_mb']:>11.0f} / {t['anon_mb']:<4.0f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps([{"pairs": n, **r} for n, r in rows], indent=2) + "\n")


if __name__ == "__main__":
    main()
