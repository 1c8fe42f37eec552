"""Shared rules of the text adapters: message lists -> (history, prompt, chosen, rejected).

Preference sets in the chat format (Tulu-3, WildChat, Olmo-2; swe-arena after its own parsing)
store each side as the whole conversation, `[{"role", "content"}, ...]`, ending in the answer
being compared. A pair needs both sides to share every turn but the last one: that shared part
is the prompt (its last user turn) plus the earlier turns (`history`), and the two final
assistant turns are the responses. Anything else is a row the adapter counts as skipped, with
one of the short reasons below (they become the keys of the build's `skipped` statistics).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from basereward.data.schema import PreferencePair, Turn, history_problem
from basereward.data.sources.base import SourceContext, iter_source_rows
from basereward.errors import DataError

# Roles a chat template accepts for the pair format; "system" is recognised only to say why a
# row is skipped (the pair format has no system turn, and dropping it would change the question
# the responses answer).
_ROLES = ("user", "assistant", "system")


def require_columns(row: dict[str, Any], where: str, columns: Sequence[str], dataset: str) -> None:
    """DataError when a column of the published schema is absent: the file is another dataset
    (or another layout), which is a mistake in the recipe, not a bad row to count and skip."""
    missing = [c for c in columns if c not in row]
    if missing:
        raise DataError(
            f"{where}: not in the {dataset} layout (no {', '.join(repr(c) for c in missing)}; "
            f"columns: {', '.join(sorted(map(str, row))) or 'none'})"
        )


def text_problem(prompt: Any, chosen: Any, rejected: Any) -> str:
    """Why (prompt, chosen, rejected) cannot be a pair ("" if it can): the pair loader refuses
    empty texts and identical responses, so the adapters never write them."""
    if not all(isinstance(t, str) for t in (prompt, chosen, rejected)):
        return "text is not a string"
    if not prompt.strip():
        return "empty prompt"
    if not chosen.strip() or not rejected.strip():
        return "empty response"
    if chosen.strip() == rejected.strip():
        return "identical responses"
    return ""


def turns_of(messages: Any) -> list[Turn]:
    """`[{"role", "content"}, ...]` -> [(role, content)]; ValueError(reason) if malformed."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("no messages")
    turns = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise ValueError("malformed message")
        role = m.get("role")
        if role not in _ROLES:
            raise ValueError("unknown message role")
        turns.append((role, m["content"]))
    return turns


def split_turns(chosen: Sequence[Turn], rejected: Sequence[Turn]) -> tuple[tuple[Turn, ...], str, str, str]:
    """(history, prompt, chosen response, rejected response) of two conversations that share
    every turn but their final assistant turn; ValueError(reason) otherwise."""
    if any(role == "system" for role, _ in (*chosen, *rejected)):
        raise ValueError("system message")
    if not chosen or not rejected or chosen[-1][0] != "assistant" or rejected[-1][0] != "assistant":
        raise ValueError("last turn is not an assistant response")
    context = tuple(chosen[:-1])
    if context != tuple(rejected[:-1]):
        # e.g. multi-turn arena battles: each side saw its own earlier answers.
        raise ValueError("conversations differ before the final response")
    if not context or context[-1][0] != "user":
        raise ValueError("no user turn before the response")
    if any(not content.strip() for _, content in context[:-1]):
        raise ValueError("empty message")
    history = context[:-1]
    if history_problem(history):
        raise ValueError("turns do not alternate user/assistant")
    prompt, response_c, response_r = context[-1][1], chosen[-1][1], rejected[-1][1]
    problem = text_problem(prompt, response_c, response_r)
    if problem:
        raise ValueError(problem)
    return history, prompt, response_c, response_r


def number(value: Any) -> float | None:
    """A finite rating/score as float; None for "N/A", None, NaN, booleans and other non-numbers."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def read_message_pairs(path: str, ctx: SourceContext, dataset: str) -> Iterator[PreferencePair]:
    """Rows `{chosen: [messages], rejected: [messages], id?, source?, chosen_rating?,
    rejected_rating?}` (the Tulu-3 / Olmo-2 preference layout) -> pairs.

    When both ratings are numbers they must say chosen is better: equal ratings are a tie
    ("tied ratings") and a lower chosen rating contradicts the label; both rows are skipped.
    """
    for where, row in iter_source_rows(path):
        ctx.row()
        index = ctx.rows - 1
        require_columns(row, where, ("chosen", "rejected"), dataset)
        rating_c, rating_r = number(row.get("chosen_rating")), number(row.get("rejected_rating"))
        if rating_c is not None and rating_r is not None and rating_c <= rating_r:
            ctx.skip("tied ratings" if rating_c == rating_r else "chosen rated below rejected")
            continue
        try:
            history, prompt, chosen, rejected = split_turns(turns_of(row["chosen"]), turns_of(row["rejected"]))
        except ValueError as exc:
            ctx.skip(str(exc))
            continue
        own_id = row.get("id")
        yield PreferencePair(
            id=ctx.pair_id(index, *([own_id] if own_id not in (None, "") else [])),
            prompt=prompt,
            chosen=chosen,
            rejected=rejected,
            source=ctx.name,
            category=row["source"] if isinstance(row.get("source"), str) else "",
            history=history,
        )
