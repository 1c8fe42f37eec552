"""Judge prompts: the GRM (answer "1" or "2" at once) and the LongCoT-GRM (think, then answer).

Each function returns the *user turn* text; the caller wraps it in the backbone's chat template,
so the judge's reply starts right after the assistant header: with the GRM the first reply token
is the answer digit (`ANSWER_TOKENS`), with the LongCoT-GRM it is `<think>`. The image, if any, is
placed by the backbone's collator, not here.

Two styles:

* ``"compact"`` (default): a few lines, so that prompt + both responses fit the 128-384 token
  budget of the embedded CPU model (SmolLM2 tokenizer, scaffolding alone: 34 tokens for the GRM,
  51 for LongCoT; the "r1" style takes 73 and 135 — measured when written).
* ``"r1"``: the structure of R1-Reward's released LongCoT template, in our own words: an impartial
  evaluator role for two responses of a multimodal model to one question; first a side-by-side
  comparison inside <think></think> with no tie allowed; then a single number inside
  <answer></answer>, "1" if Response 1 is better and "2" if Response 2 is; the inputs under
  Question / Response 1 / Response 2 headings; a closing line showing the exact output format.
"""

from __future__ import annotations

import re
from typing import Literal

from ..errors import BaseRewardError

ANSWER_TOKENS = ("1", "2")
"""The GRM's answer texts: "1" prefers Response 1, "2" prefers Response 2."""
PROMPT_STYLES = ("compact", "r1")
Style = Literal["compact", "r1"]
_FIELD = re.compile(r"\{(question|r1|r2)\}")

_GRM = {
    "compact": (
        "Which response answers the question better?\n"
        "Question: {question}\n"
        "Response 1: {r1}\n"
        "Response 2: {r2}\n"
        "Reply with 1 or 2 only."
    ),
    "r1": (
        "You are a fair and careful judge of two responses that a multimodal assistant gave to the "
        "same question. A tie is not allowed.\n\n"
        "### Question:\n{question}\n\n"
        "### Response 1:\n{r1}\n\n"
        "### Response 2:\n{r2}\n\n"
        "Reply with a single number: 1 if Response 1 is better, 2 if Response 2 is better."
    ),
}

_LONGCOT = {
    "compact": (
        "Compare the two responses to the question. Reason inside <think></think>, then put the "
        "number of the better response (1 or 2) inside <answer></answer>.\n"
        "Question: {question}\n"
        "Response 1: {r1}\n"
        "Response 2: {r2}"
    ),
    "r1": (
        "You are a fair and careful judge of two responses that a multimodal assistant gave to the "
        "same question.\n"
        "- First compare the two responses point by point inside <think> and </think>. A tie is "
        "not allowed: you must pick one.\n"
        "- Then give only the number of the better response inside <answer> and </answer>: "
        "1 if Response 1 is better, 2 if Response 2 is better.\n\n"
        "### Question:\n{question}\n\n"
        "### Response 1:\n{r1}\n\n"
        "### Response 2:\n{r2}\n\n"
        "### Output format (follow it exactly):\n"
        "<think>your comparison</think><answer>1 or 2</answer>"
    ),
}


def _fill(templates: dict[str, str], name: str, question: str, r1: str, r2: str, style: str) -> str:
    if style not in templates:
        raise BaseRewardError(f"{name}: style must be one of {PROMPT_STYLES}, got {style!r}")
    for label, value in (("question", question), ("r1", r1), ("r2", r2)):
        if not isinstance(value, str):
            raise BaseRewardError(f"{name}: {label} must be a string, got {type(value).__name__}")
    # One regex pass over the template, not str.format: a response may contain braces, or even
    # the text "{r2}", and inserted text must never be substituted again.
    values = {"question": question.strip(), "r1": r1.strip(), "r2": r2.strip()}
    return _FIELD.sub(lambda m: values[m.group(1)], templates[style])


def grm_prompt(question: str, r1: str, r2: str, *, style: Style = "compact") -> str:
    """User turn asking the GRM which response is better; the reply is "1" or "2" (`ANSWER_TOKENS`)."""
    return _fill(_GRM, "grm_prompt", question, r1, r2, style)


def longcot_prompt(question: str, r1: str, r2: str, *, style: Style = "compact") -> str:
    """User turn asking the LongCoT judge for `<think>…</think><answer>1|2</answer>`."""
    return _fill(_LONGCOT, "longcot_prompt", question, r1, r2, style)
