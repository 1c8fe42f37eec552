"""Text-only backbone over any transformers causal LM (Qwen3, Qwen2.5, Llama, ...).

Loads the base model (`AutoModel`, i.e. the decoder without its LM head), renders each response
with the tokenizer's chat template (ChatML when it has none), right-pads, and returns the final
hidden states (N, T, H). A group with images is refused: this backbone has no vision tower.

With `causal_lm.share_prefix` each group's prefix (chat template + prompt) runs once and its
responses run on the cached keys/values (models/prefix.py, as mini-vl does); the hidden states
then cover the responses only (`pool_mask` = `resp_mask`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..config import BackboneConfig
from ..data.schema import Group
from ..errors import DataError
from .backbone import Backbone, Capabilities, register_backbone
from .common import (
    Truncation,
    group_sizes_tensor,
    pad_right,
    pad_token_id,
    prepare_language_model,
    prompt_texts,
    render_conversation,
    require_path,
    resolve_dtype,
    tokenize_conversations,
)
from .prefix import lm_runner, new_cache, prefix_layout, shared_prefix_forward


class TextCollator:
    """Groups -> CPU batch with the documented keys. Holds only the tokenizer (cheap to pickle
    for DataLoader workers: pass `backbone.collator` as `collate_fn`)."""

    def __init__(self, tokenizer: Any, cfg: BackboneConfig) -> None:
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.truncation = Truncation.from_config(cfg)
        self.pad_id = pad_token_id(tokenizer)

    def __call__(self, groups: Sequence[Group]) -> dict[str, Any]:
        prompts, prefixes, responses = [], [], []
        for g, group in enumerate(groups):
            if group.images:
                raise DataError(
                    f"an item has {len(group.images)} image(s), but backbone 'causal-lm' is text-only; "
                    "use a vision-language backbone (qwen2.5-vl, qwen2-vl, mini-vl) for multimodal data"
                )
            for response in group.responses:
                prefix, resp = render_conversation(self.tokenizer, group.prompt, response, system=self.cfg.system_prompt,
                                                   history=group.history)
                prompts.append(prompt_texts(group))
                prefixes.append(prefix)
                responses.append(resp)
        group_sizes = group_sizes_tensor(groups)
        tok = tokenize_conversations(self.tokenizer, prompts, prefixes, responses, self.truncation)
        input_ids, attention_mask = pad_right(tok.ids, self.pad_id)
        return {
            "input_ids": input_ids,  # (N, T)
            "attention_mask": attention_mask,  # (N, T)
            "response_lengths": torch.tensor(tok.response_lengths, dtype=torch.long),  # (N,)
            "group_sizes": group_sizes,  # (G,)
            **tok.report(),
            **self._prefix_layout(tok.ids, tok.response_lengths, group_sizes.tolist()),
        }

    def _prefix_layout(self, ids: list[list[int]], resp_lens: list[int], sizes: list[int]) -> dict[str, Any]:
        """The shared-prefix layout (models/prefix.py `prefix_layout`), or {} when a tokenizer merged
        the prompt/response boundary differently within a group (the batch then runs in full)."""
        return prefix_layout(ids, resp_lens, sizes, self.pad_id)


@register_backbone("causal-lm")
class CausalLMBackbone(Backbone):
    """Any `AutoModel`-loadable decoder; hidden states of its final norm."""

    capabilities = Capabilities(prefix_sharing=True)

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__(cfg)
        from transformers import AutoModel, AutoTokenizer

        path = require_path(cfg)
        # AutoModel gives the bare decoder (e.g. Qwen3Model) from a *ForCausalLM checkpoint; the
        # LM head's weights are skipped, which saves vocab x hidden parameters.
        model = AutoModel.from_pretrained(path, dtype=resolve_dtype(cfg.dtype), attn_implementation=cfg.attn_implementation)
        tokenizer = AutoTokenizer.from_pretrained(path)
        self.hidden_size = int(model.config.hidden_size)
        self.collator = TextCollator(tokenizer, cfg)
        self.model = prepare_language_model(model, cfg)
        # Batches that fell back to the full path while sharing is on (see `_prefix_layout`).
        self.unshared_batches = 0

    def shares_prefix(self) -> bool:
        # Recomputation under gradient checkpointing disables the KV cache the shared path needs.
        return self.cfg.causal_lm.share_prefix and not self.cfg.gradient_checkpointing

    def _shared(self, batch: dict[str, Any]) -> bool:
        """This batch runs shared: sharing is on and the collator could lay the batch out for it."""
        return self.shares_prefix() and "prefix_ids" in batch

    def pool_mask(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["resp_mask"] if self._shared(batch) else batch["attention_mask"]

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Hidden states aligned with `pool_mask(batch)`: responses only when sharing the prefix."""
        if not self._shared(batch):
            if self.shares_prefix():
                self.unshared_batches += 1
            return self._forward_full(batch)
        lm = self.model
        device = lm.get_input_embeddings().weight.device
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        prefix_embeds = lm.get_input_embeddings()(batch["prefix_ids"])  # (G, Tp, H)
        _, hidden = shared_prefix_forward(lm_runner(lm), new_cache(lm), batch, prefix_embeds,
                                          {"input_ids": batch["resp_ids"]})
        return hidden  # (N, Tr, H)

    # ------------------------------------------------------------------ generation (grm/)
    def text_decoder(self) -> Any:
        return self.model

    def generation_prompt(self, batch: dict[str, Any], length: int) -> tuple[Any, torch.Tensor, None]:
        """The first `length` tokens of row 0 of a full batch: (decoder, embeddings, positions None)."""
        embed = self.model.get_input_embeddings()
        return self.model, embed(batch["input_ids"][:1, :length].to(embed.weight.device)), None

    def _forward_full(self, batch: dict[str, Any]) -> torch.Tensor:
        """Every sequence in full (N, T, H)."""
        lm = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        device = lm.get_input_embeddings().weight.device
        # Right padding: the default positions 0..T-1 are the true positions of every real token.
        out = self.model(
            input_ids=batch["input_ids"].to(device),  # (N, T)
            attention_mask=batch["attention_mask"].to(device),  # (N, T)
            use_cache=False,
        )
        return out.last_hidden_state  # (N, T, H)
