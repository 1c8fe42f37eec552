"""OLMo 2 preference mix (`allenai/olmo-2-0425-1b-preference-mix`) -> text pairs.

Published row: `{chosen, rejected, chosen_model?, rejected_model?, chosen_rating?,
rejected_rating?, source?, id?, prompt?}` with `chosen` / `rejected` the whole conversation as
`[{"role": "user"|"assistant", "content"}, ...]` (the columns besides the two lists vary between
the OLMo 2 mixes). The two final assistant turns are the responses, the shared turns before
them the prompt and `history` (`chat.split_turns`). When both ratings are present they must rank
chosen above rejected; ties ("tied ratings") and contradictions are skipped. Category is the
`source` column (the sub-mix a row comes from); pair ids `{source}:{row}:{id}`.
"""

from __future__ import annotations

from collections.abc import Iterator

from basereward.data.schema import PreferencePair
from basereward.data.sources.base import SourceContext, register
from basereward.data.sources.chat import read_message_pairs


@register("olmo-2", multimodal=False, summary="allenai/olmo-2-0425-1b-preference-mix: chosen/rejected message lists (+ ratings)")
def read(path: str, ctx: SourceContext) -> Iterator[PreferencePair]:
    return read_message_pairs(path, ctx, "OLMo 2 preference mix")
