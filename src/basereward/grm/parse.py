r"""Parse a judge's output into a `Verdict`: which response it prefers, and whether it kept the format.

The LongCoT judge is asked for `<think>analysis</think><answer>1</answer>` (R1-Reward's format:
the answer block holds "1" or "2"). Small models drift from it, so every input gets a defined result:

* choice: 1 or 2, or None when the output names neither ("no_choice"), both ("ambiguous"), or is
  empty ("empty"). The answer text is read, in order, as a bare "1"/"2" (markdown, quotes,
  brackets and a trailing period stripped), as a phrase "Response|Answer|Output X is better"
  (e.g. MM-RLHF-style "Overall Judgment: Answer 2 is better"), or as the set of standalone 1/2
  numbers in it. A lone "3", "12" or "1.5" is not a choice.
* which text is read: the `<answer>…</answer>` block(s) (tags in any case; several blocks must
  agree, else "ambiguous"); an unclosed `<answer>` runs to the end of the text (a truncated
  generation); with no answer tag, the text after `</think>`, or the whole text when there is
  nothing after it.
* format_ok: the released r1_reward format check — the whole (stripped) output is exactly one
  `<think>…</think>` followed by exactly one `<answer>…</answer>`, lowercase tags, nothing
  outside them — except that whitespace between `</think>` and `<answer>` is allowed (the released
  check refuses it; a newline there is a common small-model habit, not a format failure). Like the
  released check it is structural: `<think>x</think><answer>3</answer>` is format_ok with no choice.
* reason: "ok"; else, when choice is None, "empty" / "ambiguous" / "no_choice"; else the format
  problem: "missing_answer_tag", "unclosed_answer_tag", "multiple_answer_tags", "missing_think",
  "tag_case" or "extra_text" (text outside the tags, tags out of order or repeated).
* think: the text inside `<think>…</think>` (an unclosed `<think>` runs to `<answer>` or the end);
  with no think tag, the text before `<answer>` (or the whole text). Stripped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REASONS = ("ok", "empty", "ambiguous", "no_choice", "missing_answer_tag", "unclosed_answer_tag",
           "multiple_answer_tags", "missing_think", "tag_case", "extra_text")

_FLAGS = re.IGNORECASE | re.DOTALL
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", _FLAGS)
_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)
_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", _FLAGS)
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_STRICT = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
_BARE_TRIM = " \t\r\n*_`'\"()[]{}.:"
_PHRASE = re.compile(r"\b(?:response|answer|output)\s*#?\s*([12])\s+is\s+(?:the\s+)?(?:better|preferred)\b",
                     re.IGNORECASE)
# a standalone 1 or 2: not part of a longer number or word ("12", "x1"), not a decimal ("1.5")
_NUMBER = re.compile(r"(?<![\w.])([12])(?!\w|\.\d)")


@dataclass(frozen=True)
class Verdict:
    """A parsed judgement. choice: 1, 2 or None; reason: one of `REASONS`."""

    choice: int | None
    format_ok: bool
    reason: str
    think: str


def read_choice(text: str) -> tuple[int | None, str]:
    """(choice, "ok" | "ambiguous" | "no_choice") for one piece of answer text."""
    bare = text.strip(_BARE_TRIM)
    if bare in ("1", "2"):
        return int(bare), "ok"
    for found in (set(_PHRASE.findall(text)), set(_NUMBER.findall(text))):
        if len(found) == 1:
            return int(found.pop()), "ok"
        if len(found) == 2:
            return None, "ambiguous"
    return None, "no_choice"


def _answer_texts(text: str) -> tuple[list[str], str | None]:
    """The answer text(s) to read, and the format problem their tags show (None when fine)."""
    blocks = _ANSWER_BLOCK.findall(text)
    if len(blocks) > 1:
        return blocks, "multiple_answer_tags"
    if blocks:
        return blocks, None
    opens = list(_ANSWER_OPEN.finditer(text))
    if opens:
        return [text[opens[-1].end():]], "unclosed_answer_tag"
    close = list(_THINK_CLOSE.finditer(text))
    after = text[close[-1].end():] if close else ""
    return [after if after.strip() else text], "missing_answer_tag"


def _think(text: str) -> str:
    m = _THINK_BLOCK.search(text)
    if m:
        return m.group(1).strip()
    start = _THINK_OPEN.search(text)
    begin = start.end() if start else 0
    answer = _ANSWER_OPEN.search(text, begin)
    return text[begin:answer.start() if answer else len(text)].strip()


def _format_ok(text: str) -> bool:
    counts = [text.count(tag) for tag in ("<think>", "</think>", "<answer>", "</answer>")]
    return counts == [1, 1, 1, 1] and _STRICT.fullmatch(text) is not None


def _format_problem(text: str, tag_problem: str | None) -> str:
    if tag_problem is not None:
        return tag_problem
    if _THINK_BLOCK.search(text) is None:
        return "missing_think"
    lowered = re.sub(r"</?(?:think|answer)>", lambda m: m.group(0).lower(), text, flags=re.IGNORECASE)
    if lowered != text and _format_ok(lowered):
        return "tag_case"
    return "extra_text"


def parse_verdict(text: str) -> Verdict:
    """Parse a judge's generated text (see the module docstring for every case)."""
    if not text or not text.strip():
        return Verdict(None, False, "empty", "")
    pieces, tag_problem = _answer_texts(text)
    reads = [read_choice(p) for p in pieces]
    choices = {c for c, _ in reads if c is not None}
    if any(why == "ambiguous" for _, why in reads) or len(choices) > 1:
        choice, why = None, "ambiguous"
    elif choices:
        choice, why = choices.pop(), "ok"
    else:
        choice, why = None, "no_choice"
    format_ok = _format_ok(text)
    if choice is None:
        reason = why
    elif format_ok:
        reason = "ok"
    else:
        reason = _format_problem(text, tag_problem)
    return Verdict(choice, format_ok, reason, _think(text))
