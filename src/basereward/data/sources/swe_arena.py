"""SWE Arena votes (`bigcode/swe-arena-preference-5k`) -> text pairs, winner chosen.

Published row (the arena's FastChat battle log): `{type, feedback: {vote_type, correctness,
efficiency, explainability, maintainability, ui_ux_design}, models: {model_A, model_B},
chat_session_id, instruction, states: {model_A, model_B}}`, each state `{messages: [[role,
text], ...], roles: [user role, assistant role], offset, model_name, conv_id, ...}` where the
real conversation starts at `messages[offset]` and `roles` names the template's two speakers
(e.g. "Human"/"Assistant").

The vote is read from `feedback.vote_type`, else from `type`, accepting the spellings these
logs use: FastChat's `leftvote` / `rightvote` / `tievote` / `bothbad_vote` and BigCodeArena's
`vote_model_A` / `vote_model_B` / `vote_tie` / `vote_both_bad` (also `vote_left` /
`vote_right`). A vote for A or B makes a pair (the voted side chosen); ties ("tie vote") and
both-bad votes ("both-bad vote") say nothing about which is better and are skipped, as is a row
without a recognised vote. A battle's two conversations must share every turn but the last
answer: multi-turn battles, where each side saw its own earlier answers, are skipped
("conversations differ before the final response"). Pair ids `{source}:{row}:{chat_session_id}`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from basereward.data.schema import PreferencePair, Turn
from basereward.data.sources.base import SourceContext, iter_source_rows, register
from basereward.data.sources.chat import require_columns, split_turns

VOTES = {
    **dict.fromkeys(("leftvote", "vote_model_A", "vote_left"), "A"),
    **dict.fromkeys(("rightvote", "vote_model_B", "vote_right"), "B"),
    **dict.fromkeys(("tievote", "vote_tie"), "tie vote"),
    **dict.fromkeys(("bothbad_vote", "vote_both_bad"), "both-bad vote"),
}


def vote_of(row: dict[str, Any]) -> str | None:
    """"A", "B", "tie vote", "both-bad vote" or None (no recognised vote in the row)."""
    feedback = row.get("feedback")
    for value in (feedback.get("vote_type") if isinstance(feedback, dict) else None, row.get("type")):
        if isinstance(value, str) and value.strip() in VOTES:
            return VOTES[value.strip()]
    return None


def conversation(state: Any) -> list[Turn]:
    """A state's turns from `offset` on, as ("user"|"assistant", text); ValueError(reason)."""
    if not isinstance(state, dict) or not isinstance(state.get("messages"), list):
        raise ValueError("no conversation")
    offset = state.get("offset") or 0
    roles = state.get("roles")
    messages = state["messages"][offset:] if isinstance(offset, int) and offset >= 0 else None
    if not messages or not isinstance(roles, list) or len(roles) < 2:
        raise ValueError("no conversation")
    turns = []
    for m in messages:
        if not isinstance(m, (list, tuple)) or len(m) != 2 or m[0] not in roles[:2]:
            raise ValueError("malformed message")
        # A pending answer is logged as null; it compares as empty and is skipped later.
        turns.append(("user" if m[0] == roles[0] else "assistant", m[1] if isinstance(m[1], str) else ""))
    return turns


@register("swe-arena", multimodal=False, summary="bigcode/swe-arena-preference-5k: arena battles -> voted answer chosen")
def read(path: str, ctx: SourceContext) -> Iterator[PreferencePair]:
    for where, row in iter_source_rows(path):
        ctx.row()
        index = ctx.rows - 1
        require_columns(row, where, ("states",), "swe-arena")
        vote = vote_of(row)
        if vote not in ("A", "B"):
            ctx.skip(vote or "no recognised vote")
            continue
        states = row["states"] if isinstance(row["states"], dict) else {}
        try:
            a, b = conversation(states.get("model_A")), conversation(states.get("model_B"))
            history, prompt, chosen, rejected = split_turns(*((a, b) if vote == "A" else (b, a)))
        except ValueError as exc:
            ctx.skip(str(exc))
            continue
        session = row.get("chat_session_id")
        yield PreferencePair(
            id=ctx.pair_id(index, *([session] if session not in (None, "") else [])),
            prompt=prompt,
            chosen=chosen,
            rejected=rejected,
            source=ctx.name,
            history=history,
        )
