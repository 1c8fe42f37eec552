"""`basereward sweep`: the paper's learning-rate grid, best run picked on validation accuracy."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError
from ..io import copy_dir, finite, write_json


def sweep(cfg: Config) -> dict[str, Any]:
    """Train once per lr in `train.lr_grid` under output_dir/lr-<lr>; copy the best model to output_dir/best."""
    from .data import load_training_data
    from .loop import train

    if not cfg.data.validation:
        raise ConfigError("sweep needs data.validation to pick the best learning rate")
    pairs, val = load_training_data(cfg.data, cfg.train.seed)
    root = Path(cfg.train.output_dir)
    runs = []
    for lr in cfg.train.lr_grid:
        run_dir = root / f"lr-{lr:g}"
        run_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=lr, output_dir=str(run_dir)))
        print(f"[basereward] sweep: lr={lr:g} -> {run_dir}", flush=True)
        result = train(run_cfg, pairs, val)
        runs.append({"lr": lr, "val_accuracy": result["validation"]["val_accuracy"],
                     "val_loss": result["validation"]["val_loss"], "model_dir": result["model_dir"]})
    # Highest accuracy wins; lower validation loss breaks ties.
    best = max(runs, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    best_dir = root / "best"
    copy_dir(best["model_dir"], best_dir)
    summary = {"runs": runs, "best": best, "best_dir": str(best_dir)}
    write_json(root / "sweep.json", finite(summary))
    print("lr        val_acc   val_loss")
    for r in runs:
        mark = "  <- best" if r is best else ""
        print(f"{r['lr']:<8g}  {100 * r['val_accuracy']:6.1f}%  {r['val_loss']:.4f}{mark}")
    return summary
