"""RewardModel = backbone -> hidden state of the last non-padding token -> RewardHead.

Saved layout (safetensors only, never pickle):
    model_config.json            the resolved ModelConfig, the backbone's metadata (values it
                                 derived from data, e.g. mini-vl's word vocabulary) and which
                                 backbone tensors were saved
    reward_head.safetensors      the head
    backbone.safetensors         the backbone's trainable tensors (projector, LoRA adapters,
                                 unfrozen layers); frozen base weights are re-read from their source
The directory is written beside its target and renamed into place (never half a model).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import ModelConfig, from_dict, to_dict, upgrade_saved_model
from ..data.schema import Group
from ..errors import BaseRewardError, ConfigError
from ..io import finite, read_json, replace_dir, write_json, write_text
from .backbone import Backbone, build_backbone, last_token_index
from .head import RewardHead

CONFIG_NAME = "model_config.json"
HEAD_NAME = "reward_head.safetensors"
BACKBONE_NAME = "backbone.safetensors"


class RewardModel(nn.Module):
    """Scores token sequences: (N, T) batch -> (N,) rewards."""

    def __init__(self, cfg: ModelConfig, backbone: Backbone | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone if backbone is not None else build_backbone(cfg.backbone)
        self._started_from: frozenset[str] = frozenset()  # backbone tensors taken over by init_from
        h = cfg.head
        self.head = RewardHead(
            self.backbone.hidden_size,
            num_layers=h.num_layers,
            activation=h.activation,
            hidden_size=h.hidden_size,
            zero_init_last=h.zero_init_last,
        )

    @property
    def collator(self) -> Callable[[Sequence[Group]], dict[str, Any]]:
        """The backbone's picklable collator (hand this, not the model, to DataLoader workers)."""
        return self.backbone.collator

    def collate(self, groups: Sequence[Group]) -> dict[str, Any]:
        """CPU batch for `groups` (see models/backbone.py for the keys)."""
        return self.backbone.collate(groups)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """(N,) rewards; for a generative paradigm (N, 2) [target NLL, log-odds of the right verdict]
        of judge examples (models/generation.py), read through the LM head instead of the head."""
        hidden = self.backbone(batch)  # (N, T, H)
        if self.cfg.paradigm != "naive":
            from .generation import judge_outputs

            return judge_outputs(self.backbone, batch, hidden)
        mask = self.backbone.pool_mask(batch).to(hidden.device)  # (N, T) aligned with hidden
        if self.cfg.head.pooling == "mean":
            w = self.backbone.response_mask(batch, mask).to(hidden.dtype).unsqueeze(-1)  # (N, T, 1)
            pooled = (hidden * w).sum(1) / w.sum(1).clamp_min(1.0)  # (N, H)
        else:
            idx = last_token_index(mask)  # (N,)
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]  # (N, H)
        return self.head(pooled)  # the head casts to its own dtype (float32 by default)

    # ------------------------------------------------------------------ persistence
    def trainable_backbone_state(self) -> dict[str, torch.Tensor]:
        """The backbone tensors that differ from the base weights, by parameter name: the trained
        ones (requires_grad), those an earlier stage made (alignment: `Backbone.always_saved`) and
        those taken over from a saved model (`init_from`)."""
        keep = self.backbone.always_saved
        return {n: p.detach() for n, p in self.backbone.named_parameters()
                if p.requires_grad or (keep and n.startswith(keep)) or n in self._started_from}

    def init_from(self, model_dir: str | Path) -> dict[str, Any]:
        """Start this model from a saved one (`train.init_from`): its backbone metadata (mini-vl's
        vocabulary), every backbone tensor it saved, and its head when both are Naive-RMs with the
        same head shape. The paradigm may differ: a judge can start from a trained Naive-RM's
        layers. Tensors taken over are saved with this model even where they stay frozen here, so
        the saved model reloads as trained. Returns what was taken over."""
        d = Path(model_dir)
        try:
            src_cfg, backbone_meta = read_model_config(d)
        except BaseRewardError as e:
            raise ConfigError(f"train.init_from: {e}") from None
        where = f"train.init_from: {d}"
        if src_cfg.backbone.name != self.cfg.backbone.name:
            raise ConfigError(f"{where}: a {src_cfg.backbone.name!r} model; this run trains {self.cfg.backbone.name!r}")
        src_base = read_json(d / CONFIG_NAME).get("base_weights")
        if src_base != self.backbone.base_weights_id():
            raise ConfigError(f"{where}: built on base weights {src_base!r}; this run uses "
                              f"{self.backbone.base_weights_id()!r}")
        state = _read_tensors(d / BACKBONE_NAME) if (d / BACKBONE_NAME).is_file() else {}
        head_state = _read_tensors(d / HEAD_NAME)
        self.backbone.load_metadata(backbone_meta)
        _copy_into(self.backbone, state, where, ConfigError)
        self._started_from = frozenset(state)
        own_head = self.head.state_dict()
        head = (src_cfg.paradigm == "naive" == self.cfg.paradigm and set(head_state) == set(own_head)
                and all(head_state[k].shape == own_head[k].shape for k in own_head))
        if head:
            self.head.load_state_dict(head_state)
        return {"model": str(d), "backbone_tensors": len(state), "head": head}

    def save_pretrained(self, out_dir: str | Path, extra: dict[str, Any] | None = None,
                        files: dict[str, str] | None = None) -> Path:
        """Write the model (and `files`: name -> text, e.g. the training config) to `out_dir`
        atomically: everything goes to a sibling temporary directory that then replaces
        `out_dir`, so an interrupted save leaves the previous model (or none), never half of one."""
        out = Path(out_dir)
        if out.exists() and not _replaceable(out):
            raise BaseRewardError(f"{out}: exists and is not a basereward model directory; not replacing it")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            tmp.mkdir()
            self._write(tmp, extra)
            for name, text in (files or {}).items():
                write_text(tmp / name, text)
            replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out

    def _write(self, out: Path, extra: dict[str, Any] | None) -> None:
        head_state = {k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}
        save_file(head_state, str(out / HEAD_NAME))
        bb_state = {k: v.contiguous().cpu() for k, v in self.trainable_backbone_state().items()}
        # safetensors refuses tensors that share storage; clone the (rare) tied ones.
        seen: set[int] = set()
        for k, v in bb_state.items():
            ptr = v.untyped_storage().data_ptr()
            if ptr in seen:
                bb_state[k] = v.clone()
            seen.add(ptr)
        if bb_state:
            save_file(bb_state, str(out / BACKBONE_NAME))
        meta = {
            "format": "basereward",
            "model": to_dict(self.cfg),
            "base_weights": self.backbone.base_weights_id(),
            "backbone_metadata": self.backbone.metadata(),
            "backbone_tensors": sorted(bb_state),
            **(extra or {}),
        }
        # Written last: a directory without it is never taken for a model.
        write_json(out / CONFIG_NAME, finite(meta))

    def load_trainable(self, model_dir: str | Path) -> None:
        """Copy a saved model's backbone metadata, head and trainable backbone tensors into this
        model (same config)."""
        d = Path(model_dir)
        _, backbone_meta = read_model_config(d)
        self.backbone.load_metadata(backbone_meta)
        try:
            self.head.load_state_dict(_read_tensors(d / HEAD_NAME))
        except RuntimeError as e:  # wrong shapes or names: another head config
            raise BaseRewardError(f"{d / HEAD_NAME}: does not fit this model's head ({str(e).splitlines()[0]})") from None
        if not (d / BACKBONE_NAME).is_file():
            return
        _copy_into(self.backbone, _read_tensors(d / BACKBONE_NAME), str(d), BaseRewardError)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str | torch.device | None = None) -> "RewardModel":
        cfg, _ = read_model_config(model_dir)
        model = cls(cfg)
        model.load_trainable(model_dir)
        if device is not None:
            model.to(device)
        return model.eval()


def _copy_into(backbone: nn.Module, state: dict[str, torch.Tensor], where: str,
               error: type[BaseRewardError]) -> None:
    """Copy saved tensors into the backbone's parameters of the same names, or raise `error` (one
    line) when a name is not a parameter here or a shape differs (another backbone configuration)."""
    params = dict(backbone.named_parameters())
    unknown = [n for n in state if n not in params]
    if unknown:
        raise error(f"{where}: saved backbone tensors not in the model: {unknown[:3]} "
                    f"(another model.backbone configuration)")
    shapes = [f"{n} {tuple(t.shape)} vs {tuple(params[n].shape)}" for n, t in state.items()
              if t.shape != params[n].shape]
    if shapes:
        raise error(f"{where}: saved tensor shapes differ from this model's: {shapes[:2]}")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t.to(params[n].dtype))


def _replaceable(path: Path) -> bool:
    """A directory a save may replace whole: empty, or a saved model (never a folder of other files)."""
    return path.is_dir() and (not any(path.iterdir()) or (path / CONFIG_NAME).is_file())


def read_model_config(model_dir: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """(ModelConfig, backbone metadata) of a saved model; files in the pre-0.1 flat layout are
    migrated (config/compat.py)."""
    d = Path(model_dir)
    cfg_path = d / CONFIG_NAME
    if not cfg_path.is_file():
        raise BaseRewardError(f"{d}: not a basereward model directory (no {CONFIG_NAME})")
    meta = read_json(cfg_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        raise BaseRewardError(f"{cfg_path}: not a basereward model config (no \"model\" section)")
    model, legacy = upgrade_saved_model(meta["model"])
    cfg = from_dict(ModelConfig, model, where=f"{cfg_path}:model")
    return cfg, {**legacy, **meta.get("backbone_metadata", {})}


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, or one line that says it is missing or unreadable (truncated, not
    safetensors) instead of a traceback."""
    if not path.is_file():
        raise BaseRewardError(f"{path}: missing (the model directory is incomplete)")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error type for every kind of damage
        raise BaseRewardError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
