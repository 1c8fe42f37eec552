"""Text-only backbone over any transformers causal LM (Qwen3, Qwen2.5, Llama, ...).

Loads the base model (`AutoModel`, i.e. the decoder without its LM head), renders each response
with the tokenizer's chat template (ChatML when it has none), right-pads, and returns the final
hidden states (N, T, H). A group with images is refused: this backbone has no vision tower.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..config import BackboneConfig
from ..data.schema import Group
from ..errors import DataError
from .backbone import Backbone, register_backbone
from .common import (
    Truncation,
    group_sizes_tensor,
    pad_right,
    pad_token_id,
    prepare_language_model,
    render_conversation,
    require_path,
    resolve_dtype,
    prompt_texts,
    tokenize_conversations,
)


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
        }


@register_backbone("causal-lm")
class CausalLMBackbone(Backbone):
    """Any `AutoModel`-loadable decoder; hidden states of its final norm."""

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

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        lm = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        device = lm.get_input_embeddings().weight.device
        # Right padding: the default positions 0..T-1 are the true positions of every real token.
        out = self.model(
            input_ids=batch["input_ids"].to(device),  # (N, T)
            attention_mask=batch["attention_mask"].to(device),  # (N, T)
            use_cache=False,
        )
        return out.last_hidden_state  # (N, T, H)
