"""Rankings files: several scored responses per prompt, turned into preference pairs.

One prompt per line:
`{"id": str, "prompt": str, "images": [path, ...], "responses": [{"text": str, "score": number}, ...],
"source": str, "category": str}`. `id`, `prompt`, `images` and `responses` are required (`images`
is `[]` for text-only prompts); `source` and `category` default to "" and are copied to every
pair. Image paths are relative to the file's directory (absolute paths are kept). Scores are
finite numbers, higher is better (e.g. UltraFeedback's ratings); unknown keys are ignored.

`rankings_to_pairs` gives every pair of differently scored responses, the higher one as chosen
(ties say nothing and are dropped), with ids `{id}-{i}-{j}` (i < j response positions); with
`ultra_hard=True` only the widest-gap pair of each prompt (`curation.ultra_hard`). A prompt with
fewer than two responses, or only tied ones, gives no pair. Every problem is reported as
`file:line: reason`; `basereward data rank-pairs` runs the whole conversion.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from basereward.data import curation
from basereward.data.curation import Ranking
from basereward.data.pairs import save_pairs
from basereward.data.rows import collect_rows, log_stderr
from basereward.data.schema import PreferencePair
from basereward.errors import DataError
from basereward.io import parse_record


def _string(row: dict[str, Any], key: str) -> str:
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"field '{key}' must be a non-empty string")
    return value


def _responses(value: Any) -> tuple[tuple[str, ...], tuple[float, ...]]:
    if not isinstance(value, list):
        raise ValueError("field 'responses' must be a list of {\"text\", \"score\"} objects")
    texts, scores = [], []
    for k, item in enumerate(value):
        if not isinstance(item, dict) or "text" not in item or "score" not in item:
            raise ValueError(f"responses[{k}] must be an object with 'text' and 'score'")
        text, score = item["text"], item["score"]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"responses[{k}].text must be a non-empty string")
        # bool is an int in Python; NaN/inf arrive as floats from json's NaN/Infinity tokens.
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ValueError(f"responses[{k}].score must be a finite number, got {score!r}")
        texts.append(text)
        scores.append(float(score))
    return tuple(texts), tuple(scores)


def _parse_row(raw: bytes, base_dir: str, seen_ids: dict[str, int], lineno: int) -> Ranking:
    """One line -> Ranking; raises ValueError(reason)."""
    row = parse_record(raw)
    for key in ("id", "prompt", "images", "responses"):
        if key not in row:
            raise ValueError(f"missing field '{key}'")
    rank_id, prompt = _string(row, "id"), _string(row, "prompt")
    # Registered before the other checks: two rows claiming one id is a problem either way.
    if rank_id in seen_ids:
        raise ValueError(f"duplicate id '{rank_id}' (first on line {seen_ids[rank_id]})")
    seen_ids[rank_id] = lineno
    for key in ("source", "category"):
        if key in row and not isinstance(row[key], str):
            raise ValueError(f"field '{key}' must be a string, got {type(row[key]).__name__}")
    images = row["images"]
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise ValueError("field 'images' must be a list of non-empty path strings")
    resolved = []
    for rel in images:
        path = os.path.normpath(os.path.join(base_dir, rel))
        if not os.path.isfile(path):
            raise ValueError(f"image not found: {rel}")
        resolved.append(path)
    texts, scores = _responses(row["responses"])
    return Ranking(rank_id, prompt, texts, scores, tuple(resolved), row.get("source", ""), row.get("category", ""))


def load_rankings(
    path: str | os.PathLike[str], on_error: str = "fail", log: Callable[[str], None] = log_stderr
) -> list[Ranking]:
    """Read a rankings JSONL file (optionally .gz), validating every row (see `data/rows.py`).

    Image files must exist; they are decoded later, by whatever reads the pairs.
    """
    base_dir = str(Path(os.fspath(path)).resolve().parent)
    seen_ids: dict[str, int] = {}
    return collect_rows(
        path, lambda lineno, raw: _parse_row(raw, base_dir, seen_ids, lineno), on_error, log, what="rankings"
    )


def rankings_to_pairs(rankings: Iterable[Ranking], ultra_hard: bool = False) -> list[PreferencePair]:
    """All differently scored pairs of each prompt, or only its widest-gap pair (`ultra_hard`)."""
    if not ultra_hard:
        return [pair for r in rankings for pair in curation.ranking_to_pairs(r)]
    return [pair for pair in map(curation.ultra_hard, rankings) if pair is not None]


def write_ranking_pairs(
    rankings_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    ultra_hard: bool = False,
    on_error: str = "fail",
    log: Callable[[str], None] = log_stderr,
) -> tuple[int, int]:
    """Read a rankings file, write its pairs as a pair JSONL file; returns (#pairs, #prompts).

    DataError when no prompt gives a pair: an empty pair file would not load.
    """
    rankings = load_rankings(rankings_path, on_error=on_error, log=log)
    pairs = rankings_to_pairs(rankings, ultra_hard=ultra_hard)
    if not pairs:
        raise DataError(
            f"{os.fspath(rankings_path)}: no pairs: every prompt has fewer than two responses "
            "or only equal scores"
        )
    save_pairs(pairs, out_path)
    return len(pairs), len(rankings)
