"""Typed, frozen configuration.

A run is described by one `Config` (model, data, loss, train). Presets live in `configs/*.yaml`;
`load_config(path, ["train.lr=3e-6", ...])` applies dotted overrides. Unknown keys and values of the
wrong type are `ConfigError`s. Derived quantities are methods, never fields rewritten at run time.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError

Activation = Literal["none", "tanh", "relu", "silu", "gelu"]


@dataclass(frozen=True)
class LoraConfig:
    enabled: bool = False
    """Wrap the language model in peft LoRA adapters (the base weights stay frozen)."""
    r: int = 16
    """LoRA rank."""
    alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = 0.0
    """Dropout on the LoRA branch."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    """Module names (suffixes) inside the language model that receive adapters."""


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "mini-vl"
    """Registry name: `qwen2.5-vl`, `qwen2-vl`, `causal-lm` or `mini-vl` (embedded default)."""
    path: str = ""
    """Hub id or local directory of the pretrained weights; empty for mini-vl's embedded weights."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Parameter dtype. `auto` = bfloat16 on a GPU that supports it, float32 otherwise."""
    attn_implementation: str = "sdpa"
    """Attention kernel passed to transformers (`sdpa`, `eager`, `flash_attention_2`)."""
    freeze_vision: bool = True
    """Freeze the vision encoder (the paper trains the LM and head; the ViT stays frozen)."""
    freeze_lm: bool = False
    """Freeze the language model (only projector/adapters/head train)."""
    train_lm_layers: int = -1
    """With `freeze_lm` false: train only the top N decoder layers (-1 = all)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA on the language model (implies the base LM weights are frozen)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    max_length: int = 2048
    """Maximum tokens per sequence; longer prompts are cut from the left (the response is kept)."""
    min_pixels: int = 3136
    """Qwen-VL image processor: minimum pixels per image."""
    max_pixels: int = 401408
    """Qwen-VL image processor: maximum pixels per image (caps visual tokens per image)."""
    image_size: int = 224
    """mini-vl: images are resized to this square size before the encoder."""
    image_grid: int = 3
    """mini-vl: the encoder's feature map is pooled to an image_grid x image_grid token grid."""
    image_multiscale: bool = True
    """mini-vl: also feed pooled features of two earlier CNN stages (colour/position detail)."""
    image_tap_max_pool: bool = False
    """mini-vl: pool the earlier stages per cell by maximum as well as by average (a small object
    is not averaged away by the background around it); the demo turns it on."""
    projector: Literal["mlp", "words"] = "mlp"
    """mini-vl: `mlp` maps each grid cell to a free vector (LLaVA); `words` maps it to `word_slots`
    soft words: distributions over `image_words` whose expected input embeddings are the image
    tokens, so the LM reads an image as (soft) text. `words` is trained first on grounded captions
    (`data.alignment`) and is the embedded default: on CPU budgets the LM learns to use it in
    minutes, where free vectors need far more data and steps."""
    train_projector: bool = True
    """mini-vl: keep training the projector during reward training. `false`: it trains in the
    alignment stage only; with the LM's lower layers frozen too, nothing below the trained layers
    then needs gradients (cheaper steps, and `train.cache_trunk` becomes possible)."""
    word_slots: int = 3
    """mini-vl `words` projector: soft-word tokens per grid cell (a cell reads like "red star ,")."""
    image_words: tuple[str, ...] = ()
    """mini-vl `words` projector: its vocabulary. Filled from `data.alignment` when training starts
    and saved with the model; set it by hand only to reuse a vocabulary."""
    lm_layers: int = 0
    """mini-vl: keep only the first N decoder layers of the language model (0 = all 30); a
    shallower LM trains several times faster on CPU."""
    system_prompt: str = ""
    """Optional system message prepended to every conversation."""
    share_prefix: bool = True
    """mini-vl: run a group's shared prefix (chat head, image tokens, prompt) once and its responses
    on top of the cached keys/values, instead of once per response (off with gradient checkpointing)."""


@dataclass(frozen=True)
class HeadConfig:
    pooling: Literal["last", "mean"] = "last"
    """Which hidden state the head reads: the last non-padding token (the paper's Naive-RM), or the
    mean over the response tokens (where the backbone reports them, else over all real tokens)."""
    num_layers: int = 2
    """Linear layers in the reward head (1 = linear head; the paper's best is 2)."""
    activation: Activation = "silu"
    """Nonlinearity between layers (the paper's best is SiLU)."""
    hidden_size: int = 0
    """Width of the hidden layers; 0 = the backbone's hidden size (the paper's choice)."""
    zero_init_last: bool = True
    """Initialise the last layer to zero so every reward starts at 0 (first-step BT loss = ln 2)."""


@dataclass(frozen=True)
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    """The network that produces hidden states."""
    head: HeadConfig = field(default_factory=HeadConfig)
    """The MLP on the last non-padding token's hidden state."""


@dataclass(frozen=True)
class LossConfig:
    zero_coef: float = 0.0
    """lambda of the zero-coefficient regulariser lambda * mean((r_w + r_l)^2); the paper finds it hurts."""
    length_norm: bool = False
    """Divide each reward by log(len + 1) of its response tokens before the loss; the paper finds it hurts."""
    margin: float = 0.0
    """Optional margin m in -logsigmoid(r_w - r_l - m)."""


@dataclass(frozen=True)
class DataConfig:
    train: tuple[str, ...] = ()
    """Training pair files (JSONL, the pair format) or generator specs (see README)."""
    validation: str = ""
    """Validation pair file evaluated every `train.eval_every` optimizer steps."""
    on_error: Literal["fail", "skip"] = "fail"
    """What to do with invalid rows: stop with `file:line: reason`, or report and skip them."""
    text_ratio: float = -1.0
    """Text-only pairs per multimodal pair after mixing (paper: 0.5); -1 keeps the data as given."""
    length_balance: bool = False
    """Resample so the chosen response is the longer one in half of the pairs (for length-biased data)."""
    max_pairs: int = 0
    """Cap on training pairs after mixing (0 = no cap)."""
    alignment: str = ""
    """Grounded-caption file (see data/regions.py) for the alignment stage that trains mini-vl's
    `words` projector before reward training; the demo's generator writes one. Empty = no stage."""


@dataclass(frozen=True)
class TrainConfig:
    output_dir: str = "runs/train"
    """Checkpoints, metrics.jsonl and the final model go here."""
    lr: float = 3e-6
    """Peak learning rate (paper grid {1e-5, 3e-6, 1e-6, 3e-7}; best 3e-6)."""
    head_lr: float = 0.0
    """Learning rate for the head and projector; 0 = same as `lr`."""
    align_epochs: int = 20
    """Epochs of the alignment stage over `data.alignment` (features of the frozen image encoder
    are computed once, so an epoch costs milliseconds per image)."""
    align_lr: float = 1e-3
    """Learning rate of the alignment stage."""
    lr_grid: tuple[float, ...] = (1e-5, 3e-6, 1e-6, 3e-7)
    """Values tried by `basereward sweep`."""
    global_batch_size: int = 128
    """Pairs per optimizer step across all processes (paper: 128)."""
    micro_batch_size: int = 4
    """Pairs per forward pass on one process."""
    epochs: float = 1.0
    """Passes over the training pairs (fractions allowed)."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0 = derived from epochs)."""
    warmup_ratio: float = 0.03
    """Fraction of steps with linear warmup before cosine decay."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 = off)."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """Accelerate mixed precision; `auto` = bf16 where supported, else no."""
    seed: int = 42
    """Seed for initialisation, data order and dropout."""
    eval_every: int = 0
    """Evaluate on `data.validation` every N optimizer steps (0 = only at the end)."""
    save_every: int = 0
    """Write a resumable checkpoint every N optimizer steps (0 = only at the end)."""
    keep_checkpoints: int = 2
    """How many step checkpoints to keep."""
    log_every: int = 1
    """Write a metrics line every N optimizer steps."""
    num_workers: int = 0
    """DataLoader worker processes."""
    cache_trunk: bool = False
    """mini-vl: when everything below the trained top layers is frozen (`train_lm_layers` > 0,
    `train_projector: false`, no LoRA), compute the frozen trunk's output once per pair, keep it
    in memory and run only the trained layers on later visits: every epoch after the first costs
    the trained layers alone, with the same rewards and gradients as without the cache."""
    resume: str = ""
    """`auto` = resume from the latest checkpoint in output_dir; or a checkpoint directory."""

    def grad_accum_steps(self, world_size: int = 1) -> int:
        """Micro-steps per optimizer step so that micro * accum * world = global batch."""
        per_step = self.micro_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ConfigError(
                f"train.global_batch_size={self.global_batch_size} is not a multiple of "
                f"micro_batch_size*world_size={per_step}"
            )
        return self.global_batch_size // per_step


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    """Backbone and head."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training and validation data."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Reward-model loss."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation and bookkeeping."""


# ----------------------------------------------------------------------------- building from dicts


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML or override value to the annotated type."""
    origin = typing.get_origin(tp)
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v] if value else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if value is None:
            return ""
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass `cls` from a nested dict; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    obj = cls(**kwargs)
    _validate(obj, where)
    return obj


def _validate(obj: Any, where: str) -> None:
    if isinstance(obj, HeadConfig):
        if not 1 <= obj.num_layers <= 5:
            raise ConfigError(f"{where}.num_layers: must be in 1..5, got {obj.num_layers}")
    if isinstance(obj, TrainConfig):
        if obj.lr <= 0:
            raise ConfigError(f"{where}.lr: must be positive")
        if obj.micro_batch_size <= 0 or obj.global_batch_size <= 0:
            raise ConfigError(f"{where}: batch sizes must be positive")
    if isinstance(obj, LossConfig) and obj.zero_coef < 0:
        raise ConfigError(f"{where}.zero_coef: must be >= 0")
    if isinstance(obj, DataConfig) and obj.text_ratio < 0 and obj.text_ratio != -1:
        raise ConfigError(f"{where}.text_ratio: must be >= 0 or -1")


def to_dict(obj: Any) -> Any:
    """A JSON/YAML-ready nested dict (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.path=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides to a nested dict (values parsed as YAML scalars/lists)."""
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for text in overrides:
        path, value = _parse_override(text)
        node = data
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
            node = nxt
        node[path[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML preset (or the defaults when `path` is None) and apply dotted overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{p}{line}: invalid YAML ({getattr(e, 'problem', e)})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
    data = apply_overrides(data, overrides)
    return from_dict(Config, data)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as JSON (or YAML when the suffix is .yaml)."""
    p = Path(path)
    if p.suffix in (".yaml", ".yml"):
        p.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    else:
        p.write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
