"""The `mini-vl` backbone: EfficientNet-Lite0 (frozen) -> projector -> SmolLM2-135M-Instruct.

    image (image_size, 224 by default) -> EfficientNet-Lite0 (ImageNet, frozen) -> (C, g, g) features
        -> projector -> image tokens (g*g*slots, 576)
    ChatML text with the image tokens spliced into the user turn -> SmolLM2 (first lm_layers layers)

Each group's images are encoded once; with `share_prefix` its prefix also runs once
(models/prefix.py). Its optional stages: alignment of the `words` projector, and the
frozen-trunk cache during training.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ...config import BackboneConfig
from ...data.regions import zoomed_regions
from ...errors import ConfigError
from ..backbone import Backbone, Capabilities, register_backbone
from ..common import Truncation, prepare_language_model, resolve_dtype
from ..prefix import (
    TrunkCache,
    first_trained_layer,
    lm_runner,
    new_cache,
    shared_prefix_forward,
)
from .collator import MiniVLCollator
from .projector import (
    FILLER,
    build_projector,
    cell_targets,
    colour_positions,
    position_words,
    soft_words,
    train_alignment,
    vocabulary_ids,
    with_position_words,
    word_scores,
    word_token_ids,
)
from .vision import (
    ImageEncoder,
    encode_channel_permuted,
    encode_into_cache,
    encode_jittered,
    encode_zoomed_out,
    jitter_draws,
    zoom_draws,
)
from .weights import smollm2_dir


@register_backbone("mini-vl")
class MiniVL(Backbone):
    """EfficientNet-Lite0 -> projector -> SmolLM2-135M-Instruct. Images are encoded once per group."""

    capabilities = Capabilities(alignment=True, trunk_cache=True, prefix_sharing=True, image_feature_cache=True)
    # Saved with the model even when frozen for reward training: the projector is not part of the
    # pretrained weights (the alignment stage or reward training made it).
    always_saved = ("projector.",)

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__(cfg)
        from transformers import AutoModel, AutoTokenizer

        mv = cfg.mini_vl
        lm_dir = cfg.path or str(smollm2_dir())
        self.tokenizer = AutoTokenizer.from_pretrained(lm_dir)
        lm = AutoModel.from_pretrained(lm_dir, dtype=resolve_dtype(cfg.dtype), attn_implementation=cfg.attn_implementation)
        if mv.lm_layers:
            if not 0 < mv.lm_layers <= len(lm.layers):
                raise ConfigError(f"model.backbone.mini_vl.lm_layers: must be in 1..{len(lm.layers)}, got {mv.lm_layers}")
            # The first N layers of the pretrained stack; the final norm stays.
            lm.layers = lm.layers[: mv.lm_layers]
            lm.config.num_hidden_layers = mv.lm_layers
            if getattr(lm.config, "layer_types", None):
                lm.config.layer_types = lm.config.layer_types[: mv.lm_layers]
        self.hidden_size = lm.config.hidden_size
        # Construction order (encoder, projector, LM adapters, then the head outside) fixes which
        # random draws initialise what: keep it, or a seed trains a different model.
        self.vision = ImageEncoder(mv.image_grid, mv.image_multiscale, mv.image_tap_max_pool, mv.image_colour_histogram,
                                   bf16=mv.image_encoder_dtype == "bfloat16", semantic=mv.image_semantic)
        for p in self.vision.parameters():
            # The image encoder is always frozen here: its BatchNorm statistics stay ImageNet's.
            p.requires_grad_(False)
        self.slots = mv.word_slots if mv.projector == "words" else 1
        # The `words` vocabulary: set by the alignment stage or restored from a saved model. A plain
        # attribute, not a buffer: it is saved as metadata in model_config.json.
        self.image_words: tuple[str, ...] = ()
        self.word_ids: torch.Tensor | None = None
        # Encoder features by image path, filled by the alignment stage (or cache_image_features) so
        # that later batches skip the frozen encoder; shared with the collator, never saved.
        self.feature_cache: dict[str, torch.Tensor] = {}
        self.projector = build_projector(self.vision.out_channels, self.hidden_size, self.slots,
                                         self.vision.channel_blocks if mv.projector_norm == "per_block" else ())
        if not mv.train_projector:
            # Trained by the alignment stage only (which lifts this for its own optimiser).
            for p in self.projector.parameters():
                p.requires_grad_(False)
        self.lm = prepare_language_model(lm, cfg)
        # (cells, k) token ids of the words the last k slots of each cell read (k = 0: none).
        words = position_words(mv.image_grid, mv.position_words)
        self.position_ids = torch.tensor([[self._one_token(w) for w in cell] for cell in words], dtype=torch.long)
        self.tokens_per_image = mv.image_grid * mv.image_grid * self.slots
        self.collator = MiniVLCollator(self.tokenizer, truncation=Truncation.from_config(cfg), system_prompt=cfg.system_prompt,
                                       image_size=mv.image_size, tokens_per_image=self.tokens_per_image,
                                       feature_cache=self.feature_cache, image_position=mv.image_position)
        self._trunk: TrunkCache | None = None
        self._trunk_stores: dict[int, dict] | None = None

    def base_weights_id(self) -> str:
        return self.cfg.path or "embedded:smollm2-135m-instruct+efficientnet-lite0"

    def train(self, mode: bool = True) -> "MiniVL":
        super().train(mode)
        self.vision.eval()  # frozen BatchNorm must keep ImageNet statistics
        return self

    # ------------------------------------------------------------------ vocabulary (saved metadata)
    def metadata(self) -> dict[str, Any]:
        return {"image_words": list(self.image_words)} if self.image_words else {}

    def load_metadata(self, meta: dict[str, Any]) -> None:
        unknown = set(meta) - {"image_words"}
        if unknown:
            raise ConfigError(f"mini-vl: unknown saved metadata {sorted(unknown)}")
        if meta.get("image_words"):
            self.set_vocabulary(tuple(meta["image_words"]))

    def set_vocabulary(self, words: Sequence[str]) -> None:
        """Fix the `words` projector's vocabulary (the alignment stage does this once)."""
        if self.cfg.mini_vl.projector != "words":
            raise ConfigError("mini-vl: only model.backbone.mini_vl.projector=words has a vocabulary")
        self.image_words = tuple(words)
        self.word_ids = vocabulary_ids(self.tokenizer, self.image_words)

    def missing_alignment(self) -> str:
        if self.cfg.mini_vl.projector == "words" and self.word_ids is None:
            return "model.backbone.mini_vl.projector=words takes its vocabulary from the grounded captions"
        return ""

    def _one_token(self, word: str) -> int:
        ids = word_token_ids(self.tokenizer, [word])
        if len(ids) != 1:
            raise ConfigError(f"mini-vl: position word {word!r} is {len(ids)} tokens in this tokenizer, not one")
        return ids[0]

    # ------------------------------------------------------------------ image tokens
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

    def word_table(self) -> torch.Tensor:
        """(V, H) input embeddings of the vocabulary (the LM's own word vectors)."""
        if self.word_ids is None:
            raise ConfigError("mini-vl: the `words` projector has no vocabulary yet: train with data.alignment "
                              "(grounded captions) first, or load a trained model")
        weight = self.lm.get_input_embeddings().weight
        return weight[self.word_ids.to(weight.device)]

    def _project(self, feats: torch.Tensor) -> torch.Tensor:
        param = next(self.projector.parameters())
        out = self.projector(feats.to(param.device, param.dtype))  # (I, cells, H * slots)
        if self.cfg.mini_vl.projector != "words":
            return out
        tokens, _ = soft_words(out, self.word_table(), self.hidden_size)
        if self.position_ids.shape[1]:
            embed = self.lm.get_input_embeddings().weight
            tokens = with_position_words(tokens, embed[self.position_ids.to(embed.device)].detach())
        return tokens

    def cache_image_features(self, images: Sequence[Any], *, progress: bool = True, desc: str = "encode images") -> None:
        encode_into_cache(self.vision, self.feature_cache, images, self.cfg.mini_vl.image_size,
                          progress=progress, desc=desc)

    # ------------------------------------------------------------------ alignment stage
    def align(self, items: Sequence[Any], *, seed: int, progress: bool = True, batch_size: int = 64) -> dict[str, Any]:
        """Train the `words` projector on grounded captions (data/regions.py) before reward training,
        for `mini_vl.align_epochs` epochs at `mini_vl.align_lr`. The first alignment fixes the
        vocabulary (the captions' words); the frozen encoder's features are computed once."""
        mv = self.cfg.mini_vl
        if mv.projector != "words":
            raise ConfigError("data.alignment trains the mini-vl `words` projector; "
                              "set model.backbone.mini_vl.projector=words")
        for name in ("align_zoom", "align_jitter"):  # refused before any image is encoded
            if getattr(mv, name) and mv.align_colour_permute:
                raise ConfigError(f"model.backbone.mini_vl.{name} and align_colour_permute are not combined")
        if self.word_ids is None:
            from ...data.regions import region_words

            self.set_vocabulary(region_words(list(items)))
        images = [it.image for it in items]
        x = encode_into_cache(self.vision, self.feature_cache, images, mv.image_size,
                              batch_size, progress, "align: encode images")
        y = self.alignment_targets(items)
        if mv.align_zoom:
            draws = zoom_draws(len(items), seed, mv.align_zoom)
            x = torch.cat([x, encode_zoomed_out(self.vision, images, draws, mv.image_size, batch_size, progress)])
            y = torch.cat([y, self.alignment_targets([zoomed_regions(it, d) for it, d in zip(items, draws)])])
        if mv.align_jitter:
            # Photometric copies of the pictures themselves: same geometry, so the same targets.
            n = len(items)
            x = torch.cat([x, encode_jittered(self.vision, images, jitter_draws(n, seed, mv.align_jitter),
                                              mv.align_jitter, mv.image_size, batch_size, progress)])
            y = torch.cat([y, y[:n]])
        x_colour = colour_mask = None
        if mv.align_colour_permute:
            x_colour, _ = encode_channel_permuted(self.vision, images, mv.image_size, seed, batch_size, progress)
            colour_mask = colour_positions(self.tokenizer, self.word_ids)
        return train_alignment(self.projector, self.word_table(), self.hidden_size, x, y, epochs=mv.align_epochs,
                               lr=mv.align_lr, seed=seed, batch_size=batch_size, progress=progress,
                               x_colour=x_colour, colour_mask=colour_mask)

    def alignment_targets(self, items: Sequence[Any]) -> torch.Tensor:
        """(N, cells, slots) vocabulary positions the grounded images' cells should read."""
        if self.word_ids is None:
            raise ConfigError("mini-vl: " + self.missing_alignment())
        position = {int(t): i for i, t in enumerate(self.word_ids.tolist())}
        filler = position[word_token_ids(self.tokenizer, [FILLER])[0]]
        mv = self.cfg.mini_vl
        return torch.stack([cell_targets(it, mv.image_grid, self.slots, self.tokenizer, position, filler, mv.cell_naming)
                            for it in items])

    def word_logits(self, feats: torch.Tensor) -> torch.Tensor:
        """(I, cells, C) encoder features -> (I, cells*slots, V) the projector's scores of the vocabulary."""
        param = next(self.projector.parameters())
        return word_scores(self.projector(feats.to(param.device, param.dtype)), self.word_table(), self.hidden_size)

    # ------------------------------------------------------------------ forward
    def shares_prefix(self) -> bool:
        # Recomputation under gradient checkpointing disables the KV cache the shared path needs.
        return self.cfg.mini_vl.share_prefix and not self.cfg.gradient_checkpointing

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Hidden states aligned with `pool_mask(batch)`: responses only when sharing the prefix."""
        if not self.shares_prefix():
            return self._forward_full(batch)
        if self._trunk is not None:  # exact in training and in scoring alike
            return self._trunk.forward(batch, lambda: self._prefix_embeds(batch))
        _, hidden = shared_prefix_forward(lm_runner(self.lm), new_cache(self.lm), batch, self._prefix_embeds(batch),
                                          {"input_ids": batch["resp_ids"]})
        return hidden  # (N, Tr, H)

    def pool_mask(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["resp_mask"] if self.shares_prefix() else batch["attention_mask"]

    def _forward_full(self, batch: dict[str, Any]) -> torch.Tensor:
        """Every sequence in full; each image is still encoded once and copied to its sequences."""
        out = self.lm(inputs_embeds=self._full_embeds(batch), attention_mask=batch["attention_mask"])
        return out.last_hidden_state

    # ------------------------------------------------------------------ generation (grm/)
    def text_decoder(self) -> Any:
        return self.lm

    def generation_prompt(self, batch: dict[str, Any], length: int) -> tuple[Any, torch.Tensor, None]:
        """The first `length` tokens of row 0 of a full batch: (decoder, embeddings (1, length, H),
        positions None = 0..length-1)."""
        return self.lm, self._full_embeds(batch)[:1, :length], None

    def _full_embeds(self, batch: dict[str, Any]) -> torch.Tensor:
        """(N, T, H) input embeddings of the full sequences with each group's image tokens spliced in."""
        inputs_embeds = self.lm.get_input_embeddings()(batch["input_ids"])  # (N, T, H)
        img_tokens = self._batch_image_tokens(batch)  # (I, tokens_per_image, H), once per image
        if img_tokens is not None:
            # Sequence n takes the images of its group, in order.
            order = torch.cat([torch.nonzero(batch["image_group"] == g).flatten() for g in batch["seq_group"].tolist()])
            flat = img_tokens[order].reshape(-1, img_tokens.shape[-1]).to(inputs_embeds.dtype)
            inputs_embeds = inputs_embeds.masked_scatter(batch["image_mask"].unsqueeze(-1), flat)
        return inputs_embeds

    def _prefix_embeds(self, batch: dict[str, Any]) -> torch.Tensor:
        prefix_embeds = self.lm.get_input_embeddings()(batch["prefix_ids"])  # (G, Tp, H)
        img_tokens = self._batch_image_tokens(batch)  # (I, tokens_per_image, H)
        if img_tokens is not None:
            # Prefix rows are groups in order and images are stored group by group: a flat copy fits.
            flat = img_tokens.reshape(-1, img_tokens.shape[-1]).to(prefix_embeds.dtype)
            prefix_embeds = prefix_embeds.masked_scatter(batch["prefix_image_mask"].unsqueeze(-1), flat)
        return prefix_embeds

    # ------------------------------------------------------------------ frozen-trunk cache
    def uses_trunk_cache(self) -> bool:
        return self.cfg.mini_vl.cache_trunk

    def enable_trunk_cache(self) -> int:
        """Start caching the frozen trunk (mini_vl.cache_trunk); returns the first trained layer.

        Valid only when nothing below the first trained decoder layer has trainable parameters
        and the LM has no dropout: then that layer's input is a fixed function of the pair.
        """
        key = "model.backbone.mini_vl.cache_trunk"
        if self.cfg.lora.enabled:
            raise ConfigError(f"{key}: LoRA trains every layer; use model.backbone.train_lm_layers instead")
        if not self.shares_prefix():
            raise ConfigError(f"{key} needs model.backbone.mini_vl.share_prefix=true and no gradient checkpointing")
        split = first_trained_layer(self.lm)
        n_layers = len(self.lm.layers)
        if not split:
            raise ConfigError(f"{key} needs frozen lower LM layers: set model.backbone.train_lm_layers "
                              f"to fewer than the LM's {n_layers} layers")
        below = [self.projector, self.lm.get_input_embeddings(), *list(self.lm.layers)[:split]]
        if any(p.requires_grad for m in below for p in m.parameters()):
            raise ConfigError(f"{key} needs everything below the trained layers frozen: "
                              "set model.backbone.mini_vl.train_projector=false")
        if float(getattr(self.lm.config, "attention_dropout", 0.0) or 0.0) > 0:
            raise ConfigError(f"{key}: the LM uses attention dropout, so its trunk is not deterministic")
        store = self._trunk_stores.setdefault(split, {}) if self._trunk_stores is not None else None
        self._trunk = TrunkCache(self.lm, split, store)
        return split

    def keep_trunk_states(self) -> None:
        """Keep the cached trunk states across enable/disable (several training runs on this one
        backbone, e.g. ablations that retrain the top layers and heads). Valid only while the frozen
        part never changes between the runs; the states are keyed by the first trained layer."""
        if self._trunk_stores is None:
            self._trunk_stores = {}

    def disable_trunk_cache(self) -> int:
        n = len(self._trunk) if self._trunk is not None else 0
        self._trunk = None
        return n
