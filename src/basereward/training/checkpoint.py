"""Resumable checkpoints in safetensors + JSON (no pickle), written atomically.

    <output_dir>/checkpoints/step-000040/
        model/                 RewardModel.save_pretrained (head + trainable backbone tensors)
        optimizer.safetensors  AdamW moments and step counts, keyed by parameter name
        trainer_state.json     optimizer hyper-parameters, scheduler state, step, metrics
        rng.safetensors        torch CPU (and CUDA) RNG states
        config.yaml            the resolved run config

A checkpoint is read whole before anything is restored (`read_checkpoint`): a truncated, missing
or unparsable file is a `CheckpointError` naming it, so `train.resume=auto` can fall back to the
previous checkpoint instead of half-restoring a damaged one.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..errors import BaseRewardError, TrainingError
from ..io import finite, read_json, replace_dir, write_json, write_text
from ..models.reward_model import BACKBONE_NAME, CONFIG_NAME, HEAD_NAME

_STEP_RE = re.compile(r"^step-(\d+)$")


class CheckpointError(TrainingError):
    """A checkpoint cannot be resumed from: a file is missing, truncated or unparsable."""


def optimizer_state_tensors(opt: torch.optim.Optimizer, names: dict[int, str]) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Flatten an optimizer's per-parameter state to {"<param name>/<key>": tensor} + group hparams."""
    state = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for idx, pstate in state["state"].items():
        name = names[idx]
        for key, val in pstate.items():
            t = val if torch.is_tensor(val) else torch.tensor(val)
            tensors[f"{name}/{key}"] = t.detach().contiguous().cpu()
    groups = [{k: v for k, v in g.items() if k != "params"} | {"param_names": [names[i] for i in g["params"]]}
              for g in state["param_groups"]]
    return tensors, groups


def load_optimizer_state(opt: torch.optim.Optimizer, names: dict[int, str], tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    current = opt.state_dict()
    by_name = {v: k for k, v in names.items()}
    new_state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        pname, skey = key.rsplit("/", 1)
        if pname not in by_name:
            raise ValueError(f"checkpoint optimizer state for unknown parameter {pname}")
        new_state.setdefault(by_name[pname], {})[skey] = t
    new_groups = []
    for g_cur, g_saved in zip(current["param_groups"], groups):
        g = dict(g_cur)
        g.update({k: v for k, v in g_saved.items() if k != "param_names"})
        new_groups.append(g)
    opt.load_state_dict({"state": new_state, "param_groups": new_groups})


def rng_state() -> dict[str, torch.Tensor]:
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda_{i}"] = s
    return out


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda_"))]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)


def write_checkpoint(
    output_dir: Path,
    step: int,
    model,
    optimizer: torch.optim.Optimizer,
    param_names: dict[int, str],
    scheduler,
    trainer_state: dict[str, Any],
    config_yaml: str,
    keep: int,
) -> Path:
    """Write step-N atomically (tmp dir + rename) and prune old ones, keeping `keep`."""
    root = output_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save_pretrained(tmp / "model")
    tensors, groups = optimizer_state_tensors(optimizer, param_names)
    if tensors:
        save_file(tensors, str(tmp / "optimizer.safetensors"))
    save_file(rng_state(), str(tmp / "rng.safetensors"))
    # `optimizer_tensors` lets a reader tell "no optimizer state yet" from a lost file.
    state = dict(trainer_state, step=step, optimizer_groups=groups, scheduler=scheduler.state_dict(),
                 optimizer_tensors=bool(tensors))
    write_json(tmp / "trainer_state.json", finite(state), default=float)
    write_text(tmp / "config.yaml", config_yaml)
    replace_dir(tmp, final)
    for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(output_dir: Path) -> list[Path]:
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def _tensors(path: Path, required: bool = True) -> dict[str, torch.Tensor]:
    if not path.is_file():
        if required:
            raise CheckpointError(f"{path}: missing")
        return {}
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error type for every kind of damage
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def _check_safetensors(path: Path) -> None:
    """Header and size only (a truncated file fails here), without reading the tensors twice."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def _check_model_dir(model_dir: Path) -> None:
    meta = _json(model_dir / CONFIG_NAME)
    if not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"{model_dir / CONFIG_NAME}: no \"model\" section")
    _check_safetensors(model_dir / HEAD_NAME)
    if meta.get("backbone_tensors") or (model_dir / BACKBONE_NAME).exists():
        _check_safetensors(model_dir / BACKBONE_NAME)


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        data = read_json(path)
    except BaseRewardError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return data


def read_checkpoint(ckpt: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(trainer state, optimizer tensors, RNG tensors) of a checkpoint whose every file was found
    readable (the model's safetensors by header and size); CheckpointError("file: reason") if not."""
    state = _json(ckpt / "trainer_state.json")
    missing = [k for k in ("step", "scheduler", "optimizer_groups") if k not in state]
    if missing or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{ckpt / 'trainer_state.json'}: incomplete (no valid {', '.join(missing) or 'step'})")
    opt = _tensors(ckpt / "optimizer.safetensors", required=bool(state.get("optimizer_tensors")))
    rng = _tensors(ckpt / "rng.safetensors")
    if "torch_cpu" not in rng:
        raise CheckpointError(f"{ckpt / 'rng.safetensors'}: no torch_cpu RNG state")
    _check_model_dir(ckpt / "model")
    return state, opt, rng
