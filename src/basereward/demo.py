"""`basereward demo`: the whole recipe on the embedded default, end to end on a laptop CPU.

1. generate multimodal preference pairs (train, validation and a held-out split with another
   seed) and write the seeded HH-RLHF train/validation split;
2. train mini-vl (EfficientNet-Lite0 -> projector -> SmolLM2-135M-Instruct) on visual + text pairs
   with configs/demo.yaml;
3. score the held-out visual split, the same pairs with images shuffled between pairs (how much
   of the accuracy comes from the image) and the HH-RLHF validation split;
4. print a table, save `results.json` and the model to `<out>/model`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from .config import load_config
from .errors import BaseRewardError

SYNTH_TRAIN, SYNTH_VAL, SYNTH_HELDOUT = 0, 1, 2  # generator seeds: disjoint splits


def demo_config_path() -> Path:
    p = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
    if not p.is_file():
        raise BaseRewardError(f"{p}: demo config not found (run from a checkout of the basereward repository)")
    return p


def run_demo(out_dir: str = "runs/demo", overrides: list[str] | tuple[str, ...] = (), quick: bool = False,
             n_train: int = 0, n_heldout: int = 0) -> dict:
    from .data.pairs import load_pairs
    from .data.sources.hh_rlhf import write_hh_split
    from .data.synthetic import generate, shuffle_images
    from .scoring import Scorer
    from .training.loop import train

    t0 = time.time()
    out = Path(out_dir)
    data_dir = out / "data"
    n_train = n_train or (64 if quick else 1600)
    n_val = 32 if quick else 200
    n_heldout = n_heldout or (32 if quick else 400)
    print(f"[demo] 1/4 data -> {data_dir}", flush=True)
    train_vis = generate(data_dir / "synth-train", n_pairs=n_train, seed=SYNTH_TRAIN)
    generate(data_dir / "synth-val", n_pairs=n_val, seed=SYNTH_VAL)
    heldout = generate(data_dir / "synth-heldout", n_pairs=n_heldout, seed=SYNTH_HELDOUT)
    hh_train_path, hh_val_path = write_hh_split(data_dir / "hh-rlhf", seed=0)

    base = [
        f"data.train=[{data_dir / 'synth-train' / 'pairs.jsonl'},{hh_train_path}]",
        f"data.validation={data_dir / 'synth-val' / 'pairs.jsonl'}",
        f"data.alignment={data_dir / 'synth-train' / 'regions.jsonl'}",
        f"train.output_dir={out / 'train'}",
    ]
    if quick:
        base += ["train.max_steps=2", "train.global_batch_size=4", "train.micro_batch_size=2"]
    cfg = load_config(demo_config_path(), base + list(overrides))
    from .training.data import load_training_data

    pairs, val = load_training_data(cfg.data, cfg.train.seed)
    n_mm = sum(p.is_multimodal for p in pairs)
    print(f"[demo] 2/4 training mini-vl on {len(pairs)} pairs ({n_mm} visual, {len(pairs) - n_mm} text)", flush=True)
    result = train(cfg, pairs, val)
    model_dir = out / "model"
    import shutil

    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.copytree(result["model_dir"], model_dir)

    print("[demo] 3/4 evaluating held-out splits", flush=True)
    from .models.reward_model import RewardModel

    scorer = Scorer(RewardModel.from_pretrained(model_dir), batch_size=32, progress=True)
    hh_val = load_pairs(hh_val_path)
    if quick:
        hh_val = hh_val[:16]

    def acc(pairs_, scores=None) -> float:
        s = scores if scores is not None else scorer.score(pairs_)
        return sum(c > r for c, r in s) / max(len(s), 1)

    encode = getattr(scorer.model.backbone, "cache_image_features", None)
    if encode is not None:
        # The shuffled split reuses the held-out images: encode them once for both.
        encode([img for p in heldout for img in p.images], progress=True, desc="held-out: encode images")
    heldout_scores = scorer.score(heldout)
    rows = {
        "visual held-out (seed 2)": acc(heldout, heldout_scores),
        "visual held-out, images shuffled": acc(shuffle_images(heldout, seed=0)),
        "HH-RLHF harmless validation": acc(hh_val),
    }
    per_cat: dict[str, list] = {}
    for p, (c, r) in zip(heldout, heldout_scores):
        per_cat.setdefault(p.category, []).append(c > r)
    results = {
        "accuracy": rows,
        "image_effect_points": 100 * (rows["visual held-out (seed 2)"] - rows["visual held-out, images shuffled"]),
        "per_category": {k: sum(v) / len(v) for k, v in sorted(per_cat.items())},
        "train": result,
        "counts": {"train_pairs": len(pairs), "train_visual": n_mm, "heldout": len(heldout), "hh_val": len(hh_val)},
        "minutes": round((time.time() - t0) / 60, 2),
        "model_dir": str(model_dir),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print("[demo] 4/4 results")
    width = max(len(k) for k in rows)
    print(f"{'split':<{width}}  accuracy")
    for k, v in rows.items():
        print(f"{k:<{width}}  {100 * v:7.1f}%")
    print(f"{'image effect (points)':<{width}}  {results['image_effect_points']:7.1f}")
    for k, v in results["per_category"].items():
        print(f"  {k:<{width - 2}}  {100 * v:7.1f}%")
    print(f"model saved to {model_dir}; results in {out / 'results.json'}; {results['minutes']} min")
    return results
