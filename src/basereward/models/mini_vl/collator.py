"""mini-vl's collator: groups -> a CPU batch with the full sequences and the shared-prefix layout."""

from __future__ import annotations

import hashlib
import os
from typing import Any, Sequence

import numpy as np
import torch

from ...data.schema import Group
from ...errors import ConfigError
from ..backbone import conversation_text
from ..common import Truncation, group_sizes_tensor, pad_right, pad_token_id, token_span
from .vision import image_key, pixel_batch


def group_key(group: Group) -> str:
    """A content hash of a group (image files, prompt, responses)."""
    h = hashlib.sha1()
    for img in group.images:
        if isinstance(img, (str, os.PathLike)):
            h.update(os.path.realpath(img).encode())
        else:  # an in-memory image
            h.update(np.asarray(img).tobytes())
        h.update(b"\0")
    for text in (*(f"{role}:{content}" for role, content in group.history), group.prompt, *group.responses):
        h.update(text.encode())
        h.update(b"\1")
    return h.hexdigest()


class MiniVLCollator:
    """Groups -> CPU batch. Holds the tokenizer, the settings and a reference to the backbone's
    encoder-feature cache (image path -> features), so DataLoader workers pickle no model.

    Sequence = [chat head][image tokens][prompt ... assistant turn] + [response<|im_end|>]. The
    prefix (everything before the response) is the same for every response of a group. Besides the
    full sequences (`input_ids`, `attention_mask`, `image_mask`), the batch carries each group's
    prefix once (`prefix_ids`, `prefix_mask`, `prefix_image_mask`) and the responses alone
    (`resp_ids`, `resp_mask`) for the shared-prefix forward (models/prefix.py). Images are given as
    `image_features` (I, cells, C) when every one is in the feature cache, else as `pixel_values`
    (I, 3, S, S); each group's images once, group by group.
    """

    def __init__(self, tokenizer: Any, *, truncation: Truncation, system_prompt: str, image_size: int,
                 tokens_per_image: int, feature_cache: dict[str, torch.Tensor],
                 image_position: str = "before_prompt") -> None:
        self.tokenizer = tokenizer
        self.image_position = image_position
        self.truncation, self.system_prompt = truncation, system_prompt
        self.image_size, self.tokens_per_image = image_size, tokens_per_image
        self.feature_cache = feature_cache
        # Image positions hold the pad id in input_ids (so the ids stay valid) and are
        # overwritten by the projected image features in forward().
        self.pad_id = pad_token_id(tokenizer)
        head, _ = conversation_text("", "", system_prompt)
        self.head_text = head.split("<|im_start|>user\n", 1)[0] + "<|im_start|>user\n"
        self.head_ids = tokenizer(self.head_text, add_special_tokens=False)["input_ids"]

    def _token_rows(self, group: Group) -> tuple[list[int], list[int], bool, list[list[int]], list[bool]]:
        """(prefix ids, prefix image mask, prompt cut?, response ids, response cut? each) of one
        group under the truncation rule: the prefix depends on the prompt alone, so its responses
        share it, and each response is cut against that prefix only."""
        tok = self.tokenizer
        n_img = len(group.images) * self.tokens_per_image
        prefix_text, _ = conversation_text(group.prompt, "", self.system_prompt, history=group.history)
        # The first user turn's text, later turns, the prompt and the assistant turn's opening; the
        # image tokens sit between the head and this tail.
        tail_text = prefix_text[len(self.head_text):]
        if self.image_position == "after_prompt" and n_img:
            return self._question_first_rows(group, tail_text, n_img)
        enc = tok(tail_text, add_special_tokens=False, return_offsets_mapping=True)
        fixed = len(self.head_ids) + n_img
        # Cuttable: from the first user text to the end of the prompt (earlier turns go first).
        first = group.history[0][1] if group.history and group.history[0][0] == "user" else group.prompt
        a, b = token_span(enc["offset_mapping"], tail_text.find(first), tail_text.rfind(group.prompt) + len(group.prompt))
        prefix_ids, prompt_cut = self.truncation.fit_prompt(
            self.head_ids + [self.pad_id] * n_img + enc["input_ids"], (fixed + a, fixed + b))
        prefix_img = [0] * len(self.head_ids) + [1] * n_img + [0] * (len(prefix_ids) - fixed)
        return (prefix_ids, prefix_img, prompt_cut, *self._fit_responses(group, len(prefix_ids)))

    def _question_first_rows(self, group: Group, tail_text: str, n_img: int):
        """`_token_rows` with the image tokens after the prompt (`mini_vl.image_position:
        after_prompt`): [chat head][prompt][image tokens][end of turn, assistant turn]. A causal LM
        then reads every image token knowing the question."""
        if group.history:
            raise ConfigError("model.backbone.mini_vl.image_position=after_prompt takes single-turn prompts")
        tok = self.tokenizer
        end = tail_text.rfind(group.prompt) + len(group.prompt)
        question, rest = tail_text[:end], tail_text[end:]
        enc = tok(question, add_special_tokens=False, return_offsets_mapping=True)
        rest_ids = tok(rest, add_special_tokens=False)["input_ids"]
        a, b = token_span(enc["offset_mapping"], question.find(group.prompt), end)
        fixed = len(self.head_ids)
        ids, prompt_cut = self.truncation.fit_prompt(
            self.head_ids + enc["input_ids"] + [self.pad_id] * n_img + rest_ids, (fixed + a, fixed + b))
        image_at = len(ids) - len(rest_ids) - n_img
        prefix_img = [0] * image_at + [1] * n_img + [0] * len(rest_ids)
        return (ids, prefix_img, prompt_cut, *self._fit_responses(group, len(ids)))

    def _fit_responses(self, group: Group, prefix_len: int) -> tuple[list[list[int]], list[bool]]:
        """(response ids, response cut? each): each response cut against the prefix alone."""
        answers = [conversation_text("", r)[1] for r in group.responses]
        fitted = [self.truncation.fit_response(prefix_len, r)
                  for r in self.tokenizer(answers, add_special_tokens=False)["input_ids"]]
        return [r for r, _ in fitted], [c for _, c in fitted]

    def __call__(self, groups: Sequence[Group]) -> dict[str, Any]:
        sizes = group_sizes_tensor(groups)
        images: list[Any] = []
        image_group: list[int] = []
        cached: list[torch.Tensor | None] = []
        prefixes, prefix_img, responses, seq_group, keys = [], [], [], [], []
        cut_prompt: list[bool] = []
        cut_resp: list[bool] = []
        for g_idx, group in enumerate(groups):
            keys.append(group_key(group))
            for img in group.images:
                key = image_key(img) if self.feature_cache else None
                cached.append(self.feature_cache.get(key) if key is not None else None)
                images.append(img)
                image_group.append(g_idx)
            prefix, mask, prompt_cut, resp_ids, resp_cut = self._token_rows(group)
            prefixes.append(prefix)
            prefix_img.append(mask)
            for r, cut in zip(resp_ids, resp_cut):
                responses.append(r)
                seq_group.append(g_idx)
                cut_prompt.append(prompt_cut)
                cut_resp.append(cut)
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
            "truncated_prompt": torch.tensor(cut_prompt, dtype=torch.bool),  # (N,)
            "truncated_response": torch.tensor(cut_resp, dtype=torch.bool),  # (N,)
        }
        if images and all(c is not None for c in cached):
            batch["image_features"] = torch.stack(cached)  # (I, cells, C): the encoder's output, cached
        elif images:
            # (I, 3, S, S): each group's images once
            batch["pixel_values"] = pixel_batch(images, self.image_size)
        return batch
