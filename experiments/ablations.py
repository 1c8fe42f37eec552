#!/usr/bin/env python
"""The BaseReward paper's ablations in miniature, through the real trainer and the real Scorer.

Every cell of every table is a `basereward.training.train` run, scored by `basereward.Scorer` and
measured by `basereward.metrics`; nothing here batches, pools or computes a loss itself.

The starting point of every cell is the same: the embedded mini-vl backbone (pretrained
SmolLM2 layers) with the word projector and vocabulary of a trained model (`--model`, e.g. the
demo's `runs/demo/model`, whose alignment stage made them). The projector and the lower LM layers
stay frozen; the top `--train-lm-layers` LM layers (reset to their pretrained weights before each
run) and a fresh reward head train. Because the frozen trunk is the same for every run, its
states are computed once and kept (`keep_trunk_states`): later runs, and the scoring of the test
sets, run only the trained top layers, with the rewards and gradients of the full model.

Tables (as in the paper's ablations): (a) head layers × activation, (b) zero-coefficient λ,
(c) length normalisation — trained on visual + HH-RLHF pairs (MM:text 1:0.5), evaluated on a
visual test split (another generator seed) and HH-RLHF validation; (d) HH-RLHF as is, a 90%
chosen-longer subset, and that subset after `balance_length` — evaluated on HH-RLHF validation.
Every table gives its cells the same number of optimizer steps.

    python experiments/ablations.py --model runs/demo/model
    python experiments/ablations.py --model runs/demo/model --quick     # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_tables import (LONG_FRACTION, Cell, build_tables, findings, run_tables, summarise,  # noqa: E402
                             to_markdown)

from basereward import metrics  # noqa: E402
from basereward.config import Config, HeadConfig, LossConfig, ModelConfig, TrainConfig  # noqa: E402
from basereward.data.schema import PreferencePair  # noqa: E402

SYNTH_TRAIN_SEED, SYNTH_TEST_SEED = 10, 11  # disjoint from the demo's generator seeds 0, 1, 2
FULL = {"n_train": 400, "n_test": 300, "hh_train": 400, "hh_val": 0, "seeds": [0, 1]}
QUICK = {"n_train": 32, "n_test": 16, "hh_train": 48, "hh_val": 16, "seeds": [0]}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclasses.dataclass
class Setup:
    """What every cell shares: the backbone (frozen trunk + its kept states), the data, the budget."""

    base: ModelConfig
    backbone: Any
    start: dict[str, torch.Tensor]
    """The trainable backbone tensors at the start of every run (pretrained top layers)."""
    train_sets: dict[str, list[PreferencePair]]
    eval_sets: dict[str, dict[str, list[PreferencePair]]]
    """Per train set kind ("mixed" / "hh"): the sets it is evaluated on."""
    steps: dict[str, int]
    train: TrainConfig
    seeds: Sequence[int]
    work_dir: Path


def start_backbone(model_dir: str | Path, train_lm_layers: int, **overrides: Any) -> tuple[ModelConfig, Any]:
    """The embedded backbone with `model_dir`'s projector and vocabulary; LM layers pretrained.
    `overrides`: other model.backbone fields (e.g. a longer max_length for a judge's prompt)."""
    from basereward.models.backbone import build_backbone
    from basereward.models.reward_model import BACKBONE_NAME, read_model_config

    cfg, meta = read_model_config(model_dir)
    if cfg.backbone.name != "mini-vl" or cfg.backbone.mini_vl.projector != "words":
        raise SystemExit(f"--model {model_dir}: needs a mini-vl model with the words projector (the demo's)")
    mv = dataclasses.replace(cfg.backbone.mini_vl, train_projector=False, cache_trunk=True)
    bb_cfg = dataclasses.replace(cfg.backbone, train_lm_layers=train_lm_layers, mini_vl=mv, **overrides)
    torch.manual_seed(0)
    backbone = build_backbone(bb_cfg)
    backbone.load_metadata(meta)
    saved = load_file(str(Path(model_dir) / BACKBONE_NAME))
    projector = {k[len("projector."):]: v for k, v in saved.items() if k.startswith("projector.")}
    backbone.projector.load_state_dict(projector)
    return dataclasses.replace(cfg, backbone=bb_cfg), backbone


def cell_config(setup: Setup, cell: Cell, seed: int) -> Config:
    head = dataclasses.replace(setup.base.head, num_layers=cell.num_layers, activation=cell.activation)
    kind = "mixed" if cell.train_set == "mixed" else "hh"
    out = setup.work_dir / "runs" / f"{cell.name.replace(' ', '_')}-s{seed}"
    # A set smaller than a global batch (a tiny balanced subset) steps on all of its pairs at once.
    n = len(setup.train_sets[cell.train_set])
    micro = min(setup.train.micro_batch_size, n)
    batch = min(setup.train.global_batch_size, n // micro * micro)
    train = dataclasses.replace(setup.train, output_dir=str(out), seed=seed, max_steps=setup.steps[kind],
                                global_batch_size=batch, micro_batch_size=micro)
    return Config(model=dataclasses.replace(setup.base, head=head), loss=LossConfig(zero_coef=cell.zero_coef,
                  length_norm=cell.length_norm), train=train)


def evaluate(scorer: Any, pairs: Sequence[PreferencePair]) -> dict[str, float | None]:
    from basereward.scoring import score_pairs

    scores = score_pairs(scorer, pairs)
    c, r = [s[0] for s in scores], [s[1] for s in scores]
    lc, lr = [len(p.chosen) for p in pairs], [len(p.rejected) for p in pairs]
    return {"accuracy": metrics.pair_accuracy(c, r), "prefers_longer": metrics.prefers_longer(c, r, lc, lr)}


def run_once(setup: Setup, cell: Cell, seed: int) -> dict[str, Any]:
    """One training run of `cell` from the shared starting point, scored on its sets."""
    from basereward.models.reward_model import RewardModel
    from basereward.scoring import Scorer
    from basereward.training.loop import train

    cfg = cell_config(setup, cell, seed)
    params = dict(setup.backbone.named_parameters())
    with torch.no_grad():
        for name, value in setup.start.items():
            params[name].copy_(value)
    torch.manual_seed(seed)  # the head's initialisation
    model = RewardModel(cfg.model, backbone=setup.backbone)
    t0 = time.time()
    pairs = setup.train_sets[cell.train_set]
    result = train(cfg, pairs, (), model=model, progress=False)
    shutil.rmtree(cfg.train.output_dir, ignore_errors=True)
    run: dict[str, Any] = {"seed": seed, "train_loss": result["train"]["loss"], "train_seconds": time.time() - t0}
    setup.backbone.enable_trunk_cache()  # scoring reads the kept trunk states too
    try:
        scorer = Scorer(model, batch_size=32)
        kind = "mixed" if cell.train_set == "mixed" else "hh"
        for name, eval_pairs in setup.eval_sets[kind].items():
            run[name] = evaluate(scorer, eval_pairs)
    finally:
        setup.backbone.disable_trunk_cache()
    if kind == "mixed":
        run["mean_accuracy"] = (run["visual_test"]["accuracy"] + run["hh_val"]["accuracy"]) / 2
    return run


def run_cell(setup: Setup, cell: Cell) -> dict[str, Any]:
    runs = []
    for seed in setup.seeds:
        runs.append(run_once(setup, cell, seed))
        log(f"  {cell.name} seed {seed}: " + ", ".join(
            f"{k} {100 * v['accuracy']:.1f}" for k, v in runs[-1].items() if isinstance(v, dict))
            + f" ({runs[-1]['train_seconds']:.0f} s)")
    kind = "mixed" if cell.train_set == "mixed" else "hh"
    keys = ["train_loss", *setup.eval_sets[kind]] + (["mean_accuracy"] if kind == "mixed" else [])
    return {"cell": dataclasses.asdict(cell), "n_train": len(setup.train_sets[cell.train_set]), "runs": runs,
            "summary": summarise(runs, keys)}


def build_setup(args: argparse.Namespace) -> tuple[Setup, dict[str, Any]]:
    from basereward.data.curation import balance_length, bias_by_length, length_bias
    from basereward.data.pairs import load_pairs
    from basereward.data.sources.hh_rlhf import hh_rlhf_split
    from basereward.data.synthetic import generate

    cache = Path(args.cache_dir)

    def synthetic(n: int, seed: int) -> list[PreferencePair]:
        d = cache / "data" / f"synth-s{seed}-n{n}"
        if (d / "pairs.jsonl").is_file():
            return load_pairs(d / "pairs.jsonl", check_images=False)
        return generate(str(d), n_pairs=n, seed=seed, progress=not args.no_progress)

    vis_train, vis_test = synthetic(args.n_train, SYNTH_TRAIN_SEED), synthetic(args.n_test, SYNTH_TEST_SEED)
    hh_train, hh_val = hh_rlhf_split(args.hh_path, seed=args.data_seed)
    hh_train, hh_val = hh_train[: args.hh_train or None], hh_val[: args.hh_val or None]
    hh_biased = bias_by_length(hh_train, long_fraction=LONG_FRACTION, seed=args.data_seed, log=log)
    hh_balanced = balance_length(hh_biased, seed=args.data_seed, log=log)
    for name, got in (("--n-train", vis_train), ("--n-test", vis_test), ("HH-RLHF train", hh_train),
                      ("HH-RLHF validation", hh_val)):
        if len(got) < 2:
            raise SystemExit(f"[ablations] {name}: {len(got)} pairs; every set needs at least 2")
    # MM:text = 1:0.5 (the paper's mix): half as many HH pairs as visual ones.
    mixed = vis_train + hh_train[: len(vis_train) // 2]
    base, backbone = start_backbone(args.model, args.train_lm_layers)
    backbone.keep_trunk_states()
    start = {n: p.detach().clone() for n, p in backbone.named_parameters() if p.requires_grad}
    base = dataclasses.replace(base, head=HeadConfig(zero_init_last=False))
    train = TrainConfig(lr=args.lr, head_lr=args.head_lr, global_batch_size=args.batch_size,
                        micro_batch_size=args.micro_batch_size, warmup_ratio=0.05, mixed_precision="no")
    steps = {"mixed": max(1, round(args.epochs * len(mixed) / args.batch_size)),
             "hh": max(1, round(args.epochs * len(hh_train) / args.batch_size))}
    setup = Setup(base, backbone, start,
                  {"mixed": mixed, "hh": hh_train, "hh-biased": hh_biased, "hh-balanced": hh_balanced},
                  {"mixed": {"visual_test": vis_test, "hh_val": hh_val}, "hh": {"hh_val": hh_val}},
                  steps, train, args.seeds, cache)
    data = {"visual_train": len(vis_train), "visual_test": len(vis_test), "hh_train": len(hh_train),
            "hh_in_mixed": len(mixed) - len(vis_train), "hh_val": len(hh_val), "hh_biased": len(hh_biased),
            "hh_balanced": len(hh_balanced), "steps": steps,
            "length_stats": {k: length_bias(v) for k, v in (("hh_train", hh_train), ("hh_biased", hh_biased),
                                                             ("hh_balanced", hh_balanced), ("hh_val", hh_val))}}
    return setup, data


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a trained mini-vl model with the words projector (runs/demo/model)")
    ap.add_argument("--out", default="experiments/results/ablations", help="where ablations.json/.md go")
    ap.add_argument("--cache-dir", default="runs/ablations", help="generated pairs and per-run outputs")
    ap.add_argument("--n-train", type=int, help="visual train pairs (generator seed 10) [400; quick 32]")
    ap.add_argument("--n-test", type=int, help="visual test pairs (generator seed 11) [300; quick 16]")
    ap.add_argument("--hh-train", type=int, help="first N HH-RLHF train pairs, 0 = all [400; quick 48]")
    ap.add_argument("--hh-val", type=int, help="first N HH-RLHF validation pairs, 0 = all [all; quick 16]")
    ap.add_argument("--hh-path", default=None, help="HH-RLHF jsonl(.gz) [the shared file]")
    ap.add_argument("--seeds", type=int, nargs="+", help="head init and data order seeds [0 1; quick 0]")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the HH split and the length resampling")
    ap.add_argument("--train-lm-layers", type=int, default=1, help="top LM layers each run trains [%(default)s]")
    ap.add_argument("--epochs", type=float, default=1.0, help="steps per table = epochs over its largest set")
    ap.add_argument("--lr", type=float, default=3e-4, help="LM learning rate (the demo's) [%(default)s]")
    ap.add_argument("--head-lr", type=float, default=1e-3, help="head learning rate (the demo's) [%(default)s]")
    ap.add_argument("--batch-size", type=int, default=16, help="pairs per optimizer step [%(default)s]")
    ap.add_argument("--micro-batch-size", type=int, default=8, help="pairs per forward [%(default)s]")
    ap.add_argument("--quick", action="store_true", help="tiny smoke configuration")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(list(argv) if argv is not None else None)
    for k, v in (QUICK if args.quick else FULL).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from basereward.io import finite, write_json, write_text

    args = parse_args(argv)
    t0 = time.time()
    log("[ablations] data and the shared starting point")
    setup, data = build_setup(args)
    tables = build_tables()
    n_cells = len({c.key() for cells in tables.values() for c in cells})
    log(f"[ablations] {n_cells} cells x {len(setup.seeds)} seeds through train() + Scorer")
    done = [0]

    def run(cell: Cell) -> dict[str, Any]:
        done[0] += 1
        log(f"[ablations] cell {done[0]}/{n_cells}: {cell.name}")
        return run_cell(setup, cell)

    results_tables = run_tables(tables, run)
    results = {
        "setup": {"model": str(args.model), "start": f"pretrained SmolLM2 top {args.train_lm_layers} LM layer(s) + "
                  f"the word projector of `{args.model}`", "seeds": list(setup.seeds),
                  "description": f"top {args.train_lm_layers} LM layer(s) + a fresh head, lr {args.lr:g} "
                  f"(head {args.head_lr:g}), {args.batch_size} pairs a step, {data['steps']['mixed']} steps "
                  f"on visual + HH, {data['steps']['hh']} steps on each HH set",
                  "synthetic_seeds": {"train": SYNTH_TRAIN_SEED, "test": SYNTH_TEST_SEED},
                  "threads": torch.get_num_threads(), "quick": args.quick},
        "data": data,
        "tables": results_tables,
        "findings": findings(results_tables, len(setup.seeds)),
        "timing": {"total_s": round(time.time() - t0, 1)},
    }
    out = Path(args.out)
    write_json(out / "ablations.json", finite(results))
    md = to_markdown(results)
    write_text(out / "ablations.md", md)
    print(md)
    log(f"[ablations] wrote {out / 'ablations.json'} and {out / 'ablations.md'}")
    return results


if __name__ == "__main__":
    main()
