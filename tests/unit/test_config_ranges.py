"""Every numeric config field has a range; non-finite numbers are refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from basereward.config import load_config
from basereward.errors import ConfigError

PRESETS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("override,message", [
    ("train.lr=inf", r"train\.lr: must be a finite number, got inf"),
    ("train.lr=nan", r"train\.lr: must be a finite number, got nan"),
    ("train.lr=0", r"train\.lr: must be > 0, got 0\.0"),
    ("train.epochs=nan", r"train\.epochs: must be a finite number"),
    ("train.epochs=inf", r"train\.epochs: must be a finite number"),
    ("train.epochs=-1", r"train\.epochs: must be > 0, got -1\.0"),
    ("train.max_steps=-1", r"train\.max_steps: must be >= 0, got -1"),
    ("train.max_grad_norm=nan", r"train\.max_grad_norm: must be a finite number"),
    ("train.warmup_ratio=1", r"train\.warmup_ratio: must be in \[0, 1\), got 1\.0"),
    ("train.ema_decay=1", r"train\.ema_decay: must be in \[0, 1\), got 1\.0"),
    ("train.lr_grid=[1e-5,0]", r"train\.lr_grid: must be > 0, got 0\.0"),
    ("train.keep_checkpoints=0", r"train\.keep_checkpoints: must be >= 1"),
    ("train.micro_batch_size=0", r"train\.micro_batch_size: must be > 0"),
    ("loss.zero_coef=-0.1", r"loss\.zero_coef: must be >= 0"),
    ("loss.margin=inf", r"loss\.margin: must be a finite number"),
    ("data.text_ratio=-0.5", r"data\.text_ratio: must be >= 0 \(or -1\)"),
    ("model.head.num_layers=0", r"model\.head\.num_layers: must be in \[1, 5\], got 0"),
    ("model.backbone.train_lm_layers=-2", r"model\.backbone\.train_lm_layers: must be >= -1, got -2"),
    ("model.backbone.lora.dropout=1", r"model\.backbone\.lora\.dropout: must be in \[0, 1\)"),
    ("model.backbone.mini_vl.align_lr=nan", r"model\.backbone\.mini_vl\.align_lr: must be a finite number"),
    ("model.backbone.mini_vl.image_grid=0", r"model\.backbone\.mini_vl\.image_grid: must be >= 1"),
])
def test_out_of_range_values_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize("override", ["train.lr=1e-9", "train.warmup_ratio=0", "data.text_ratio=-1",
                                      "model.backbone.train_lm_layers=-1", "train.epochs=0.25", "loss.margin=-1"])
def test_edges_inside_the_range_are_accepted(override):
    load_config(None, [override])


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_preset_is_in_range(preset):
    load_config(preset)
