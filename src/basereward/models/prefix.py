"""Shared-prefix execution: each group's prefix once, its responses on the cached keys/values.

A preference group's responses share everything before them (chat head, image tokens, prompt).
`shared_prefix_forward` runs the G prefixes once, copies each prefix's keys/values to the rows of
its responses, and runs the N responses on top: the hidden states equal running every full
sequence, at the cost of the responses. `TrunkCache` adds, for training with frozen lower layers,
a store of the hidden states entering the first trained layer, so later visits of a group run the
trained layers only.

Batch layout (a collator that wants these paths provides it):
  prefix_mask (G, Tp)  1 on real prefix tokens, right-padded
  resp_mask   (N, Tr)  1 on real response tokens, right-padded
  resp_ids    (N, Tr)  response token ids
  seq_group   (N,)     group of each response
  group_keys  G str    content hash of each group (what the trunk cache is keyed by)

Written against transformers' decoder layout (`layers`, `norm`, `rotary_emb`, `embed_tokens`,
current `cache=` API), so any Llama/Qwen-style text model can use it.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..errors import ConfigError
from .common import decoder_layers, pad_right

Runner = Callable[..., torch.Tensor]
"""run(attention_mask=, cache=, position_ids=None, input_ids=|inputs_embeds=) -> hidden (B, T, H)."""


def text_model(lm: nn.Module) -> nn.Module:
    """The bare decoder inside a peft wrapper (adapters are applied in place, so they still run)."""
    return lm.get_base_model() if hasattr(lm, "get_base_model") else lm


def new_cache(lm: nn.Module) -> Any:
    """An empty key/value cache with one layer per decoder layer of `lm`."""
    from transformers import DynamicCache

    return DynamicCache(config=text_model(lm).config)


def lm_runner(lm: nn.Module) -> Runner:
    """The whole language model (its own forward) as a runner."""

    def run(**kw: Any) -> torch.Tensor:
        return lm(**kw, use_cache=True).last_hidden_state

    return run


class DecoderRange:
    """Decoder layers [start, stop) of a transformers text model, then its final norm if `norm`.

    Shares the model's modules and weights (nothing is copied or registered); positions, the
    causal mask and the rotary embedding are made as the model's own forward makes them, with
    the mask sized against cache layer `start`. Each attention module writes the cache layer of
    its own index, so one cache serves ranges run one after the other.
    """

    def __init__(self, lm: nn.Module, start: int, stop: int, norm: bool) -> None:
        base = text_model(lm)
        layers = decoder_layers(base)
        if not 0 <= start < stop <= len(layers):
            raise ValueError(f"layer range [{start}, {stop}) outside 0..{len(layers)}")
        types = getattr(base.config, "layer_types", None) or ()
        if any(t != "full_attention" for t in list(types)[start:stop]):
            raise ConfigError("shared-prefix layer ranges support full-attention layers only")
        self.base, self.start, self.stop = base, start, stop
        self.layers = list(layers)[start:stop]
        self.norm = base.norm if norm else None

    def __call__(self, *, attention_mask: torch.Tensor, cache: Any, position_ids: torch.Tensor | None = None,
                 input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        from transformers.masking_utils import create_causal_mask

        hidden = self.base.get_input_embeddings()(input_ids) if inputs_embeds is None else inputs_embeds
        if position_ids is None:
            past = cache.get_seq_length(self.start)
            position_ids = (torch.arange(hidden.shape[1], device=hidden.device) + past).unsqueeze(0)
        mask = create_causal_mask(config=self.base.config, inputs_embeds=hidden, attention_mask=attention_mask,
                                  cache=cache, position_ids=position_ids, layer_idx=self.start)
        rotary = self.base.rotary_emb(hidden, position_ids=position_ids)
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=position_ids,
                           cache=cache, use_cache=True)
        return self.norm(hidden) if self.norm is not None else hidden


def shared_prefix_forward(run: Runner, cache: Any, batch: dict[str, Any], prefix_embeds: torch.Tensor,
                          responses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefixes once per group (G rows), then every response on its group's cached prefix.

    `responses` is {"input_ids": (N, Tr)} or {"inputs_embeds": (N, Tr, H)}; `cache` is empty and
    filled here. Returns the hidden states of the prefixes (G, Tp, H) and responses (N, Tr, H).
    """
    prefix_mask = batch["prefix_mask"]
    prefix_h = run(inputs_embeds=prefix_embeds, attention_mask=prefix_mask, cache=cache)
    seq_group = batch["seq_group"]
    # (G, heads, Tp, d) -> (N, heads, Tp, d): each response sees its group's prefix.
    cache.reorder_cache(seq_group)
    resp_mask = batch["resp_mask"]
    Tr = resp_mask.shape[1]
    prefix_len = prefix_mask.sum(dim=1)[seq_group]  # (N,)
    # Right-padded prefixes leave masked holes; positions continue from each real prefix end.
    position_ids = prefix_len.unsqueeze(1) + torch.arange(Tr, device=resp_mask.device).unsqueeze(0)
    full_mask = torch.cat([prefix_mask[seq_group], resp_mask], dim=1)  # (N, Tp + Tr)
    resp_h = run(**responses, attention_mask=full_mask, position_ids=position_ids, cache=cache)
    return prefix_h, resp_h


def first_trained_layer(lm: nn.Module) -> int | None:
    """Index of the lowest decoder layer with a trainable parameter (None if none trains)."""
    layers = decoder_layers(text_model(lm))
    return next((i for i, layer in enumerate(layers) if any(p.requires_grad for p in layer.parameters())), None)


class TrunkCache:
    """The frozen trunk's output per group, for training with frozen lower layers.

    Valid only when nothing below layer `split` trains and the model has no dropout: that layer's
    input is then a fixed function of the group. A group's first visit runs layers [0, split)
    without autograd and stores the prefix and response states on the CPU; every visit runs
    layers [split, L) + norm on them, with the rewards and gradients of the full model.
    """

    def __init__(self, lm: nn.Module, split: int,
                 store: dict[str, tuple[torch.Tensor, list[torch.Tensor]]] | None = None) -> None:
        n = len(decoder_layers(text_model(lm)))
        self.lm, self.split = lm, split
        self.bottom = DecoderRange(lm, 0, split, norm=False)
        self.top = DecoderRange(lm, split, n, norm=True)
        # A store handed in by the caller outlives this cache (several runs on one frozen trunk).
        self.store = store if store is not None else {}

    def __len__(self) -> int:
        return len(self.store)

    def forward(self, batch: dict[str, Any], prefix_embeds: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Response hidden states (N, Tr, H); `prefix_embeds()` is called only for unseen groups."""
        store, keys = self.store, batch["group_keys"]
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
                prefix_h, resp_h = shared_prefix_forward(self.bottom, new_cache(self.lm), batch, prefix_embeds(),
                                                         {"input_ids": batch["resp_ids"]})
            p_len, r_len = prefix_mask.sum(1).tolist(), resp_mask.sum(1).tolist()
            # Stored as normal tensors even when filled under inference_mode (scoring), so that a
            # later training visit can use them in autograd.
            with torch.inference_mode(False):
                for g, key in enumerate(keys):
                    store[key] = (prefix_h[g, : p_len[g]].cpu().clone(),
                                  [resp_h[n, : r_len[n]].cpu().clone() for n in members[g]])
        _, hidden = shared_prefix_forward(self.top, new_cache(self.lm), batch, prefix_h, {"inputs_embeds": resp_h})
        return hidden  # (N, Tr, H)


def prefix_layout(ids: list[list[int]], resp_lens: list[int], sizes: list[int], pad_id: int) -> dict[str, Any]:
    """The shared-prefix batch keys for tokenised sequences laid out group by group:
    `prefix_ids`/`prefix_mask` (G, Tp), `resp_ids`/`resp_mask` (N, Tr), `seq_group` (N,); or {}
    when the batch cannot share.

    A sequence's last `resp_lens[n]` ids are its response. A tokenizer may merge the prompt's
    last characters with a response's first ones into one token (which then counts as response),
    so the prefix ids of a group's responses can differ; sharing one prefix would then change
    those rewards, so the batch shares only if every group's responses have identical prefix ids
    and every response keeps at least one token (where its reward is read).
    """
    prefix_rows, resp_rows, seq_group = [], [], []
    start = 0
    for g, size in enumerate(sizes):
        members = range(start, start + size)
        heads = {tuple(ids[n][: len(ids[n]) - resp_lens[n]]) for n in members}
        if len(heads) != 1 or min(resp_lens[n] for n in members) == 0:
            return {}
        prefix_rows.append(list(heads.pop()))
        resp_rows.extend(ids[n][len(ids[n]) - resp_lens[n]:] for n in members)
        seq_group.extend([g] * size)
        start += size
    prefix_ids, prefix_mask = pad_right(prefix_rows, pad_id)
    resp_ids, resp_mask = pad_right(resp_rows, pad_id)
    return {
        "prefix_ids": prefix_ids,  # (G, Tp) one prefix per group
        "prefix_mask": prefix_mask,
        "resp_ids": resp_ids,  # (N, Tr) responses alone
        "resp_mask": resp_mask,
        "seq_group": torch.tensor(seq_group, dtype=torch.long),  # (N,)
    }
