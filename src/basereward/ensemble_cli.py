"""`basereward ensemble`: build, fit and save an ensemble (optionally behind a modality router)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def add_ensemble_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--members", nargs="+", required=True, help="model (or ensemble) directories")
    p.add_argument("--names", nargs="*", default=None)
    p.add_argument("--method", choices=["mean", "accuracy", "confidence"], default="mean")
    p.add_argument("--normalize", action="store_true", help="z-normalise each member with validation mean/std")
    p.add_argument("--val", default="", help="validation pair file (needed by accuracy/confidence/--normalize)")
    p.add_argument("--val-size", type=int, default=1000, help="validation pairs, sampled uniformly across sources")
    p.add_argument("--text-model", default="", help="route text-only pairs to this model; image pairs to the ensemble")
    p.add_argument("--output", required=True, help="directory to write the ensemble into")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)


def _rel(target: str, base: Path) -> str:
    return os.path.relpath(os.path.abspath(target), os.path.abspath(base))


def run_ensemble_command(args: argparse.Namespace) -> int:
    from .data.pairs import load_pairs
    from .ensemble import Ensemble, ModalityRouter, fit, sample_validation
    from .errors import BaseRewardError
    from .load import load_scorer

    out = Path(args.output)
    needs_val = args.method != "mean" or args.normalize
    if needs_val and not args.val:
        raise BaseRewardError(f"--method {args.method}{' --normalize' if args.normalize else ''} needs --val FILE")
    ens_dir = out / "ensemble" if args.text_model else out
    names = args.names or [Path(m).name for m in args.members]
    members = [load_scorer(m, batch_size=args.batch_size, progress=True) for m in args.members]
    paths = [_rel(m, ens_dir) for m in args.members]
    if args.val:
        val = sample_validation(load_pairs(args.val, on_error="fail"), n=args.val_size, seed=args.seed)
        ens = fit(members, val, method=args.method, normalize=args.normalize, names=names, paths=paths)
    else:
        ens = Ensemble(members, names=names, method="mean", paths=paths)
    ens.save(str(ens_dir))
    spec = ens.to_json()
    print(f"{'member':<24} {'weight':>7}  {'val acc':>8}")
    for m in spec["members"]:
        acc = m.get("stats", {}) or {}
        acc_s = f"{100 * acc['accuracy']:7.1f}%" if "accuracy" in acc else "      -"
        print(f"{m['name']:<24} {m['weight']:7.3f}  {acc_s}")
    if spec.get("validation"):
        print(json.dumps(spec["validation"]))
    if args.text_model:
        router = ModalityRouter(load_scorer(args.text_model, batch_size=args.batch_size), ens,
                                text_name=Path(args.text_model).name, multimodal_name="ensemble",
                                text_path=_rel(args.text_model, out), multimodal_path="ensemble")
        router.save(str(out))
        print(f"router: text-only -> {args.text_model}; with images -> {ens_dir}")
    print(f"wrote {out}")
    return 0
