"""Anthropic HH-RLHF (harmless-base) -> text-only `PreferencePair`s with a fixed, seeded split.

Each raw row is `{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}`; the two
dialogues share every turn but the last Assistant turn. The prompt is that shared dialogue
rendered as "Human: ...\\n\\nAssistant: ...\\n\\nHuman: ...\\n\\nAssistant:" and the responses
are the two final Assistant turns, stripped.

`read` is the same conversion as the `hh-rlhf` dataset adapter of `basereward data build`
(streamed, counted, any published HH-RLHF subset file or folder); `load_hh_rlhf` and the split
functions serve the demo's fixed shared file.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from basereward.data.pairs import save_pairs
from basereward.data.rows import log_stderr
from basereward.data.schema import PreferencePair
from basereward.data.sources.base import SourceContext, iter_source_rows, register
from basereward.errors import ConfigError, DataError
from basereward.io import iter_jsonl

HH_FILE = "harmless-base-test-first1800.jsonl.gz"
SHARED_DATA_ENV = "BASEREWARD_SHARED_DATA"

_ASSISTANT = "\n\nAssistant:"
_HUMAN_TURN = re.compile(r"\n\nHuman:")
_ELLIPSIS_TURN = "Human: …"
_MIN_PROMPT_CHARS = 64
# Anthropic/hh-rlhf's preference subsets (one folder each); the one a file belongs to is its category.
_SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")


def default_hh_path() -> Path:
    """The shared HH-RLHF file under `<repo root>/../shared/data/hh-rlhf/` (else the env var).

    `<repo root>/shared/data/` is also tried because a checkout copied to another machine may
    carry the shared folder inside it. The environment variable names the `data` folder (the
    one holding `hh-rlhf/`) and serves installs that do not live in a checkout.
    """
    repo_root = Path(__file__).resolve().parents[4]
    candidates = [
        repo_root.parent / "shared" / "data" / "hh-rlhf" / HH_FILE,
        repo_root / "shared" / "data" / "hh-rlhf" / HH_FILE,
    ]
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        candidates.append(Path(env) / "hh-rlhf" / HH_FILE)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"HH-RLHF file {HH_FILE} not found (tried {tried}); set {SHARED_DATA_ENV} to the "
        "shared data folder that holds hh-rlhf/, or pass the file's path"
    )


def split_hh_dialogue(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt, chosen response, rejected response) of a raw row; ValueError(reason) if unusable."""
    cut_c = chosen.rfind(_ASSISTANT)
    cut_r = rejected.rfind(_ASSISTANT)
    if cut_c < 0 or cut_r < 0:
        raise ValueError("no Assistant turn")
    prefix = chosen[: cut_c + len(_ASSISTANT)]
    # Some rows differ before the last turn (e.g. a response that itself contains a spoofed
    # "Human:" turn); their prompt is ambiguous, so they are not used.
    if rejected[: cut_r + len(_ASSISTANT)] != prefix:
        raise ValueError("dialogues differ before the final Assistant turn")
    response_c = chosen[cut_c + len(_ASSISTANT) :].strip()
    response_r = rejected[cut_r + len(_ASSISTANT) :].strip()
    if not response_c or not response_r:
        raise ValueError("empty final response")
    if response_c == response_r:
        raise ValueError("identical responses")
    prompt = prefix.lstrip("\n")
    if not prompt.startswith("Human:"):
        raise ValueError("dialogue does not start with a Human turn")
    return prompt, response_c, response_r


def truncate_dialogue(prompt: str, max_chars: int) -> str:
    """Drop the oldest turns until `prompt` fits in `max_chars`, keeping it a Human-first dialogue.

    The final request matters most to the reward, so the tail is kept; if the last Human turn
    alone is too long, its beginning is cut and marked with "…".
    """
    if max_chars < _MIN_PROMPT_CHARS:
        raise ValueError(f"max_prompt_chars must be at least {_MIN_PROMPT_CHARS}, got {max_chars}")
    if len(prompt) <= max_chars:
        return prompt
    for match in _HUMAN_TURN.finditer(prompt):
        start = match.start() + 2  # past the "\n\n" that separates turns
        if len(prompt) - start <= max_chars:
            return prompt[start:]
    keep = max_chars - len(_ELLIPSIS_TURN)
    return _ELLIPSIS_TURN + prompt[len(prompt) - keep :]


def _read_rows(path: Path) -> list[tuple[str, str]]:
    """The (chosen, rejected) strings of every row, in file order."""
    rows: list[tuple[str, str]] = []
    for where, row in iter_jsonl(path, empty="no rows"):
        if not (isinstance(row.get("chosen"), str) and isinstance(row.get("rejected"), str)):
            raise DataError(f"{where}: expected an object with string 'chosen' and 'rejected'")
        rows.append((row["chosen"], row["rejected"]))
    return rows


def _convert(
    rows: list[tuple[str, str]], max_prompt_chars: int | None, log: Callable[[str], None]
) -> dict[int, PreferencePair]:
    """Row index -> pair for every usable row; logs how many rows were skipped and why."""
    pairs: dict[int, PreferencePair] = {}
    skipped: Counter[str] = Counter()
    for index, (chosen, rejected) in enumerate(rows):
        try:
            prompt, response_c, response_r = split_hh_dialogue(chosen, rejected)
        except ValueError as exc:
            skipped[str(exc)] += 1
            continue
        if max_prompt_chars is not None:
            prompt = truncate_dialogue(prompt, max_prompt_chars)
        pairs[index] = PreferencePair(
            id=f"hh-harmless-{index}",
            prompt=prompt,
            chosen=response_c,
            rejected=response_r,
            source="hh-rlhf",
            category="harmless",
        )
    if skipped:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
        log(f"hh-rlhf: kept {len(pairs)} of {len(rows)} rows (skipped: {reasons})")
    return pairs


def load_hh_rlhf(
    path: str | os.PathLike[str] | None = None,
    max_prompt_chars: int | None = None,
    log: Callable[[str], None] = log_stderr,
) -> list[PreferencePair]:
    """Every usable row of the HH-RLHF file as a pair, in file order (id `hh-harmless-{row}`)."""
    rows = _read_rows(Path(path) if path is not None else default_hh_path())
    pairs = _convert(rows, max_prompt_chars, log)
    return [pairs[i] for i in sorted(pairs)]


def hh_rlhf_split(
    path: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_prompt_chars: int | None = None,
    log: Callable[[str], None] = log_stderr,
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, val) pairs, split by row index with `numpy.random.default_rng(seed)`.

    The permutation covers all rows, usable or not, so a row's side of the split depends only on
    its index and the seed, never on which other rows were skipped or on `max_prompt_chars`.
    Both lists are in row order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rows = _read_rows(Path(path) if path is not None else default_hh_path())
    pairs = _convert(rows, max_prompt_chars, log)
    n_val = round(val_fraction * len(rows))
    val_rows = {int(i) for i in np.random.default_rng(seed).permutation(len(rows))[:n_val]}
    train = [pairs[i] for i in sorted(pairs) if i not in val_rows]
    val = [pairs[i] for i in sorted(pairs) if i in val_rows]
    return train, val


def write_hh_split(
    out_dir: str | os.PathLike[str],
    path: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_prompt_chars: int | None = None,
    log: Callable[[str], None] = log_stderr,
) -> tuple[Path, Path]:
    """Write `hh_train.jsonl` and `hh_val.jsonl` into `out_dir`; returns their paths."""
    train, val = hh_rlhf_split(path, val_fraction, seed, max_prompt_chars, log)
    out = Path(out_dir)
    train_path, val_path = out / "hh_train.jsonl", out / "hh_val.jsonl"
    save_pairs(train, train_path)
    save_pairs(val, val_path)
    return train_path, val_path


def _subset_of(where: str) -> str:
    """The published subset named in a row's location ("harmless-base", ...), else ""."""
    return next((name for name in _SUBSETS if name in where), "")


@register("hh-rlhf", multimodal=False, summary="Anthropic/hh-rlhf: {chosen, rejected} dialogues, shared prefix as prompt")
def read(path: str, ctx: SourceContext, *, max_prompt_chars: int | None = None) -> Iterator[PreferencePair]:
    """Rows `{chosen, rejected}` -> pairs split as `load_hh_rlhf` splits them (prompt: the shared
    dialogue flattened as "Human: ...\\n\\nAssistant:", kept for this reader's established
    format); skipped rows are counted with `split_hh_dialogue`'s reasons. Ids `{source}:{row}`;
    category is the subset the file belongs to (e.g. "harmless-base")."""
    if max_prompt_chars is not None and (not isinstance(max_prompt_chars, int) or max_prompt_chars < _MIN_PROMPT_CHARS):
        raise ConfigError(f"hh-rlhf: max_prompt_chars must be an integer >= {_MIN_PROMPT_CHARS}, got {max_prompt_chars!r}")
    for where, row in iter_source_rows(path):
        ctx.row()
        index = ctx.rows - 1
        if "chosen" not in row or "rejected" not in row:
            raise DataError(f"{where}: not in the HH-RLHF layout (expected 'chosen' and 'rejected')")
        if not (isinstance(row["chosen"], str) and isinstance(row["rejected"], str)):
            ctx.skip("text is not a string")
            continue
        try:
            prompt, chosen, rejected = split_hh_dialogue(row["chosen"], row["rejected"])
        except ValueError as exc:
            ctx.skip(str(exc))
            continue
        if max_prompt_chars is not None:
            prompt = truncate_dialogue(prompt, max_prompt_chars)
        yield PreferencePair(
            id=ctx.pair_id(index),
            prompt=prompt,
            chosen=chosen,
            rejected=rejected,
            source=ctx.name,
            category=_subset_of(where),
        )
