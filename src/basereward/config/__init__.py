"""Typed, frozen configuration.

A run is described by one `Config` (model, data, loss, train). Presets live in `configs/*.yaml`;
`load_config(path, ["train.lr=3e-6", ...])` applies dotted overrides. Unknown keys and values of the
wrong type are `ConfigError`s. Derived quantities are methods, never fields rewritten at run time.

    schema.py   the dataclasses and their checks
    loading.py  YAML / dict / override -> Config, and back
    compat.py   moved keys, and migration of model configs saved in the old flat layout
"""

from ..errors import ConfigError
from .compat import MOVED, REMOVED, upgrade_saved_model
from .loading import apply_overrides, from_dict, load_config, save_config, to_dict
from .schema import (
    Activation,
    BackboneConfig,
    CausalLMConfig,
    Config,
    DataConfig,
    HeadConfig,
    JudgeConfig,
    LoraConfig,
    LossConfig,
    MiniVLConfig,
    ModelConfig,
    QwenVLConfig,
    TrainConfig,
    validate,
)

__all__ = [
    "Activation", "BackboneConfig", "CausalLMConfig", "Config", "ConfigError", "DataConfig", "HeadConfig", "JudgeConfig", "LoraConfig",
    "LossConfig", "MOVED", "MiniVLConfig", "ModelConfig", "QwenVLConfig", "REMOVED", "TrainConfig",
    "apply_overrides", "from_dict", "load_config", "save_config", "to_dict", "upgrade_saved_model", "validate",
]
