"""The allowed range of every numeric config field, checked when a config is built.

A float field must be finite everywhere (`train.lr=inf` or `nan` is refused, never run); each
entry below adds the field's own bounds. The message names the dotted field and the value.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from ..errors import ConfigError

Rule = Callable[[float], str]
"""value -> "" when allowed, else what it must be."""


def at_least(lo: float) -> Rule:
    return lambda v: "" if v >= lo else f"must be >= {lo:g}"


def above(lo: float) -> Rule:
    return lambda v: "" if v > lo else f"must be > {lo:g}"


def between(lo: float, hi: float, hi_open: bool = False) -> Rule:
    def rule(v: float) -> str:
        ok = lo <= v < hi if hi_open else lo <= v <= hi
        return "" if ok else f"must be in [{lo:g}, {hi:g}{')' if hi_open else ']'}"
    return rule


def at_least_or(lo: float, special: float) -> Rule:
    return lambda v: "" if v >= lo or v == special else f"must be >= {lo:g} (or {special:g})"


# Section class name -> field -> rule (tuples: every element).
RANGES: dict[str, dict[str, Rule]] = {
    "LoraConfig": {"r": above(0), "alpha": above(0), "dropout": between(0, 1, hi_open=True)},
    "MiniVLConfig": {"image_size": at_least(32), "image_grid": at_least(1), "word_slots": at_least(1),
                     "lm_layers": at_least(0), "align_epochs": at_least(0), "align_lr": above(0),
                     "align_zoom": between(0, 1, hi_open=True),
                     "align_jitter": between(0, 1, hi_open=True)},
    "QwenVLConfig": {"min_pixels": above(0), "max_pixels": above(0)},
    "BackboneConfig": {"train_lm_layers": at_least(-1), "max_length": at_least(2),
                       "max_prompt_length": at_least(0)},
    "HeadConfig": {"num_layers": between(1, 5), "hidden_size": at_least(0)},
    "LossConfig": {"zero_coef": at_least(0)},
    "JudgeConfig": {"samples": at_least(1), "temperature": at_least(0), "max_new_tokens": at_least(1),
                    "verdict_weight": at_least(0)},
    "DataConfig": {"text_ratio": at_least_or(0, -1), "max_pairs": at_least(0)},
    "TrainConfig": {"lr": above(0), "head_lr": at_least(0), "lr_grid": above(0), "global_batch_size": above(0),
                    "micro_batch_size": above(0), "epochs": above(0), "max_steps": at_least(0),
                    "warmup_ratio": between(0, 1, hi_open=True), "weight_decay": at_least(0),
                    "max_grad_norm": at_least(0), "ema_decay": between(0, 1, hi_open=True),
                    "seed": at_least(0), "eval_every": at_least(0),
                    "save_every": at_least(0), "keep_checkpoints": at_least(1), "log_every": at_least(1),
                    "num_workers": at_least(0)},
}


def check_ranges(obj: Any, where: str) -> None:
    """ConfigError for the first numeric field of section `obj` outside its range."""
    rules = RANGES.get(type(obj).__name__, {})
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{where}.{f.name}: must be a finite number, got {v!r}")
            problem = rules[f.name](v) if f.name in rules else ""
            if problem:
                raise ConfigError(f"{where}.{f.name}: {problem}, got {v!r}")
