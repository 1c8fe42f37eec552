"""The backbone interface and registry.

A backbone turns a batch of `Group`s (prompt + images + responses) into token sequences and runs
them, returning the final hidden states. Sequences are laid out group by group in the order of the
groups and of their responses; each group's images are encoded ONCE and shared by all of its
responses (a preference pair is a group of two, so its image is encoded once, not twice).

`backbone.collator` is a plain picklable object (tokenizer + settings, never the model) that
DataLoader workers call on CPU; it returns a dict of tensors with at least
  input_ids        (N, T)  token ids, right-padded
  attention_mask   (N, T)  1 for real tokens
  response_lengths (N,)    tokens of the response part (for length normalisation)
  group_sizes      (G,)    responses per group, sum = N
plus whatever the backbone needs (pixel values, grids, ...). `forward(batch)` returns hidden
states (N, T, H) aligned with `pool_mask(batch)`.

Optional abilities are declared in `capabilities`; asking a backbone for one it lacks is a
`ConfigError` from this base class that names the setting and the backbones that have it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

from ..config import BackboneConfig, validate
from ..data.schema import Group
from ..errors import ConfigError

_REGISTRY: dict[str, Callable[[BackboneConfig], "Backbone"]] = {}


@dataclass(frozen=True)
class Capabilities:
    """What a backbone can do beyond collate + forward."""

    alignment: bool = False
    """An alignment stage (`align`) that trains its new parts on grounded captions (`data.alignment`)."""
    trunk_cache: bool = False
    """Can keep the output of its frozen lower layers during training (`enable_trunk_cache`)."""
    prefix_sharing: bool = False
    """Runs a group's shared prefix once and its responses on the cached keys/values (`shares_prefix`)."""
    image_feature_cache: bool = False
    """Can encode images ahead of scoring and reuse the features (`cache_image_features`)."""


_WHAT = {
    "alignment": "alignment stage",
    "trunk_cache": "frozen-trunk cache",
    "prefix_sharing": "prefix sharing",
    "image_feature_cache": "image-feature cache",
}


def register_backbone(name: str) -> Callable:
    """Class decorator: make a Backbone subclass buildable by `build_backbone(cfg)` as `name`."""

    def deco(cls: type) -> type:
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return deco


def available_backbones(capability: str = "") -> list[str]:
    """Registered backbone names, optionally only those that declare `capability`."""
    _ensure_registered()
    if capability and capability not in {f.name for f in fields(Capabilities)}:
        raise ValueError(f"unknown capability {capability!r}")
    return sorted(n for n, cls in _REGISTRY.items() if not capability or getattr(cls.capabilities, capability))


def build_backbone(cfg: BackboneConfig) -> "Backbone":
    """Instantiate the backbone named by `cfg.name` with its pretrained weights."""
    names = available_backbones()
    if cfg.name not in names:
        raise ConfigError(f"model.backbone.name: unknown backbone {cfg.name!r}; choose from {names}")
    # A config built in code (not through load_config) gets the same checks as a loaded one.
    validate(cfg, "model.backbone")
    return _REGISTRY[cfg.name](cfg)


def _ensure_registered() -> None:
    # Importing the modules runs their @register_backbone decorators.
    import importlib

    for mod in ("mini_vl", "qwen_vl", "causal_lm"):
        importlib.import_module(f"{__package__}.{mod}")


class Backbone(nn.Module):
    """Base class. Subclasses set `hidden_size` and `collator` and implement `forward`."""

    registry_name: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    hidden_size: int
    collator: Callable[[Sequence[Group]], dict[str, Any]]
    # Parameter-name prefixes saved with a trained model even when frozen (parts that are not in
    # the pretrained weights, e.g. a projector trained only by an earlier stage).
    always_saved: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def collate(self, groups: Sequence[Group]) -> dict[str, Any]:
        """CPU batch for `groups` (the same as calling `self.collator`)."""
        return self.collator(groups)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def pool_mask(self, batch: dict[str, Any]) -> torch.Tensor:
        """The mask aligned with forward()'s hidden states; the reward is read at its last 1."""
        return batch["attention_mask"]

    def response_mask(self, batch: dict[str, Any], pool_mask: torch.Tensor) -> torch.Tensor:
        """1 on the response tokens of `pool_mask`'s layout (right-padded sequences whose last
        `response_lengths` real tokens are the response)."""
        T = pool_mask.shape[1]
        end = pool_mask.sum(1, keepdim=True)  # (N, 1) real tokens
        start = end - batch["response_lengths"].to(pool_mask.device).unsqueeze(1)
        pos = torch.arange(T, device=pool_mask.device).unsqueeze(0)
        return ((pos >= start) & (pos < end)).to(pool_mask.dtype)

    def base_weights_id(self) -> str:
        """Where the frozen base weights come from (recorded in the saved model config)."""
        return self.cfg.path

    # ------------------------------------------------------------------ saved alongside the weights
    def metadata(self) -> dict[str, Any]:
        """JSON values the backbone derived from data (not from its config), saved in
        model_config.json and handed back to `load_metadata` when the model is loaded."""
        return {}

    def load_metadata(self, meta: dict[str, Any]) -> None:
        if meta:
            raise ConfigError(f"backbone {self.registry_name!r} has no saved metadata, got keys {sorted(meta)}")

    # ------------------------------------------------------------------ optional abilities
    def _unsupported(self, capability: str, setting: str) -> ConfigError:
        have = available_backbones(capability)
        return ConfigError(f"{setting}: backbone {self.registry_name!r} has no {_WHAT[capability]} "
                           f"(backbones with it: {', '.join(have) or 'none'})")

    def align(self, items: Sequence[Any], *, seed: int, progress: bool = True) -> dict[str, Any]:
        """The alignment stage on grounded captions (data/regions.py); its settings come from the
        backbone's own config section. Returns the stage's final metrics."""
        raise self._unsupported("alignment", "data.alignment")

    def missing_alignment(self) -> str:
        """Why the backbone cannot run before its alignment stage (e.g. no vocabulary yet), or ""
        when it can."""
        return ""

    def uses_trunk_cache(self) -> bool:
        """True when the backbone's own config turns the frozen-trunk cache on for training."""
        return False

    def enable_trunk_cache(self) -> int:
        """Start caching the frozen trunk during training; returns the first trained layer."""
        raise self._unsupported("trunk_cache", "model.backbone.mini_vl.cache_trunk")

    def disable_trunk_cache(self) -> int:
        """Stop caching and free the cached states; returns how many groups were cached."""
        return 0

    def shares_prefix(self) -> bool:
        """Whether forward() runs each group's prefix once (hidden states then cover responses only)."""
        return False

    def cache_image_features(self, images: Sequence[Any], *, progress: bool = True, desc: str = "encode images") -> None:
        """Encode image files once ahead of scoring so later batches with them skip the encoder.
        An optimisation: a backbone without the cache (`capabilities.image_feature_cache`) encodes
        images in every batch, so calling this is always safe and does nothing there."""


def conversation_text(prompt: str, response: str, system: str = "", image_placeholder: str = "",
                      history: Sequence[tuple[str, str]] = ()) -> tuple[str, str]:
    """ChatML prefix (system, earlier turns, the user turn) and the assistant part.

    The image placeholder goes at the start of the first user turn. Returned separately so the
    collator can count response tokens and truncate the prompt only.
    """
    prefix = ""
    if system:
        prefix += f"<|im_start|>system\n{system}<|im_end|>\n"
    placed = False
    for role, content in (*history, ("user", prompt)):
        head = image_placeholder if role == "user" and not placed else ""
        placed = placed or role == "user"
        prefix += f"<|im_start|>{role}\n{head}{content}<|im_end|>\n"
    prefix += "<|im_start|>assistant\n"
    return prefix, f"{response}<|im_end|>"


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-padding token of each row, for left or right padding. (N, T) -> (N,)"""
    T = attention_mask.shape[1]
    return (T - 1) - attention_mask.flip(1).to(torch.long).argmax(dim=1)
