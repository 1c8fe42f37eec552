"""Reward head shapes/initialisation and the config system."""

import math
import re

import pytest
import torch
import yaml
from torch import nn

from basereward.config import (
    MOVED,
    Config,
    MiniVLConfig,
    ModelConfig,
    QwenVLConfig,
    from_dict,
    load_config,
    save_config,
    to_dict,
    upgrade_saved_model,
)
from basereward.errors import ConfigError
from basereward.models.head import RewardHead


@pytest.mark.parametrize("layers", [1, 2, 3, 5])
def test_head_layer_count_and_zero_start(layers):
    head = RewardHead(8, num_layers=layers, activation="silu")
    linears = [m for m in head.net if isinstance(m, nn.Linear)]
    assert len(linears) == layers
    assert torch.equal(head(torch.randn(4, 8)), torch.zeros(4))


def test_default_head_is_two_layer_silu_with_backbone_width():
    head = RewardHead(16)
    kinds = [type(m) for m in head.net]
    assert kinds == [nn.Linear, nn.SiLU, nn.Linear]
    assert head.net[0].out_features == 16


def test_head_activation_and_width_options():
    head = RewardHead(8, num_layers=3, activation="tanh", hidden_size=5, zero_init_last=False)
    assert [type(m) for m in head.net] == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    assert head.net[0].out_features == 5
    assert head(torch.randn(3, 8)).shape == (3,)
    with pytest.raises(ValueError):
        RewardHead(8, num_layers=6)
    with pytest.raises(ValueError):
        RewardHead(8, activation="swish")


def test_paper_preset_loads(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs"
    cfg = load_config(root / "basereward-qwen2.5-vl-7b.yaml")
    assert cfg.model.backbone.name == "qwen2.5-vl"
    assert cfg.model.backbone.qwen_vl.max_pixels == 1003520 and cfg.model.backbone.qwen_vl.freeze_vision
    assert cfg.model.head.num_layers == 2 and cfg.model.head.activation == "silu"
    assert cfg.train.lr == 3e-6 and cfg.train.global_batch_size == 128
    assert cfg.loss.zero_coef == 0 and cfg.loss.length_norm is False
    demo = load_config(root / "demo.yaml")
    assert demo.model.backbone.name == "mini-vl"
    mv = demo.model.backbone.mini_vl
    assert (mv.projector, mv.image_grid, mv.lm_layers, mv.cache_trunk, mv.align_epochs) == ("words", 4, 12, True, 20)
    assert (mv.align_zoom, mv.image_encoder_dtype) == (0.5, "bfloat16")
    assert demo.model.backbone.train_lm_layers == 4


def test_overrides_types_and_unknown_keys(tmp_path):
    cfg = load_config(None, ["train.lr=1e-5", "model.head.num_layers=3", "data.train=[a.jsonl,b.jsonl]",
                             "model.backbone.lora.enabled=true"])
    assert cfg.train.lr == 1e-5 and cfg.model.head.num_layers == 3
    assert cfg.data.train == ("a.jsonl", "b.jsonl") and cfg.model.backbone.lora.enabled is True
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, ["train.learning_rate=1e-5"])
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(None, ["train.lr=fast"])
    with pytest.raises(ConfigError, match="not one of"):
        load_config(None, ["model.head.activation=swish"])
    with pytest.raises(ConfigError, match=r"num_layers: must be in \[1, 5\], got 7"):
        load_config(None, ["model.head.num_layers=7"])


def test_config_is_frozen_and_round_trips(tmp_path):
    cfg = load_config(None, ["train.lr=3e-7"])
    with pytest.raises(Exception):
        cfg.train.lr = 1.0  # type: ignore[misc]
    path = tmp_path / "c.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert to_dict(Config()) == to_dict(load_config(None))


def test_yaml_error_has_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+"):
        load_config(bad)


def test_grad_accum_derivation():
    cfg = load_config(None, ["train.global_batch_size=128", "train.micro_batch_size=4"])
    assert cfg.train.grad_accum_steps(1) == 32 and cfg.train.grad_accum_steps(8) == 4
    with pytest.raises(ConfigError):
        cfg.train.grad_accum_steps(3)


# ----------------------------------------------------------------------------- per-backbone sections


@pytest.mark.parametrize("old,new", sorted(MOVED.items()))
def test_every_moved_key_names_its_new_place(old, new, tmp_path):
    value = {"projector": "mlp"}.get(old.rsplit(".", 1)[1], 1)
    with pytest.raises(ConfigError, match=f"{re.escape(old)} has moved to {re.escape(new)}"):
        load_config(None, [f"{old}={value}"])
    # The same in a YAML file.
    *sections, key = old.split(".")
    data: dict = {key: value}
    for part in reversed(sections):
        data = {part: data}
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=f"old.yaml: {re.escape(old)} has moved to {re.escape(new)}"):
        load_config(path)


def test_image_words_is_no_longer_a_setting():
    with pytest.raises(ConfigError, match="image_words was removed.*data.alignment"):
        load_config(None, ["model.backbone.image_words=[red,star]"])


def test_a_section_of_another_backbone_is_an_error_naming_key_and_backbone():
    with pytest.raises(ConfigError, match=r"mini_vl\.projector: backbone 'qwen2\.5-vl' does not use it"):
        load_config(None, ["model.backbone.name=qwen2.5-vl", "model.backbone.mini_vl.projector=words"])
    with pytest.raises(ConfigError, match=r"qwen_vl\.freeze_vision: backbone 'mini-vl' does not use it"):
        load_config(None, ["model.backbone.qwen_vl.freeze_vision=false"])
    with pytest.raises(ConfigError, match=r"qwen_vl\.max_pixels: backbone 'causal-lm'"):
        load_config(None, ["model.backbone.name=causal-lm", "model.backbone.qwen_vl.max_pixels=1000"])
    # Defaults are fine anywhere, and a section's own backbone takes any valid value.
    cfg = load_config(None, ["model.backbone.name=qwen2-vl", "model.backbone.qwen_vl.max_pixels=50000",
                             "model.backbone.mini_vl.projector=mlp"])
    assert cfg.model.backbone.qwen_vl.max_pixels == 50000


def test_keys_the_chosen_settings_do_not_read_are_errors():
    with pytest.raises(ConfigError, match="word_slots: only the `words` projector"):
        load_config(None, ["model.backbone.mini_vl.word_slots=2"])
    assert load_config(None, ["model.backbone.mini_vl.projector=words",
                              "model.backbone.mini_vl.word_slots=2"]).model.backbone.mini_vl.word_slots == 2
    with pytest.raises(ConfigError, match="image_tap_max_pool: needs image_multiscale"):
        load_config(None, ["model.backbone.mini_vl.image_multiscale=false", "model.backbone.mini_vl.image_tap_max_pool=true"])
    with pytest.raises(ConfigError, match="min_pixels"):
        load_config(None, ["model.backbone.name=qwen2.5-vl", "model.backbone.qwen_vl.min_pixels=9000",
                           "model.backbone.qwen_vl.max_pixels=5000"])


# The `model` section of a model_config.json written before the per-backbone sections.
OLD_MINI_VL = {
    "backbone": {
        "name": "mini-vl", "path": "", "dtype": "auto", "attn_implementation": "sdpa", "freeze_vision": False,
        "freeze_lm": False, "train_lm_layers": 4, "lora": {"enabled": False}, "gradient_checkpointing": False,
        "max_length": 128, "min_pixels": 3136, "max_pixels": 5000, "image_size": 224, "image_grid": 4,
        "image_multiscale": True, "image_tap_max_pool": True, "projector": "words", "train_projector": False,
        "word_slots": 3, "image_words": ["blue", "red", "star"], "lm_layers": 12, "system_prompt": "",
        "share_prefix": True,
    },
    "head": {"pooling": "last", "num_layers": 2, "activation": "silu", "hidden_size": 0, "zero_init_last": False},
}


def test_old_saved_model_configs_are_migrated():
    model, meta = upgrade_saved_model(OLD_MINI_VL)
    assert meta == {"image_words": ["blue", "red", "star"]}
    cfg = from_dict(ModelConfig, model)
    bb = cfg.backbone
    assert (bb.train_lm_layers, bb.max_length) == (4, 128)
    # Saved before the per-item truncation rule: the prompt keeps 3/4 of max_length.
    assert (bb.max_prompt_length, bb.prompt_budget()) == (96, 96)
    assert bb.mini_vl == MiniVLConfig(image_grid=4, image_tap_max_pool=True, projector="words",
                                      train_projector=False, word_slots=3, lm_layers=12)
    # Keys the saved backbone ignored (Qwen-VL's, changed or not) are dropped, not errors.
    assert bb.qwen_vl == QwenVLConfig()
    assert OLD_MINI_VL["backbone"]["image_words"] == ["blue", "red", "star"]  # the input is not modified
    old_qwen = {"backbone": {**OLD_MINI_VL["backbone"], "name": "qwen2.5-vl", "projector": "mlp", "image_words": [],
                             "word_slots": 3, "image_tap_max_pool": False, "image_grid": 3, "lm_layers": 0}}
    model, meta = upgrade_saved_model(old_qwen)
    qwen = from_dict(ModelConfig, model).backbone
    assert meta == {} and qwen.qwen_vl == QwenVLConfig(max_pixels=5000, freeze_vision=False)
    assert qwen.mini_vl == MiniVLConfig()
    # A free-vector projector ignored word_slots / image_words, and tap max-pooling needs multiscale.
    old_mlp = {"backbone": {"name": "mini-vl", "projector": "mlp", "word_slots": 5, "image_words": ["red"],
                            "image_multiscale": False, "image_tap_max_pool": True}}
    model, meta = upgrade_saved_model(old_mlp)
    assert meta == {} and from_dict(ModelConfig, model).backbone.mini_vl == MiniVLConfig(image_multiscale=False)
    # The current layout passes through unchanged.
    current = to_dict(cfg)
    assert upgrade_saved_model(current) == (current, {})


def test_position_words_are_the_halves_of_the_grid_in_raster_order():
    from basereward.models.mini_vl.projector import position_words, with_position_words

    assert position_words(2, "none") == [[], [], [], []]
    assert position_words(2, "column") == [["left"], ["right"], ["left"], ["right"]]
    # An odd grid's centre line is "middle"; 4 columns split 2 + 2.
    assert [c for c, in position_words(3, "column")[:3]] == ["left", "middle", "right"]
    assert [c for c, in position_words(4, "column")[:4]] == ["left", "left", "right", "right"]
    assert position_words(3, "row_column")[4] == ["middle", "middle"]
    assert position_words(4, "row_column")[15] == ["bottom", "right"]
    # (1 image, 2 cells x 3 slots, H=1): each cell's last slot becomes its position embedding.
    tokens = torch.arange(6, dtype=torch.float32).reshape(1, 6, 1)
    out = with_position_words(tokens, torch.tensor([[[-1.0]], [[-2.0]]]))
    assert out.flatten().tolist() == [0.0, 1.0, -1.0, 3.0, 4.0, -2.0]


def test_position_words_need_the_word_projector():
    with pytest.raises(ConfigError, match="position_words=column: needs the `words` projector"):
        load_config(None, ["model.backbone.mini_vl.position_words=column"])


class _WordTokenizer:
    """One token per word: id = index in a fixed list (" red" and "red" alike)."""

    WORDS = ["red", "star", "blue", "circle", "background", ","]

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.WORDS.index(text.strip())]}


def test_cell_targets_name_a_region_in_every_cell_or_once_at_its_centre():
    from basereward.data.regions import GroundedImage, Region
    from basereward.models.mini_vl.projector import cell_targets

    tok = _WordTokenizer()
    position = {i: i for i in range(len(tok.WORDS))}  # vocabulary position = token id here
    red, star, blue, circle, bg, fill = range(6)
    # 2x2 grid. The red star covers the left half (cells 0 and 2; centre (0.25, 0.5) -> cell 2);
    # the small blue circle sits inside cell 2 too (its centre cell), covering no cell centre.
    item = GroundedImage("x.png", (Region((0.0, 0.0, 0.5, 1.0), "red star"), Region((0.3, 0.6, 0.45, 0.7), "blue circle")))
    cover = cell_targets(item, 2, 3, tok, position, fill)
    assert cover.tolist() == [[red, star, fill], [bg, fill, fill], [red, star, blue], [bg, fill, fill]]
    centre = cell_targets(item, 2, 3, tok, position, fill, naming="centre")
    # Cell 0 keeps only the star's attribute; cell 2 names both (the circle's name is cut at 3 slots).
    assert centre.tolist() == [[red, fill, fill], [bg, fill, fill], [red, star, blue], [bg, fill, fill]]
    # Two regions whose centres share no cell, one covering the other's centre cell: names first.
    item2 = GroundedImage("x.png", (Region((0.0, 0.0, 1.0, 0.5), "red star"), Region((0.0, 0.0, 0.4, 0.4), "blue circle")))
    # Red star: centre (0.5, 0.25) -> cell 1; covers cells 0 and 1. Blue circle: centre cell 0.
    assert cell_targets(item2, 2, 3, tok, position, fill, naming="centre").tolist()[:2] == [[blue, circle, red], [red, star, fill]]
    assert cell_targets(item2, 2, 3, tok, position, fill).tolist()[:2] == [[red, star, blue], [red, star, fill]]


def test_head_rewards_stay_float32_under_bf16_autocast():
    # A bf16 reward keeps ~3 significant digits: the head runs in float32 even inside autocast.
    torch.manual_seed(0)
    head = RewardHead(16, num_layers=2, activation="silu", zero_init_last=False)
    x = torch.randn(4, 16)
    plain = head(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = head(x)
    assert inside.dtype == torch.float32
    assert torch.equal(inside, plain)


def test_mixed_precision_settings_resolve_per_machine(monkeypatch):
    from basereward.training import stages

    # Explicit settings pass through; `auto` never picks bf16 on a CPU (exact fp32 by default).
    for setting in ("no", "bf16", "fp16"):
        assert stages.resolve_mixed_precision(setting, cuda=False) == setting
    # bf16-where-fast on a CPU: native bf16 instructions and a measured speed-up of at least
    # BF16_MIN_SPEEDUP (2.55x on an EPYC Zen 4: bf16; 0.63x on a Xeon without AMX: float32).
    for native, speedup, expected in ((True, 2.55, "bf16"), (True, stages.BF16_MIN_SPEEDUP, "bf16"),
                                      (True, 0.63, "no"), (False, 2.55, "no")):
        monkeypatch.setattr(stages, "cpu_has_native_bf16", lambda native=native: native)
        monkeypatch.setattr(stages, "cpu_bf16_speedup", lambda speedup=speedup: speedup)
        assert stages.resolve_mixed_precision("auto", cuda=False) == "no"
        assert stages.resolve_mixed_precision("bf16-where-fast", cuda=False) == expected

    # Without native instructions nothing is measured.
    def no_probe():
        raise AssertionError("measured bf16 on a CPU without native bf16")

    monkeypatch.setattr(stages, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(stages, "cpu_bf16_speedup", no_probe)
    assert stages.resolve_mixed_precision("bf16-where-fast", cuda=False) == "no"
    with pytest.raises(ConfigError, match="mixed_precision"):
        load_config(None, ["train.mixed_precision=bf17"])


def test_cpu_bf16_probe_measures_once_and_leaves_the_seeded_draws_alone(capsys):
    from basereward.training import stages

    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    speedup = stages.cpu_bf16_speedup.__wrapped__(repeats=1)  # uncached: a fresh measurement
    assert math.isfinite(speedup) and speedup > 0
    assert torch.equal(torch.rand(4), expected)  # the probe's layer and inputs use their own RNG
    assert "bf16-where-fast: bf16 measured" in capsys.readouterr().err
    # Cached per process: the scorer asks once per batch.
    first = stages.cpu_bf16_speedup()
    capsys.readouterr()
    assert stages.cpu_bf16_speedup() == first and capsys.readouterr().err == ""


def test_runs_of_different_precision_follow_each_other_in_one_process():
    # Accelerate keeps one precision per process; each training run sets its own.
    from accelerate import Accelerator

    from basereward.training.stages import _release_precision

    _release_precision("bf16")
    assert Accelerator(mixed_precision="bf16").mixed_precision == "bf16"
    _release_precision("no")
    assert Accelerator(mixed_precision="no").mixed_precision == "no"
    _release_precision("no")  # same precision: the state stays
    assert Accelerator(mixed_precision="no").mixed_precision == "no"
