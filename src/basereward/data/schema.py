"""The records every tool reads and writes.

`PreferencePair` is one line of the pair JSONL format:
`{"id", "prompt", "images": [path, ...], "chosen", "rejected", "source", "category"}` with image
paths relative to the JSONL file (absolute once loaded). `Group` is what the model scores: one
prompt with its images and any number of responses; a pair is a group of two (chosen, rejected).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PAIR_FIELDS = ("id", "prompt", "images", "chosen", "rejected", "source", "category")


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

    @property
    def is_multimodal(self) -> bool:
        return len(self.images) > 0

    def to_group(self) -> "Group":
        """The pair as a group whose responses are (chosen, rejected)."""
        return Group(prompt=self.prompt, images=self.images, responses=(self.chosen, self.rejected))

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
        }


@dataclass(frozen=True)
class Group:
    """A prompt, its images (paths or PIL images) and the responses to score against it.

    The backbone encodes the images of a group once and shares them across its responses.
    """

    prompt: str
    responses: tuple[str, ...]
    images: tuple[Any, ...] = field(default=())
