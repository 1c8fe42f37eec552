"""Qwen2.5-VL and Qwen2-VL backbones with shared image encoding.

A batch holds G groups (prompt + images + responses) laid out as N >= G sequences. The vision
tower runs ONCE per batch over each group's images, each image once (the vision attention is
block-diagonal per image, so encoding all groups' images in one call equals encoding them one by
one). Every sequence then receives its group's image embeddings in its `<|image_pad|>` positions
and its own 3-D M-RoPE positions (the model's `get_rope_index` with its group's grids, repeated
for each response). The language model is called on `inputs_embeds`; no LM head is loaded into
use: only the final hidden states (N, T, H) are returned.

With `qwen_vl.share_prefix` each group's prefix (chat template + image tokens + prompt) runs once
on a key/value cache and its responses run on top (models/prefix.py); a response is text after
the prefix, so its M-RoPE position on all three axes continues at the prefix's largest position
+ 1 (what `get_rope_index` gives the full sequence). The hidden states then cover the responses
only (`pool_mask` = `resp_mask`).

We compose the transformers classes (`Qwen2_5_VLModel` / `Qwen2VLModel`: `.visual`,
`.language_model`, `.get_image_features`, `.get_rope_index`) and never fork modeling code.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from ..config import BackboneConfig
from ..data.schema import Group
from ..errors import ConfigError
from .backbone import Backbone, Capabilities, register_backbone
from .common import (
    Truncation,
    group_sizes_tensor,
    load_image,
    pad_right,
    pad_token_id,
    prepare_language_model,
    prompt_texts,
    render_conversation,
    require_path,
    resolve_dtype,
    set_requires_grad,
    tokenize_conversations,
)
from .prefix import new_cache, prefix_layout, shared_prefix_forward

IMAGE_TOKEN = "<|image_pad|>"
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"


class QwenVLCollator:
    """Groups -> CPU batch. Holds only the tokenizer and image processor, so DataLoader workers
    can pickle it cheaply (pass `backbone.collator` as `collate_fn`, not the backbone).

    Batch keys: the documented `input_ids`, `attention_mask`, `response_lengths`, `group_sizes`, plus
      pixel_values     (P, C*t*p*p)  patches of every group's images, each image once, group order
      image_grid_thw   (I, 3)        (t, h, w) patch grid of each of those images
      images_per_group (G,)          how many of the I images belong to each group
    Image tensors are empty (0 rows) when no group has images, so a batch is always all-tensor.
    The shared-prefix keys of models/prefix.py (`prefix_ids`, `resp_ids`, ...) are added when the
    batch can share (`prefix_layout`); every image token is in the prefix.
    """

    def __init__(self, tokenizer: Any, image_processor: Any, cfg: BackboneConfig, image_token_id: int) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.cfg = cfg
        self.truncation = Truncation.from_config(cfg)
        self.image_token_id = image_token_id
        self.pad_id = pad_token_id(tokenizer)
        self.merge_size = int(image_processor.merge_size)
        ip = image_processor
        self.patch_dim = 3 * int(ip.temporal_patch_size) * int(ip.patch_size) ** 2

    def encode_images(self, images: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the image processor once on one group's images: (patches (P, D), grids (I, 3))."""
        out = self.image_processor(
            images=[load_image(im) for im in images],
            size={"shortest_edge": self.cfg.qwen_vl.min_pixels, "longest_edge": self.cfg.qwen_vl.max_pixels},
            return_tensors="pt",
        )
        return out["pixel_values"], out["image_grid_thw"].to(torch.long)

    def _prefix_with_image_tokens(self, prefix: str, tokens_per_image: list[int], where: str) -> str:
        """Replace the i-th `<|image_pad|>` placeholder with tokens_per_image[i] copies of it."""
        parts = prefix.split(IMAGE_TOKEN)
        if len(parts) - 1 != len(tokens_per_image):
            raise ValueError(
                f"{where}: the rendered prompt has {len(parts) - 1} image placeholders for "
                f"{len(tokens_per_image)} images (does the prompt text contain {IMAGE_TOKEN!r}?)"
            )
        return parts[0] + "".join(IMAGE_TOKEN * k + part for k, part in zip(tokens_per_image, parts[1:]))

    def __call__(self, groups: Sequence[Group]) -> dict[str, Any]:
        prompts, prefixes, responses, expected_image_tokens = [], [], [], []
        pixel_values, grids, images_per_group = [], [], []
        for g, group in enumerate(groups):
            n_img = len(group.images)
            tokens_per_image: list[int] = []
            if n_img:
                pv, grid = self.encode_images(group.images)  # once per group, shared by its responses
                pixel_values.append(pv)
                grids.append(grid)
                tokens_per_image = (grid.prod(-1) // self.merge_size**2).tolist()
            images_per_group.append(n_img)
            for response in group.responses:
                prefix, resp = render_conversation(
                    self.tokenizer,
                    group.prompt,
                    response,
                    system=self.cfg.system_prompt,
                    num_images=n_img,
                    image_placeholder=IMAGE_PLACEHOLDER,
                    history=group.history,
                )
                prompts.append(prompt_texts(group))
                prefixes.append(self._prefix_with_image_tokens(prefix, tokens_per_image, f"group {g}"))
                responses.append(resp)
                expected_image_tokens.append(sum(tokens_per_image))
        group_sizes = group_sizes_tensor(groups)
        tok = tokenize_conversations(self.tokenizer, prompts, prefixes, responses, self.truncation)
        # forward() scatters each group's image embeddings into exactly these positions; the
        # truncation rule never cuts image tokens, so a mismatch means the text holds the token.
        for i, (seq, want) in enumerate(zip(tok.ids, expected_image_tokens)):
            if seq.count(self.image_token_id) != want:
                raise ValueError(f"sequence {i}: the prompt or response text contains {IMAGE_TOKEN!r}")
        input_ids, attention_mask = pad_right(tok.ids, self.pad_id)
        return {
            "input_ids": input_ids,  # (N, T)
            "attention_mask": attention_mask,  # (N, T)
            "response_lengths": torch.tensor(tok.response_lengths, dtype=torch.long),  # (N,)
            "group_sizes": group_sizes,  # (G,)
            "pixel_values": torch.cat(pixel_values) if pixel_values else torch.zeros(0, self.patch_dim),  # (P, D)
            "image_grid_thw": torch.cat(grids) if grids else torch.zeros(0, 3, dtype=torch.long),  # (I, 3)
            "images_per_group": torch.tensor(images_per_group, dtype=torch.long),  # (G,)
            **tok.report(),
            **prefix_layout(tok.ids, tok.response_lengths, group_sizes.tolist(), self.pad_id),
        }


class QwenVLBackbone(Backbone):
    """Shared-image-encoding backbone over a transformers Qwen-VL base model (no LM head)."""

    model_type: ClassVar[str] = ""
    capabilities = Capabilities(prefix_sharing=True)

    @classmethod
    def _model_class(cls) -> type:
        raise NotImplementedError

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__(cfg)
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

        path = require_path(cfg)
        model_type = AutoConfig.from_pretrained(path).model_type
        if model_type != self.model_type:
            raise ConfigError(
                f"model.backbone.name: {cfg.name!r} expects a {self.model_type!r} checkpoint, "
                f"but {path} is {model_type!r}"
            )
        # The base model: vision tower + text model. A ForConditionalGeneration checkpoint (hub or
        # legacy key layout) loads into it; its lm_head weights are skipped, never allocated.
        self.model = self._model_class().from_pretrained(
            path, dtype=resolve_dtype(cfg.dtype), attn_implementation=cfg.attn_implementation
        )
        # Tokenizer and image processor are loaded part by part rather than via AutoProcessor:
        # we only need these two (plus the chat template, which the tokenizer carries), and
        # transformers 5.x cannot build a Qwen-VL processor without torchvision installed.
        tokenizer = AutoTokenizer.from_pretrained(path)
        image_processor = AutoImageProcessor.from_pretrained(path)
        config = self.model.config
        self.image_token_id = int(config.image_token_id)
        if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) != self.image_token_id:
            raise ConfigError(
                f"model.backbone.path: tokenizer id of {IMAGE_TOKEN} "
                f"({tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)}) != config.image_token_id ({self.image_token_id})"
            )
        self.spatial_merge_size = int(config.vision_config.spatial_merge_size)
        if int(image_processor.merge_size) != self.spatial_merge_size:
            raise ConfigError("model.backbone.path: image processor merge_size differs from the vision config")
        self.hidden_size = int(config.text_config.hidden_size)
        self.collator = QwenVLCollator(tokenizer, image_processor, cfg, self.image_token_id)

        # qwen_vl.freeze_vision freezes the whole `visual` module, the patch merger included: the
        # merger (the vision->LM projector) is pretrained jointly with the ViT, and the paper trains
        # only the LM and the reward head. Set freeze_vision: false to train both.
        set_requires_grad(self.model.visual, not cfg.qwen_vl.freeze_vision)
        self.model.language_model = prepare_language_model(self.model.language_model, cfg)
        # A sliding window counts keys by index, and a padded prefix's holes would shift that count.
        windowed = [t for t in (getattr(config.text_config, "layer_types", None) or ()) if t != "full_attention"]
        self.prefix_blocker = f"{len(windowed)} sliding-window attention layers" if windowed else ""
        # Batches that fell back to the full path while sharing is on (see `prefix_layout`).
        self.unshared_batches = 0

    # ------------------------------------------------------------------ interface

    def _text_model(self) -> nn.Module:
        lm = self.model.language_model
        return lm.get_base_model() if hasattr(lm, "get_base_model") else lm

    def encode_images(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        """All images of the batch through the vision tower + merger in one call: (sum_i k_i, H),
        k_i = t*h*w / merge**2 tokens per image, images in input order."""
        trainable = any(p.requires_grad for p in self.model.visual.parameters())
        # A frozen tower needs no activations kept for backward.
        with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
            out = self.model.get_image_features(pixel_values, image_grid_thw, return_dict=True)
        return torch.cat(out.pooler_output, dim=0)

    def shares_prefix(self) -> bool:
        # Recomputation under gradient checkpointing disables the KV cache the shared path needs.
        return self.cfg.qwen_vl.share_prefix and not self.cfg.gradient_checkpointing and not self.prefix_blocker

    def _shared(self, batch: dict[str, Any]) -> bool:
        """This batch runs shared: sharing is on and the collator could lay the batch out for it."""
        return self.shares_prefix() and "prefix_ids" in batch

    def pool_mask(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["resp_mask"] if self._shared(batch) else batch["attention_mask"]

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Hidden states aligned with `pool_mask(batch)`: responses only when sharing the prefix."""
        if self._shared(batch):
            return self._forward_shared(batch)
        if self.shares_prefix():
            self.unshared_batches += 1
        return self._forward_full(batch)

    def _forward_shared(self, batch: dict[str, Any]) -> torch.Tensor:
        """Each group's prefix once (G rows), then its responses on the cached keys/values (N, Tr, H)."""
        embed = self._text_model().get_input_embeddings()
        device = embed.weight.device
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        prefix_ids, prefix_mask = batch["prefix_ids"], batch["prefix_mask"]  # (G, Tp)
        prefix_embeds = embed(prefix_ids)  # (G, Tp, H)
        grid_cpu = batch["image_grid_thw"].to("cpu", torch.long)  # (I, 3)
        if grid_cpu.shape[0]:
            feats = self.encode_images(batch["pixel_values"], grid_cpu.to(device))  # (K, H), group order
            # Prefix rows are the groups in order and `feats` holds their images in that order.
            image_mask = (prefix_ids == self.image_token_id).unsqueeze(-1)  # (G, Tp, 1)
            prefix_embeds = prefix_embeds.masked_scatter(image_mask, feats.to(prefix_embeds.dtype))
        G = prefix_ids.shape[0]
        grids_by_group = torch.split(grid_cpu, batch["images_per_group"].to("cpu").tolist())
        prefix_pos = self.rope_positions(prefix_ids, prefix_mask, grids_by_group, range(G)).to(device)  # (3, G, Tp)
        # Responses are text: shared_prefix_forward gives them 1-D positions prefix_len + j; M-RoPE
        # continues at the prefix's largest position + 1, i.e. shifted by this delta per group.
        real = prefix_mask.bool().unsqueeze(0)  # (1, G, Tp)
        delta = prefix_pos.masked_fill(~real, -1).amax(dim=(0, 2)) + 1 - prefix_mask.sum(1)  # (G,)
        resp_delta = delta[batch["seq_group"]].view(1, -1, 1)  # (1, N, 1)
        lm = self.model.language_model

        def run(position_ids: torch.Tensor | None = None, **kw: Any) -> torch.Tensor:
            pos = prefix_pos if position_ids is None else position_ids.unsqueeze(0).expand(3, -1, -1) + resp_delta
            return lm(**kw, position_ids=pos, use_cache=True).last_hidden_state

        _, hidden = shared_prefix_forward(run, new_cache(lm), batch, prefix_embeds, {"input_ids": batch["resp_ids"]})
        return hidden  # (N, Tr, H)

    def _forward_full(self, batch: dict[str, Any]) -> torch.Tensor:
        """Every sequence in full (N, T, H); each group's images are still encoded once."""
        inputs_embeds, position_ids = self._full_inputs(batch)
        out = self.model.language_model(
            input_ids=None,
            inputs_embeds=inputs_embeds,
            attention_mask=batch["attention_mask"].to(inputs_embeds.device),
            position_ids=position_ids,  # (3, N, T)
            use_cache=False,
        )
        return out.last_hidden_state  # (N, T, H)

    def _full_inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings (N, T, H) of the full sequences, image tokens spliced in, and their M-RoPE
        positions (3, N, T)."""
        embed = self._text_model().get_input_embeddings()
        device = embed.weight.device
        input_ids = batch["input_ids"].to(device)  # (N, T)
        inputs_embeds = embed(input_ids)  # (N, T, H)

        # Per-sequence bookkeeping is small integer work: do it on CPU in one transfer.
        grid_cpu = batch["image_grid_thw"].to("cpu", torch.long)  # (I, 3)
        group_sizes = batch["group_sizes"].to("cpu").tolist()  # G ints
        images_per_group = batch["images_per_group"].to("cpu").tolist()  # G ints
        seq_group = [g for g, n in enumerate(group_sizes) for _ in range(n)]  # N ints
        grids_by_group = torch.split(grid_cpu, images_per_group)  # G x (I_g, 3)

        if grid_cpu.shape[0]:
            feats = self.encode_images(batch["pixel_values"].to(device), grid_cpu.to(device))  # (K, H)
            # Row range of each group's image tokens in `feats`, then one range per sequence:
            # the same rows are gathered for every response of a group (shared, encoded once).
            tokens_per_group = [int((g.prod(-1) // self.spatial_merge_size**2).sum()) for g in grids_by_group]
            starts = torch.tensor([0, *tokens_per_group]).cumsum(0).tolist()
            index = torch.cat([torch.arange(starts[g], starts[g] + tokens_per_group[g]) for g in seq_group])
            index = index.to(device)  # (n_image_tokens,) rows of `feats`, sequence by sequence
            image_mask = (input_ids == self.image_token_id).unsqueeze(-1)  # (N, T, 1)
            # masked_scatter fills masked positions in row-major order: sequence by sequence, left to
            # right, which is the order of `index`.
            inputs_embeds = inputs_embeds.masked_scatter(image_mask, feats[index].to(inputs_embeds.dtype))

        position_ids = self.rope_positions(batch["input_ids"], batch["attention_mask"], grids_by_group, seq_group)
        return inputs_embeds, position_ids.to(device)  # (N, T, H), (3, N, T)

    # ------------------------------------------------------------------ generation (grm/)
    def text_decoder(self) -> nn.Module:
        return self.model.language_model

    def generation_prompt(self, batch: dict[str, Any], length: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
        """The first `length` tokens of row 0 of a full batch: (text decoder, embeddings (1, length, H)
        with the group's image tokens, M-RoPE positions (3, 1, length)). Generated tokens continue
        at the largest position + 1, as transformers' get_rope_index places text after an image."""
        embeds, positions = self._full_inputs(batch)
        return self.model.language_model, embeds[:1, :length], positions[:, :1, :length]

    def rope_positions(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        grids_by_group: Sequence[torch.Tensor],
        seq_group: Sequence[int],
    ) -> torch.Tensor:
        """3-D M-RoPE positions (3, N, T) from the model's own `get_rope_index`, each sequence with
        its group's image grids (so the grids are repeated once per response of the group)."""
        ids = input_ids.to("cpu")
        mask = attention_mask.to("cpu")
        seq_grids = [grids_by_group[g] for g in seq_group if grids_by_group[g].shape[0]]
        mm_token_type_ids = (ids == self.image_token_id).to(torch.int)  # 1 = image token, 0 = text
        position_ids, _ = self.model.get_rope_index(
            ids,
            mm_token_type_ids,
            image_grid_thw=torch.cat(seq_grids) if seq_grids else None,
            attention_mask=mask,
        )
        return position_ids


@register_backbone("qwen2.5-vl")
class Qwen25VLBackbone(QwenVLBackbone):
    """Qwen2.5-VL (window-attention ViT)."""

    model_type = "qwen2_5_vl"

    @classmethod
    def _model_class(cls) -> type:
        from transformers import Qwen2_5_VLModel

        return Qwen2_5_VLModel


@register_backbone("qwen2-vl")
class Qwen2VLBackbone(QwenVLBackbone):
    """Qwen2-VL."""

    model_type = "qwen2_vl"

    @classmethod
    def _model_class(cls) -> type:
        from transformers import Qwen2VLModel

        return Qwen2VLModel
