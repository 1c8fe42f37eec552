"""Can a bar's value be read from mini-vl's frozen encoder features at all?

A linear probe on the 4x4 grid features of the cell holding a bar's top (plus that cell's row),
trained on the training generator's charts and tested on the held-out distribution's charts
(other chart style: narrow bars, labels on the right). The label is the value's tens digit (what a
word slot could carry). Prints accuracy per feature set; `--out` saves the JSON.

    python experiments/chart_probe.py --train runs/demo/data/synth-train/regions.jsonl \
        --n-test 150
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from basereward.data.regions import load_regions
from basereward.models.mini_vl.vision import ImageEncoder, encode_into_cache

PLOT = 0.83  # plot-area height as a fraction of the canvas (layouts.py: 0.07 .. 0.9)
GRID = 4


def bars(path: str) -> list[tuple[str, int, int, int]]:
    """(image, cell, row, tens digit) of every bar top in a regions file."""
    out = []
    for item in load_regions(path):
        if not item.regions or not all(r.text.endswith(" bar") for r in item.regions):
            continue
        for r in item.regions:
            x0, y0, x1, y1 = r.box
            value = round((y1 - y0) / PLOT * 100 / 5) * 5
            row, col = min(int(y0 * GRID), GRID - 1), min(int((x0 + x1) / 2 * GRID), GRID - 1)
            out.append((item.image, row * GRID + col, row, value // 10))
    return out


def heldout_bars(seed: int, n: int, image_dir: Path) -> list[tuple[str, int, int, int]]:
    """The same rows for `n` chart pairs of the held-out distribution (values from their meta)."""
    from basereward.data.synthetic.heldout import make_heldout_example

    image_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        ex = make_heldout_example(seed, i, "reasoning/chart")
        size = ex.image.size[0]
        path = str((image_dir / f"chart-{i}.png").resolve())
        ex.image.save(path)
        for b in ex.meta["bars"]:
            row = min(int(b["top"] / size * GRID), GRID - 1)
            col = min(int((b["x0"] + b["x1"]) / 2 / size * GRID), GRID - 1)
            out.append((path, row * GRID + col, row, b["value"] // 10))
    return out


def design(rows, cache, which: str) -> torch.Tensor:
    feats = []
    for img, cell, row, _ in rows:
        f = cache[img]  # (cells, C)
        parts = []
        if "cell" in which:
            parts.append(f[cell])
        if "below" in which:
            parts.append(f[cell + GRID] if cell + GRID < GRID * GRID else torch.zeros_like(f[cell]))
        if "row" in which:
            parts.append(torch.nn.functional.one_hot(torch.tensor(row), GRID).float() * 5)
        feats.append(torch.cat(parts))
    return torch.stack(feats)


def fit(x: torch.Tensor, y: torch.Tensor, classes: int = 10, steps: int = 400) -> torch.nn.Module:
    torch.manual_seed(0)
    mean, std = x.mean(0), x.std(0) + 1e-4
    lin = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.AdamW(lin.parameters(), lr=1e-2, weight_decay=1e-2)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(lin((x - mean) / std), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lambda z: lin((z - mean) / std)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--heldout-seed", type=int, default=2)
    ap.add_argument("--n-test", type=int, default=150, help="held-out distribution chart pairs")
    ap.add_argument("--image-dir", default="runs/chart-probe")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    train, test = bars(args.train), heldout_bars(args.heldout_seed, args.n_test, Path(args.image_dir))
    enc = ImageEncoder(GRID, True, True).eval()
    cache: dict[str, torch.Tensor] = {}
    encode_into_cache(enc, cache, sorted({r[0] for r in train + test}), 224, desc="encode charts")
    ytr = torch.tensor([r[3] for r in train])
    yte = torch.tensor([r[3] for r in test])
    results = {"train_bars": len(train), "test_bars": len(test)}
    for which in ("row", "cell", "cell+row", "cell+below+row"):
        if which == "row":
            # The best guess from the row alone: the most common digit of each row in training.
            best = {r: int(torch.mode(ytr[torch.tensor([t[2] == r for t in train])]).values) for r in range(GRID)}
            pred_tr = torch.tensor([best[t[2]] for t in train])
            pred_te = torch.tensor([best.get(t[2], 0) for t in test])
        else:
            f = fit(design(train, cache, which), ytr)
            with torch.no_grad():
                pred_tr = f(design(train, cache, which)).argmax(-1)
                pred_te = f(design(test, cache, which)).argmax(-1)
        results[which] = {"train": float((pred_tr == ytr).float().mean()), "test": float((pred_te == yte).float().mean()),
                          "test_within_1": float(((pred_te - yte).abs() <= 1).float().mean())}
        print(f"{which:>16}: train {results[which]['train']:.3f}  held-out {results[which]['test']:.3f}  "
              f"(within one digit {results[which]['test_within_1']:.3f})")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
