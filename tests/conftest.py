"""Shared test setup: make `tests/helpers` importable as `helpers`; find the shared data sets.

Some tests read published data from `../shared/data` beside the checkout (RM-Bench, HH-RLHF).
Where it is missing they skip, unless `BASEREWARD_REQUIRE_SHARED_DATA=1` (CI sets it when the
folder exists): then a missing file is a failure with a clear message, never a silent skip.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

# transformers attaches its log handler to whichever stderr is current when its logging is first
# set up; inside a test that captures stderr that is a temporary stream, and a later test then
# sees "--- Logging error ---" in its own stderr. Setting it up here binds it to the real stderr.
from transformers.utils import logging as _hf_logging  # noqa: E402

_hf_logging.get_logger("transformers")

REPO = Path(__file__).resolve().parents[1]
REQUIRE_ENV = "BASEREWARD_REQUIRE_SHARED_DATA"
# The same places `basereward.data.sources.hh_rlhf.default_hh_path` looks: beside the checkout,
# inside it (a copy that carries the folder), then the folder named by the environment variable.
SHARED_DATA_ENV = "BASEREWARD_SHARED_DATA"


def shared_data_candidates(relative: str) -> list[Path]:
    candidates = [REPO.parent / "shared" / "data" / relative, REPO / "shared" / "data" / relative]
    if os.environ.get(SHARED_DATA_ENV):
        candidates.append(Path(os.environ[SHARED_DATA_ENV]) / relative)
    return candidates


def shared_data(relative: str) -> Path:
    """The path of `relative` (e.g. "rm-bench") under the shared data folder.

    Missing: `pytest.fail` when BASEREWARD_REQUIRE_SHARED_DATA=1, else `pytest.skip`.
    """
    candidates = shared_data_candidates(relative)
    for path in candidates:
        if path.exists():
            return path
    message = f"shared data {relative!r} not found (tried {', '.join(map(str, candidates))})"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message}; {REQUIRE_ENV}=1 says this run must have it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_data_path():
    """`shared_data` as a fixture: `shared_data_path("rm-bench")` -> Path (or skip / fail)."""
    return shared_data
