"""The records every tool reads and writes.

`PreferencePair` is one line of the pair JSONL format:
`{"id", "prompt", "images": [path, ...], "chosen", "rejected", "source", "category"}` with image
paths relative to the JSONL file (absolute once loaded). `Group` is what the model scores: one
prompt with its images and any number of responses; a pair is a group of two (chosen, rejected).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PAIR_FIELDS = ("id", "prompt", "images", "chosen", "rejected", "source", "category", "history")

Turn = tuple[str, str]
"""(role, content) of one earlier turn of a multi-turn prompt."""


def history_problem(history: tuple[Turn, ...]) -> str:
    """Why `history` is not a valid run of earlier turns ("" if it is): user and assistant turns
    alternating, starting with the user and ending with the assistant (the prompt is the next
    user turn), each non-empty text. Chat templates refuse anything else."""
    if len(history) % 2:
        return f"history has {len(history)} turns; it must end with an assistant turn (user, assistant, ...)"
    for i, turn in enumerate(history):
        want = "user" if i % 2 == 0 else "assistant"
        if not (isinstance(turn, tuple) and len(turn) == 2):
            return f"history[{i}] must be a (role, content) pair"
        if turn[0] != want:
            return f"history[{i}].role must be {want!r} (turns alternate, user first), got {turn[0]!r}"
        if not isinstance(turn[1], str) or not turn[1].strip():
            return f"history[{i}].content must be a non-empty string"
    return ""


@dataclass(frozen=True)
class PreferencePair:
    """One preference pair. `images` holds absolute paths (or is empty for text-only pairs)."""

    id: str
    prompt: str
    chosen: str
    rejected: str
    images: tuple[str, ...] = ()
    source: str = ""
    category: str = ""
    history: tuple[Turn, ...] = ()
    """Earlier turns of a multi-turn conversation, oldest first; `prompt` is the last user turn.
    Rendered by the backbone's chat template as messages (never flattened into `prompt`)."""

    def __post_init__(self) -> None:
        if self.history:
            problem = history_problem(self.history)
            if problem:
                raise ValueError(problem)

    @property
    def is_multimodal(self) -> bool:
        return len(self.images) > 0

    def to_group(self) -> "Group":
        """The pair as a group whose responses are (chosen, rejected)."""
        return Group(prompt=self.prompt, images=self.images, responses=(self.chosen, self.rejected),
                     history=self.history)

    def to_json(self, relative_to: str | None = None) -> dict[str, Any]:
        """The JSONL record; image paths are made relative to `relative_to` (a directory) if given."""
        import os

        images = list(self.images)
        if relative_to is not None:
            # Both sides resolved: a folder reached through a symlink still gets "images/x.png".
            base = os.path.realpath(relative_to)
            images = [os.path.relpath(os.path.realpath(p), base) for p in images]
        return {
            "id": self.id,
            "prompt": self.prompt,
            "images": images,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "source": self.source,
            "category": self.category,
            # Written only when present: single-turn files stay as they were.
            **({"history": [{"role": r, "content": c} for r, c in self.history]} if self.history else {}),
        }


@dataclass(frozen=True)
class Group:
    """A prompt, its images (paths or PIL images) and the responses to score against it.

    The backbone encodes the images of a group once and shares them across its responses.
    """

    prompt: str
    responses: tuple[str, ...]
    images: tuple[Any, ...] = field(default=())
    history: tuple[Turn, ...] = ()
    """Earlier turns (role, content), oldest first; `prompt` is the last user turn."""
