"""Weighted combination of reward sources, fitted on validation pairs (see the package docstring)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from .. import metrics
from ..data.schema import Group, PreferencePair
from ..errors import BaseRewardError
from ..scoring.interface import RewardSource, ScoringMixin, score_checked
from . import storage
from .storage import Loader


class EnsembleError(BaseRewardError, ValueError):
    """An ensemble cannot be built or loaded as asked (shown to the user as one line)."""


METHODS = ("mean", "accuracy", "confidence")
Method = Literal["mean", "accuracy", "confidence"]


@dataclass(frozen=True)
class MemberStats:
    """One member's validation statistics. `margin` is on z-scores when the ensemble normalises."""

    mean: float
    std: float
    accuracy: float
    margin: float
    n_pairs: int

    @property
    def scale(self) -> float:
        # A constant member has std 0; dividing by 1 instead maps all its scores to 0 (no vote).
        return self.std if self.std > 0 else 1.0


def member_stats(chosen: Sequence[float], rejected: Sequence[float], normalize: bool) -> MemberStats:
    """Validation statistics of one member from its rewards on the chosen / rejected responses."""
    r_w = np.asarray(chosen, dtype=np.float64)
    r_l = np.asarray(rejected, dtype=np.float64)
    if r_w.shape != r_l.shape or r_w.ndim != 1 or r_w.size == 0:
        raise EnsembleError("member_stats needs equally long, non-empty chosen and rejected rewards")
    everything = np.concatenate([r_w, r_l])
    mean, std = float(everything.mean()), float(everything.std())
    scale = std if std > 0 else 1.0
    diff = (r_w - r_l) / scale if normalize else r_w - r_l
    return MemberStats(
        mean=mean,
        std=std,
        accuracy=metrics.pair_accuracy(r_w, r_l),
        margin=float(diff.mean()),
        n_pairs=int(r_w.size),
    )


def member_weights(method: str, stats: Sequence[MemberStats] | None, n_members: int) -> list[float]:
    """The weights of `method` (see the package docstring); they sum to 1."""
    if method not in METHODS:
        raise EnsembleError(f"unknown ensemble method {method!r}; expected one of {METHODS}")
    if method == "mean":
        return [1.0 / n_members] * n_members
    if stats is None or len(stats) != n_members:
        raise EnsembleError(f"method {method!r} needs validation stats for each of the {n_members} members")
    raw = [s.accuracy for s in stats] if method == "accuracy" else [max(s.margin, 0.0) for s in stats]
    total = sum(raw)
    if total <= 0:
        raise EnsembleError(f"method {method!r}: every member has a non-positive {method} on validation")
    return [r / total for r in raw]


def sample_validation(pairs: Sequence[PreferencePair], n: int = 1000, seed: int = 0) -> list[PreferencePair]:
    """Up to `n` pairs spread evenly over `source`, deterministic for a given seed.

    Each source gets an equal share; a source with fewer pairs than its share gives the rest to the
    others (water-filling); a remainder smaller than the number of sources goes to the sources
    first in sorted name order. The result keeps the input order.
    """
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        by_source[p.source].append(i)
    rng = random.Random(seed)
    sources = sorted(by_source)
    for s in sources:
        rng.shuffle(by_source[s])
    quota = dict.fromkeys(sources, 0)
    remaining = min(n, len(pairs))
    while remaining > 0:
        open_sources = [s for s in sources if quota[s] < len(by_source[s])]
        share = max(1, remaining // len(open_sources))
        for s in open_sources:
            take = min(share, len(by_source[s]) - quota[s], remaining)
            quota[s] += take
            remaining -= take
    chosen = sorted(i for s in sources for i in by_source[s][: quota[s]])
    return [pairs[i] for i in chosen]


def _flat_scores(member: RewardSource, groups: Sequence[Group], name: str) -> np.ndarray:
    """All of a member's response scores in group order, checked against the group sizes."""
    scores = score_checked(member, groups, f"ensemble member {name!r}")
    return np.asarray([x for s in scores for x in s], dtype=np.float64)


def _unflatten(flat: np.ndarray, groups: Sequence[Group]) -> list[list[float]]:
    out, start = [], 0
    for g in groups:
        out.append([float(x) for x in flat[start : start + len(g.responses)]])
        start += len(g.responses)
    return out


class Ensemble(ScoringMixin):
    """A weighted combination of member reward sources (see the package docstring for the formula)."""

    def __init__(
        self,
        members: Sequence[RewardSource],
        names: Sequence[str] | None = None,
        weights: Sequence[float] | None = None,
        method: Method = "mean",
        normalize: bool = False,
        stats: Sequence[MemberStats] | None = None,
        paths: Sequence[str] | None = None,
        validation: dict[str, Any] | None = None,
    ):
        """`weights=None` derives them from `method` and `stats`; given weights are rescaled to sum 1.

        `normalize` needs `stats` (the per-member mean/std). `paths` are only needed to `save`.
        """
        if not members:
            raise EnsembleError("an ensemble needs at least one member")
        n = len(members)
        self.members = list(members)
        self.names = list(names) if names is not None else [f"member{i}" for i in range(n)]
        self.paths = list(paths) if paths is not None else None
        self.method = method
        self.normalize = normalize
        self.stats = list(stats) if stats is not None else None
        self.validation = dict(validation or {})
        for label, seq in (("names", self.names), ("paths", self.paths), ("stats", self.stats)):
            if seq is not None and len(seq) != n:
                raise EnsembleError(f"ensemble: {len(seq)} {label} for {n} members")
        if normalize and self.stats is None:
            raise EnsembleError("normalize=True needs per-member validation stats (use fit)")
        if weights is None:
            self.weights = member_weights(method, self.stats, n)
        else:
            w = [float(x) for x in weights]
            if len(w) != n or any(x < 0 for x in w) or sum(w) <= 0:
                raise EnsembleError("ensemble weights must be one non-negative number per member, not all 0")
            self.weights = [x / sum(w) for x in w]

    def member_scores(self, groups: Sequence[Group]) -> np.ndarray:
        """(M, R) raw scores: one row per member over all R responses of all groups."""
        return np.stack([_flat_scores(m, groups, name) for m, name in zip(self.members, self.names)])

    def normalised(self, raw: np.ndarray) -> np.ndarray:
        """(M, R) raw member scores -> z_m per member (unchanged when not `normalize`)."""
        if not self.normalize:
            return raw
        assert self.stats is not None
        mu = np.asarray([s.mean for s in self.stats])[:, None]
        sd = np.asarray([s.scale for s in self.stats])[:, None]
        return (raw - mu) / sd

    def combine(self, z: np.ndarray) -> np.ndarray:
        """(M, R) -> (R,) weighted sum over members."""
        # Summed member by member (not a matmul) so that a weight of exactly 1 returns the member's
        # float unchanged: a one-member ensemble is bit-identical to its member.
        return sum(w * row for w, row in zip(self.weights, z))

    def score_groups(self, groups: Sequence[Group]) -> list[list[float]]:
        return self.score_groups_with_uncertainty(groups)[0]

    def score_groups_with_uncertainty(self, groups: Sequence[Group]) -> tuple[list[list[float]], list[list[float]]]:
        """(combined scores, member spread), both shaped like the groups' responses."""
        if not groups:
            return [], []
        z = self.normalised(self.member_scores(groups))  # (M, R)
        return _unflatten(self.combine(z), groups), _unflatten(z.std(axis=0), groups)

    def to_json(self) -> dict[str, Any]:
        if self.paths is None:
            raise BaseRewardError("this ensemble has no member paths, so it cannot be saved")
        members = [
            {"name": name, "path": path, "weight": weight,
             "stats": asdict(self.stats[i]) if self.stats is not None else None}
            for i, (name, path, weight) in enumerate(zip(self.names, self.paths, self.weights))
        ]
        return {
            "format_version": storage.FORMAT_VERSION,
            "kind": "ensemble",
            "method": self.method,
            "normalize": self.normalize,
            "members": members,
            "validation": self.validation,
        }

    def save(self, directory: str) -> str:
        """Write `directory/ensemble.json`; returns its path. Member paths are stored as given."""
        return storage.write_spec(directory, self.to_json(), self.paths or [])

    @classmethod
    def from_json(cls, spec: dict[str, Any], directory: str, loader: Loader) -> "Ensemble":
        if spec.get("kind") != "ensemble":
            raise BaseRewardError(f"{directory}: {storage.ENSEMBLE_FILE} has kind {spec.get('kind')!r}, not 'ensemble'")
        members_spec = spec["members"]
        stats = None
        if all(m.get("stats") is not None for m in members_spec):
            stats = [MemberStats(**m["stats"]) for m in members_spec]
        return cls(
            members=[storage.load_member(m["path"], directory, loader) for m in members_spec],
            names=[m["name"] for m in members_spec],
            # Stored weights are used as they are (not re-derived) so a load scores exactly as saved.
            weights=[m["weight"] for m in members_spec],
            method=spec["method"],
            normalize=spec["normalize"],
            stats=stats,
            paths=[m["path"] for m in members_spec],
            validation=spec.get("validation", {}),
        )

    @classmethod
    def load(cls, directory: str, loader: Loader) -> "Ensemble":
        """Load an ensemble directory; each member is loaded with `loader(path)`."""
        return cls.from_json(storage.read_spec(directory), directory, loader)


def fit(
    members: Sequence[RewardSource],
    val_pairs: Sequence[PreferencePair],
    method: Method = "mean",
    normalize: bool = False,
    names: Sequence[str] | None = None,
    paths: Sequence[str] | None = None,
) -> Ensemble:
    """Score `val_pairs` once per member, derive stats and weights, and return the Ensemble.

    The returned ensemble's `validation` holds the pair count, the count per source and the
    ensemble's own validation accuracy.
    """
    if not val_pairs:
        raise EnsembleError("fit needs at least one validation pair")
    groups = [p.to_group() for p in val_pairs]
    names = list(names) if names is not None else [f"member{i}" for i in range(len(members))]
    if len(names) != len(members):
        raise EnsembleError(f"fit: {len(names)} names for {len(members)} members")
    # (M, 2N): each member scores the validation set once; columns alternate chosen, rejected.
    raw = np.stack([_flat_scores(m, groups, name) for m, name in zip(members, names)])
    stats = [member_stats(row[0::2], row[1::2], normalize) for row in raw]
    ensemble = Ensemble(members, names=names, method=method, normalize=normalize, stats=stats, paths=paths)
    combined = ensemble.combine(ensemble.normalised(raw))  # (2N,)
    ensemble.validation = {
        "n_pairs": len(val_pairs),
        "per_source": dict(sorted(Counter(p.source for p in val_pairs).items())),
        "ensemble_accuracy": metrics.pair_accuracy(combined[0::2], combined[1::2]),
    }
    return ensemble
