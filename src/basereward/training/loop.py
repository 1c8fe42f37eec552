"""`train()`: a training run as a recipe of named stages (see stages.py for each one).

One command runs on CPU, one GPU, or many (`accelerate launch` with DDP/FSDP/DeepSpeed configs).
The data order is a pure function of (seed, epoch), so an interrupted run resumed from a
checkpoint ends with the weights of an uninterrupted one (plan.py).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..config import Config
from ..data.schema import PreferencePair
from ..models.reward_model import RewardModel
from . import stages
from .fit import apply_ema, fit, validate


def train(
    cfg: Config,
    train_pairs: Sequence[PreferencePair],
    val_pairs: Sequence[PreferencePair] = (),
    model: RewardModel | None = None,
    callbacks: Sequence[Callable[[int, dict], None]] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Train a reward model; returns the final metrics and the saved model's path.

    `callbacks` are called on every process after each optimizer step with (step, metrics).
    """
    run = stages.start_run(cfg, train_pairs, progress)
    model = stages.build_model(cfg, model)
    started = stages.init_from(run, model)
    opt = stages.optimisation(run, model)
    resumed = stages.resume(run, model, opt)
    start_step, history = resumed if resumed is not None else (0, {})
    if started is not None and resumed is None:
        history["init_from"] = started
    if resumed is None:  # a checkpoint already holds what the alignment stage made
        aligned = stages.alignment(run, model)
        if aligned is not None:
            history["alignment"] = aligned
    stages.check_ready(model.backbone)
    with stages.trunk_cache(model.backbone, history):
        step, last = fit(run, model, opt, train_pairs, start_step, history, val_pairs, callbacks)
    apply_ema(opt.optimizer, cfg.train.ema_decay > 0)  # the saved model (and its validation) is the average
    # The precision the run trained in (`train.mixed_precision` resolved on this machine: "bf16-where-fast"
    # is "bf16" or "no" depending on what the CPU measures), so that results from two machines compare.
    result: dict[str, Any] = {"steps": step, "precision": run.accelerator.mixed_precision, "train": last}
    for key in ("init_from", "alignment", "trunk_cache"):
        if key in history:
            result[key] = history[key]
    if val_pairs:
        result["validation"] = validate(run, model, val_pairs, step)
    return stages.save(run, model, result)
