"""Keys that moved, and saved model configs written before they moved.

Until 0.1 every backbone knob sat flat under `model.backbone` and mini-vl's stage settings under
`train`. A user config that still uses an old key gets an error naming the new place; a
`model_config.json` saved in the old layout is migrated when the model loads (saved models keep
loading).
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import ConfigError

_MINI_VL_KEYS = ("image_size", "image_grid", "image_multiscale", "image_tap_max_pool", "projector",
                 "train_projector", "word_slots", "lm_layers", "share_prefix")
_QWEN_VL_KEYS = ("min_pixels", "max_pixels", "freeze_vision")

MOVED: dict[str, str] = {
    **{f"model.backbone.{k}": f"model.backbone.mini_vl.{k}" for k in _MINI_VL_KEYS},
    **{f"model.backbone.{k}": f"model.backbone.qwen_vl.{k}" for k in _QWEN_VL_KEYS},
    **{f"train.{k}": f"model.backbone.mini_vl.{k}" for k in ("cache_trunk", "align_epochs", "align_lr")},
}
"""Old dotted key -> new dotted key."""

REMOVED: dict[str, str] = {
    "model.backbone.image_words": "the `words` projector's vocabulary is no longer a setting: the "
    "alignment stage takes it from data.alignment and it is saved with the model",
}
"""Old dotted key -> why it is gone."""


def _flat_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in data.items():
        key = f"{prefix}{k}"
        out.append(key)
        if isinstance(v, dict):
            out.extend(_flat_keys(v, key + "."))
    return out


def check_moved_keys(data: dict[str, Any], where: str) -> None:
    """ConfigError for the first key of `data` (a nested config dict) that moved or was removed."""
    for key in _flat_keys(data):
        if key in MOVED:
            raise ConfigError(f"{where}: {key} has moved to {MOVED[key]}")
        if key in REMOVED:
            raise ConfigError(f"{where}: {key} was removed: {REMOVED[key]}")


_SECTION_OF_BACKBONE = {"mini-vl": "mini_vl", "qwen2.5-vl": "qwen_vl", "qwen2-vl": "qwen_vl"}


def upgrade_saved_model(model: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A saved `model` dict (either layout) -> (the dict in the current layout, backbone metadata
    that the old layout kept in the config).

    Old flat keys move into the section of the saved backbone. Values the saved backbone ignored
    when it was trained (another backbone's keys, `word_slots` without the `words` projector,
    `image_tap_max_pool` without `image_multiscale`) are dropped: they are errors in a new config,
    but a saved model must keep loading. The old `image_words` of a `words` projector becomes the
    metadata `{"image_words": [...]}` that mini-vl restores.
    """
    model = copy.deepcopy(model)
    bb = model.get("backbone")
    if isinstance(bb, dict) and "max_prompt_length" not in bb:
        # Saved before the per-item truncation rule, when a prompt was cut only as far as its
        # group's longest response needed: 3/4 of max_length keeps such a model's prompts whole
        # in the cases it was trained on (the demo's 74-token visual prompts of 128) while
        # leaving every response a quarter of the sequence. Newer saves always carry the key.
        bb["max_prompt_length"] = int(bb.get("max_length", 2048)) * 3 // 4
    if not isinstance(bb, dict) or not any(k in bb for k in (*_MINI_VL_KEYS, *_QWEN_VL_KEYS, "image_words")):
        return model, {}
    words = bb.pop("image_words", None)
    own = _SECTION_OF_BACKBONE.get(bb.get("name", "mini-vl"))
    for section, keys in (("mini_vl", _MINI_VL_KEYS), ("qwen_vl", _QWEN_VL_KEYS)):
        for k in keys:
            if k in bb:
                value = bb.pop(k)
                if section == own:
                    bb.setdefault(section, {})[k] = value
    meta: dict[str, Any] = {}
    if own == "mini_vl":
        mv = bb.setdefault("mini_vl", {})
        if mv.get("projector", "mlp") != "words":
            mv.pop("word_slots", None)
        elif words:
            meta["image_words"] = list(words)
        if not mv.get("image_multiscale", True):
            mv.pop("image_tap_max_pool", None)
    return model, meta
