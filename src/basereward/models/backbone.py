"""The backbone interface and registry.

A backbone turns a batch of `Group`s (prompt + images + responses) into token sequences and runs
them, returning the final hidden states. Sequences are laid out group by group in the order of the
groups and of their responses; each group's images are encoded ONCE and shared by all of its
responses (a preference pair is a group of two, so its image is encoded once, not twice).

`collate` runs on CPU (DataLoader workers may call it) and returns a dict of tensors with at least
  input_ids        (N, T)  token ids, right-padded
  attention_mask   (N, T)  1 for real tokens
  response_lengths (N,)    tokens of the response part (for length normalisation)
  group_sizes      (G,)    responses per group, sum = N
plus whatever the backbone needs (pixel values, grids, ...). `forward(batch)` returns hidden
states (N, T, H) aligned with `attention_mask`.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

from ..config import BackboneConfig
from ..data.schema import Group

_REGISTRY: dict[str, Callable[[BackboneConfig], "Backbone"]] = {}


def register_backbone(name: str) -> Callable:
    """Class decorator: make a Backbone subclass buildable by `build_backbone(cfg)` as `name`."""

    def deco(cls: type) -> type:
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return deco


def available_backbones() -> list[str]:
    _ensure_registered()
    return sorted(_REGISTRY)


def build_backbone(cfg: BackboneConfig) -> "Backbone":
    """Instantiate the backbone named by `cfg.name` with its pretrained weights."""
    _ensure_registered()
    if cfg.name not in _REGISTRY:
        from ..errors import ConfigError

        raise ConfigError(f"model.backbone.name: unknown backbone {cfg.name!r}; choose from {sorted(_REGISTRY)}")
    return _REGISTRY[cfg.name](cfg)


def _ensure_registered() -> None:
    # Importing the modules runs their @register_backbone decorators.
    import importlib

    for mod in ("mini_vl", "qwen_vl", "causal_lm"):
        importlib.import_module(f"{__package__}.{mod}")


class Backbone(nn.Module):
    """Base class. Subclasses set `hidden_size` and implement `collate` and `forward`."""

    registry_name: ClassVar[str] = ""
    hidden_size: int
    # Parameter-name prefixes saved with a trained model even when frozen (parts that are not in
    # the pretrained weights, e.g. a projector trained only by an earlier stage).
    always_saved: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def collate(self, groups: Sequence[Group]) -> dict[str, Any]:
        raise NotImplementedError

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

    # The language-model module that LoRA / layer freezing / gradient checkpointing act on.
    def language_model(self) -> nn.Module:
        raise NotImplementedError

    def base_weights_id(self) -> str:
        """Where the frozen base weights come from (recorded in the saved model config)."""
        return self.cfg.path


def conversation_text(prompt: str, response: str, system: str = "", image_placeholder: str = "") -> tuple[str, str]:
    """ChatML prefix (system + user turn with optional image placeholder) and the assistant part.

    Returned separately so the collator can count response tokens and truncate the prompt only.
    """
    prefix = ""
    if system:
        prefix += f"<|im_start|>system\n{system}<|im_end|>\n"
    prefix += f"<|im_start|>user\n{image_placeholder}{prompt}<|im_end|>\n<|im_start|>assistant\n"
    return prefix, f"{response}<|im_end|>"


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-padding token of each row, for left or right padding. (N, T) -> (N,)"""
    T = attention_mask.shape[1]
    return (T - 1) - attention_mask.flip(1).to(torch.long).argmax(dim=1)
