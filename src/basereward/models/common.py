"""Helpers shared by the transformers-based backbones (Qwen-VL, causal LM, mini-vl).

Everything here is model-agnostic: dtype resolution, image opening, chat rendering, tokenising
prefix + response under the one truncation rule, right padding, and preparing a language model for
training (freezing, top-N layers, LoRA, gradient checkpointing).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import BackboneConfig
from ..errors import ConfigError
from .backbone import conversation_text

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    """`auto` = bfloat16 on a CUDA device that supports it, float32 otherwise; else the named dtype."""
    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in _DTYPES:
        raise ConfigError(f"model.backbone.dtype: {name!r} is not one of {['auto', *_DTYPES]}")
    return _DTYPES[name]


def require_path(cfg: BackboneConfig) -> str:
    """`cfg.path`, or a ConfigError naming the backbone when it is empty."""
    if not cfg.path:
        raise ConfigError(f"model.backbone.path: required for backbone {cfg.name!r} (a hub id or a local directory)")
    return cfg.path


def load_image(image: Any):
    """A PIL RGB image from a PIL image or a file path (paths go through the data loader's safe opener)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        try:
            from ..data.pairs import open_image
        except ImportError:  # the data package is optional for this helper
            with Image.open(image) as im:
                return im.convert("RGB")
        return open_image(image)
    raise TypeError(f"an image must be a PIL image or a file path, got {type(image).__name__}")


# ----------------------------------------------------------------------------- chat text


def render_conversation(
    tokenizer: Any,
    prompt: str,
    response: str,
    *,
    system: str = "",
    chat_template: str | None = None,
    num_images: int = 0,
    image_placeholder: str = "",
    history: Sequence[tuple[str, str]] = (),
) -> tuple[str, str]:
    """(prefix, response part) of one conversation, as text.

    With a chat template (`chat_template`, else the tokenizer's own) the prefix is the template
    rendered with the generation prompt over the messages (system, `history`, the user's
    `prompt`), and the response part is what the full conversation adds after it (e.g. Qwen3's
    empty think block + response + `<|im_end|>`); one trailing newline is dropped so the sequence
    ends on the end-of-turn token, as with the ChatML fallback. Images are passed as
    `{"type": "image"}` content items of the first user message, which a VL template renders as
    its placeholder. Without a template: `conversation_text` (ChatML), the same layout.
    """
    template = chat_template if chat_template is not None else getattr(tokenizer, "chat_template", None)
    if not template:
        return conversation_text(prompt, response, system=system, image_placeholder=image_placeholder * num_images,
                                 history=history)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    placed = False
    for role, text in (*history, ("user", prompt)):
        content: Any = text
        if role == "user" and not placed and num_images:
            content = [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": text}]
        placed = placed or role == "user"
        messages.append({"role": role, "content": content})
    kw = dict(tokenize=False, chat_template=template)
    prefix = tokenizer.apply_chat_template(messages, add_generation_prompt=True, **kw)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], **kw)
    if full.endswith("\n"):
        full = full[:-1]
    # Templates normally extend the generation prompt; if one rewrites it, split at the common part.
    common = prefix if full.startswith(prefix) else os.path.commonprefix([prefix, full])
    return common, full[len(common) :]


# ----------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Truncation:
    """The one truncation rule of every backbone; it looks at one item only.

    The prompt part (chat template, image tokens, prompt text) keeps at most `max_prompt_length`
    tokens: an over-long prompt loses text from its `side` ("left" keeps the end), never template
    or image tokens. The response keeps `max_length` minus the prompt part's length and loses its
    end beyond that. The prompt part depends on the prompt alone (so a group's responses share
    it) and each response's cut on its own prompt and itself: no reward depends on batch partners.
    """

    max_length: int
    max_prompt_length: int
    side: str = "left"

    @classmethod
    def from_config(cls, cfg: BackboneConfig) -> "Truncation":
        return cls(cfg.max_length, cfg.prompt_budget(), cfg.truncation_side)

    def fit_prompt(self, ids: list[int], editable: tuple[int, int]) -> tuple[list[int], bool]:
        """`ids` of a prompt part cut to the budget inside `editable` = [a, b), the prompt text's
        tokens; (ids, whether anything was cut)."""
        over = len(ids) - self.max_prompt_length
        if over <= 0:
            return list(ids), False
        a, b = editable
        if over > b - a:
            raise ConfigError(
                f"model.backbone.max_prompt_length={self.max_prompt_length}: the chat template and image "
                f"tokens of a prompt alone take {len(ids) - (b - a)} tokens; raise model.backbone.max_prompt_length "
                "(and max_length) or lower the image resolution"
            )
        if self.side == "left":
            return list(ids[:a]) + list(ids[a + over:]), True
        return list(ids[: b - over]) + list(ids[b:]), True

    def fit_response(self, prompt_len: int, ids: Sequence[int]) -> tuple[list[int], bool]:
        """The response's first `max_length - prompt_len` tokens; (ids, whether its end was cut)."""
        room = self.max_length - prompt_len
        return list(ids[:room]), len(ids) > room


@dataclass
class Tokenized:
    """Token ids of each sequence, its response length and which items were cut."""

    ids: list[list[int]]
    response_lengths: list[int]
    prompt_cut: list[bool]
    response_cut: list[bool]

    def report(self) -> dict[str, torch.Tensor]:
        """The batch keys every collator adds: what truncation did to each sequence."""
        return {"truncated_prompt": torch.tensor(self.prompt_cut, dtype=torch.bool),
                "truncated_response": torch.tensor(self.response_cut, dtype=torch.bool)}


def token_span(offsets: Sequence[tuple[int, int]], start: int, stop: int) -> tuple[int, int]:
    """[a, b): the tokens whose characters lie inside text[start:stop] (offsets from a fast tokenizer)."""
    a = next((i for i, (s, _) in enumerate(offsets) if s >= start), len(offsets))
    b = a
    while b < len(offsets) and offsets[b][1] <= stop:
        b += 1
    return a, b


def prompt_texts(group: Any) -> tuple[str, ...]:
    """The texts of a group's prompt part in order (earlier turns, then the prompt): what the
    truncation rule may cut, from the first one's start to the last one's end."""
    return (*(content for _, content in group.history), group.prompt)


def tokenize_conversations(
    tokenizer: Any, prompts: Sequence[tuple[str, ...]], prefixes: Sequence[str], responses: Sequence[str],
    policy: Truncation,
) -> Tokenized:
    """Token ids of `prefix + response` for each item, fitted by `policy`.

    The concatenated text is tokenised in one piece (so ids equal tokenising the whole
    conversation); a token belongs to the response when it starts after the prefix. Only the
    tokens of the prompt texts (`prompt_texts`: found in the prefix, from the first text's start
    to the last one's end, turn markers between them included) may be cut from the prompt part.
    No special tokens are added: chat templates already contain BOS where a model needs one.
    """
    if not len(prompts) == len(prefixes) == len(responses):
        raise ValueError(f"{len(prompts)} prompts, {len(prefixes)} prefixes, {len(responses)} responses")
    fulls = [p + r for p, r in zip(prefixes, responses)]
    out = Tokenized([], [], [], [])
    if not fulls:
        return out
    enc = tokenizer(fulls, add_special_tokens=False, return_offsets_mapping=True)
    for texts, prefix, ids, offsets in zip(prompts, prefixes, enc["input_ids"], enc["offset_mapping"]):
        n_prefix = sum(1 for s, _ in offsets if s < len(prefix))
        start = prefix.find(texts[0]) if texts[0] else -1
        end = prefix.rfind(texts[-1]) + len(texts[-1]) if texts[-1] and start >= 0 else -1
        # A template that rewrites the prompt text: any prefix token may be cut.
        editable = token_span(offsets[:n_prefix], start, end) if 0 <= start < end else (0, n_prefix)
        head, cut_p = policy.fit_prompt(ids[:n_prefix], editable)
        resp, cut_r = policy.fit_response(len(head), ids[n_prefix:])
        out.ids.append(head + resp)
        out.response_lengths.append(len(resp))
        out.prompt_cut.append(cut_p)
        out.response_cut.append(cut_r)
    return out


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists to one length: ids (N, T) long and attention mask (N, T) long."""
    if not sequences:
        raise ValueError("pad_right: no sequences")
    T = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), T), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, falling back to EOS (pad positions are masked, so any id works)."""
    pid = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pid is None:
        raise ConfigError("model.backbone.path: the tokenizer has neither a pad nor an eos token")
    return int(pid)


def group_sizes_tensor(groups: Sequence[Any]) -> torch.Tensor:
    """(G,) responses per group; every group needs at least one response."""
    for i, g in enumerate(groups):
        if len(g.responses) == 0:
            raise ValueError(f"group {i} has no responses")
    return torch.tensor([len(g.responses) for g in groups], dtype=torch.long)


# ----------------------------------------------------------------------------- training setup


def decoder_layers(lm: nn.Module) -> nn.ModuleList:
    """The stack of decoder layers of a transformers text model (`.layers`, or `.model.layers`)."""
    for owner in (lm, getattr(lm, "model", None), getattr(getattr(lm, "base_model", None), "model", None)):
        layers = getattr(owner, "layers", None) if owner is not None else None
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ConfigError(f"model.backbone.train_lm_layers: cannot find the decoder layers of {type(lm).__name__}")


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def apply_freezing_and_lora(lm: nn.Module, cfg: BackboneConfig) -> nn.Module:
    """Apply `freeze_lm`, `train_lm_layers` and `lora` to a language model; returns the module to use.

    - LoRA: peft adapters on `cfg.lora.target_modules`; every base weight (embeddings included) is
      frozen and only the adapters train; returns the peft wrapper (its weights are `lm`'s, adapted
      in place). `freeze_lm` is consistent with LoRA (the base stays frozen); `train_lm_layers` is not.
    - `freeze_lm`: nothing in the LM trains.
    - `train_lm_layers=N` (N >= 0): only the top N decoder layers and the final norm (which acts on
      the top layer's output) train; embeddings and lower layers are frozen. -1 = everything trains.
    """
    n_layers = len(decoder_layers(lm))
    n = cfg.train_lm_layers
    if n < -1 or n > n_layers:
        raise ConfigError(f"model.backbone.train_lm_layers: must be -1 or 0..{n_layers}, got {n}")
    if n != -1 and (cfg.freeze_lm or cfg.lora.enabled):
        raise ConfigError(
            "model.backbone.train_lm_layers: only applies when the LM is fully fine-tuned "
            "(freeze_lm: false, lora.enabled: false)"
        )
    if cfg.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=list(cfg.lora.target_modules),
        )
        try:
            return get_peft_model(lm, lora)
        except ValueError as e:  # e.g. target modules not found in this model
            raise ConfigError(f"model.backbone.lora: {e}") from None
    if cfg.freeze_lm:
        set_requires_grad(lm, False)
    elif n >= 0:
        set_requires_grad(lm, False)
        layers = decoder_layers(lm)
        for layer in layers[n_layers - n :]:
            set_requires_grad(layer, True)
        norm = getattr(lm, "norm", None)
        if n > 0 and isinstance(norm, nn.Module):
            set_requires_grad(norm, True)
    else:
        set_requires_grad(lm, True)
    return lm


def enable_gradient_checkpointing(lm: nn.Module) -> None:
    """Recompute each decoder layer in backward (non-reentrant: works with frozen inputs and LoRA)."""
    kwargs = {"use_reentrant": False}
    if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5.x name
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    elif hasattr(lm, "gradient_checkpointing_enable"):
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        raise ConfigError(f"model.backbone.gradient_checkpointing: {type(lm).__name__} does not support it")
    if hasattr(lm, "config"):
        lm.config.use_cache = False


def prepare_language_model(lm: nn.Module, cfg: BackboneConfig) -> nn.Module:
    """Gradient checkpointing (if asked) then freezing / LoRA; returns the module to call."""
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(lm)
    return apply_freezing_and_lora(lm, cfg)
