"""Tulu-3 preference sets -> text pairs (multi-turn kept as `history`).

Two published sets share one layout, `{id, prompt, chosen, rejected}` with `chosen` and
`rejected` the whole conversation as `[{"role", "content"}, ...]` (user turn(s) included):
* `tulu-3`: `allenai/tulu-3-IF-augmented-on-policy-70b` (one `train` split, parquet);
* `wildchat`: `allenai/tulu-3-wildchat-ultrafeedback`, whose splits (`wildchat_if`,
  `wildchat_if_on_policy_70b`, `wildchat_reused_on_policy_8b`, `wildchat_reused_on_policy_70b`,
  `wildchat_unused`) are files `data/<split>-*.parquet`, or directories of a `save_to_disk`
  copy: point `path` at the split's file(s) or directory to use one split, at the folder for all.
The `prompt` column repeats the first user turn and is not needed. The final assistant turns are
the responses; the turns before them must be identical on both sides (see `chat.split_turns`).
Pair ids are `{source}:{row}:{id}`.
"""

from __future__ import annotations

from collections.abc import Iterator

from basereward.data.schema import PreferencePair
from basereward.data.sources.base import SourceContext, register
from basereward.data.sources.chat import read_message_pairs


@register("tulu-3", multimodal=False, summary="allenai/tulu-3-IF-augmented-on-policy-70b: chosen/rejected message lists")
def read_tulu3(path: str, ctx: SourceContext) -> Iterator[PreferencePair]:
    return read_message_pairs(path, ctx, "Tulu-3")


@register("wildchat", multimodal=False, summary="allenai/tulu-3-wildchat-ultrafeedback (splits wildchat_if, ...): message lists")
def read_wildchat(path: str, ctx: SourceContext) -> Iterator[PreferencePair]:
    return read_message_pairs(path, ctx, "Tulu-3 WildChat")
