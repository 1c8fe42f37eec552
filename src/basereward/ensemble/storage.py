"""Ensembles on disk: one directory with `ensemble.json`; members are referenced by path.

Members are loaded with an injected `loader(path) -> RewardSource` (the CLI passes
`basereward.load.load_scorer`), so this package never imports torch. A member path that is itself an
ensemble directory is loaded here, recursively, so the loader only ever loads single models.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import BaseRewardError
from ..io import read_json, write_json
from ..scoring.interface import RewardSource

if TYPE_CHECKING:
    from .combine import Ensemble
    from .router import ModalityRouter
    from .task_router import TaskRouter

ENSEMBLE_FILE = "ensemble.json"
FORMAT_VERSION = 1

Loader = Callable[[str], RewardSource]


def is_ensemble_dir(path: str) -> bool:
    """True if `path` is a directory holding an `ensemble.json` (an ensemble or a router)."""
    return os.path.isfile(os.path.join(path, ENSEMBLE_FILE))


def read_spec(directory: str, kind: str | None = None) -> dict[str, Any]:
    """The parsed `directory/ensemble.json`, its format version checked (and its kind, if given)."""
    path = os.path.join(directory, ENSEMBLE_FILE)
    if not os.path.isfile(path):
        raise BaseRewardError(f"{directory}: not an ensemble directory (no {ENSEMBLE_FILE})")
    spec = read_json(path)
    if not isinstance(spec, dict) or spec.get("format_version") != FORMAT_VERSION:
        version = spec.get("format_version") if isinstance(spec, dict) else None
        raise BaseRewardError(f"{path}: unsupported format_version {version!r}")
    if kind is not None and spec.get("kind") != kind:
        raise BaseRewardError(f"{directory}: {ENSEMBLE_FILE} has kind {spec.get('kind')!r}, not {kind!r}")
    return spec


def resolve(path: str, directory: str) -> str:
    """A member path as stored, resolved against the ensemble directory (absolute paths as they are)."""
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(directory, path))


def write_spec(directory: str, spec: dict[str, Any], member_paths: Sequence[str]) -> str:
    """Write `directory/ensemble.json` atomically; returns its path."""
    # Relative member paths are resolved against the ensemble directory on load; a path given
    # relative to the working directory instead would load the wrong (or no) model later, so
    # refuse to write one that does not resolve from where it will be read.
    for p in member_paths:
        if not os.path.exists(resolve(p, directory)):
            raise BaseRewardError(
                f"ensemble member path {p!r} does not exist relative to {directory!r}; relative member "
                "paths are resolved against the ensemble directory (or give an absolute path)"
            )
    return str(write_json(os.path.join(directory, ENSEMBLE_FILE), spec))


def load_member(path: str, directory: str, loader: Loader) -> RewardSource:
    """The member stored as `path` in `directory`: a nested combination or `loader(resolved path)`."""
    resolved = resolve(path, directory)
    if is_ensemble_dir(resolved):
        return load_combined(resolved, loader)
    return loader(resolved)


def load_combined(directory: str, loader: Loader) -> "Ensemble | ModalityRouter | TaskRouter":
    """Load whatever `directory/ensemble.json` describes (kind "ensemble", "router" or "task-router")."""
    # Imported here: the combination classes load their members through this module.
    from .combine import Ensemble
    from .router import ModalityRouter

    spec = read_spec(directory)
    kind = spec.get("kind")
    if kind == "ensemble":
        return Ensemble.from_json(spec, directory, loader)
    if kind == "router":
        return ModalityRouter.from_json(spec, directory, loader)
    if kind == "task-router":
        from .task_router import TaskRouter

        return TaskRouter.from_json(spec, directory, loader)
    raise BaseRewardError(f"{os.path.join(directory, ENSEMBLE_FILE)}: unknown kind {kind!r}")
