"""Routing by modality: text-only groups to one reward source, groups with images to another."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from ..data.schema import Group
from ..errors import BaseRewardError
from ..scoring.interface import RewardSource, ScoringMixin, scores_with_uncertainty
from . import storage
from .storage import Loader


class ModalityRouter(ScoringMixin):
    """Text-only groups go to `text_scorer`, groups with images to `multimodal_scorer`.

    Each side is scored in one batched call and the scores are put back in the input order.
    `routing_report()` counts the groups routed so far to each side.
    """

    def __init__(
        self,
        text_scorer: RewardSource,
        multimodal_scorer: RewardSource,
        text_name: str | None = None,
        multimodal_name: str | None = None,
        text_path: str | None = None,
        multimodal_path: str | None = None,
    ):
        self.text_scorer = text_scorer
        self.multimodal_scorer = multimodal_scorer
        self.text_path = text_path
        self.multimodal_path = multimodal_path
        self.text_name = text_name or (os.path.basename(os.path.normpath(text_path)) if text_path else "text")
        self.multimodal_name = multimodal_name or (
            os.path.basename(os.path.normpath(multimodal_path)) if multimodal_path else "multimodal"
        )
        self._counts = {"text": 0, "multimodal": 0}

    def _route(self, groups: Sequence[Group], call: Callable[[Any, list[Group]], Any]) -> list[Any]:
        """Split by modality, apply `call(source, side_groups)` per side, reassemble in order."""
        sides: dict[str, list[int]] = {"text": [], "multimodal": []}
        for i, g in enumerate(groups):
            sides["multimodal" if len(g.images) > 0 else "text"].append(i)
        out: list[Any] = [None] * len(groups)
        for side, source in (("text", self.text_scorer), ("multimodal", self.multimodal_scorer)):
            idx = sides[side]
            if not idx:
                continue
            results = call(source, [groups[i] for i in idx])
            for i, r in zip(idx, results):
                out[i] = r
            self._counts[side] += len(idx)
        return out

    def score_groups(self, groups: Sequence[Group]) -> list[list[float]]:
        return self._route(groups, lambda source, gs: source.score_groups(gs))

    def score_groups_with_uncertainty(self, groups: Sequence[Group]) -> tuple[list[list[float]], list[list[float]]]:
        """Scores plus the routed member's spread (0 for a single model: nothing to disagree with)."""

        def call(source: Any, gs: list[Group]) -> list[tuple[list[float], list[float]]]:
            scores, spread = scores_with_uncertainty(source, gs)
            return list(zip(scores, spread))

        both = self._route(groups, call)
        return [s for s, _ in both], [u for _, u in both]

    def routing_report(self) -> dict[str, Any]:
        """Groups routed to each side since construction, and the member names."""
        return {**self._counts, "text_member": self.text_name, "multimodal_member": self.multimodal_name}

    def to_json(self) -> dict[str, Any]:
        if self.text_path is None or self.multimodal_path is None:
            raise BaseRewardError("this router has no member paths, so it cannot be saved")
        return {
            "format_version": storage.FORMAT_VERSION,
            "kind": "router",
            "text": {"name": self.text_name, "path": self.text_path},
            "multimodal": {"name": self.multimodal_name, "path": self.multimodal_path},
        }

    def save(self, directory: str) -> str:
        """Write `directory/ensemble.json` (kind "router"); returns its path."""
        return storage.write_spec(directory, self.to_json(), [self.text_path or "", self.multimodal_path or ""])

    @classmethod
    def from_json(cls, spec: dict[str, Any], directory: str, loader: Loader) -> "ModalityRouter":
        if spec.get("kind") != "router":
            raise BaseRewardError(f"{directory}: {storage.ENSEMBLE_FILE} has kind {spec.get('kind')!r}, not 'router'")
        t, m = spec.get("text"), spec.get("multimodal")
        if not all(isinstance(x, dict) and {"path", "name"} <= x.keys() for x in (t, m)):
            raise BaseRewardError(f"{directory}: {storage.ENSEMBLE_FILE} needs \"text\" and \"multimodal\" members, "
                                  "each with a name and a path")
        return cls(
            storage.load_member(t["path"], directory, loader),
            storage.load_member(m["path"], directory, loader),
            text_name=t["name"],
            multimodal_name=m["name"],
            text_path=t["path"],
            multimodal_path=m["path"],
        )

    @classmethod
    def load(cls, directory: str, loader: Loader) -> "ModalityRouter":
        return cls.from_json(storage.read_spec(directory), directory, loader)
