"""RM-Bench (Liu et al., 2024; github.com/THU-KEG/RM-Bench).

Layout: `<domain>_filtered.json` files, each a JSON list of
`{id, subset, prompt, chosen: [3 styles], rejected: [3 styles], ...}`; the styles are
(concise, detailed plain, detailed markdown). The domain is the file name before
`_filtered.json` (or a record's `domain` field, as in `total_dataset.json`); `safety-refuse`
and `safety-response` pool into the domain `safety`. `load` takes one file or a directory of
`*_filtered.json`. Each item is one group of 6 responses: chosen[0..2] then rejected[0..2].

Metric (as the reference `scripts/utils.py::compute_accuracy`): per domain,
M[i][j] = fraction of prompts with r(chosen[i]) > r(rejected[j]) strictly (ties are wrong).
hard = mean of the strict upper triangle (i < j: a plainer chosen against a fancier rejected),
normal = mean of the diagonal, easy = mean of the strict lower triangle (i > j); the domain
score is mean(easy, normal, hard). Overall `easy`, `normal`, `hard` are the means over the
domains present and `total` the mean of the domain scores (domains count equally, whatever
their size). The reference averages over chat, math, code and safety; when a domain is absent
(the math file is missing from this project's copy) we average over the domains present and
say so in `note`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...data.schema import Group
from ...errors import DataError
from ...metrics import pair_accuracy
from ...io import iter_records
from . import BenchItem, check_scores, expand, field_of, record_id, text_list

NAME = "rm_bench"
DEFINITION = (
    "Per domain, M[i][j] = fraction of prompts with r(chosen style i) > r(rejected style j) strictly; "
    "hard/normal/easy = mean of M's upper triangle/diagonal/lower triangle, domain score = their "
    "mean; overall easy/normal/hard and total = means over the domains present."
)
DOMAINS = ("chat", "math", "code", "safety")
STYLES = 3
_SUFFIX = "_filtered.json"


def pooled_domain(name: str) -> str:
    """The scoring domain of a file domain (`safety-refuse` -> `safety`)."""
    return "safety" if name.startswith("safety") else name


def load(path: str, image_root: str | None = None) -> list[BenchItem]:
    """Items from one RM-Bench file or a directory of `*_filtered.json` files.

    Text-only: no record names an image file, so `image_root` has nothing to confine.
    """
    items = []
    for file in expand(path, ["*" + _SUFFIX]):
        file_domain = file.name[: -len(_SUFFIX)] if file.name.endswith(_SUFFIX) else None
        for where, rec in iter_records(file):
            items.append(_item(rec, where, file, file_domain))
    return items


def _item(rec: dict[str, Any], where: str, file: Path, file_domain: str | None) -> BenchItem:
    raw_id = record_id(rec, where)
    where = f"{where} (id {raw_id})"
    source = rec.get("domain") or file_domain
    if not isinstance(source, str) or not source:
        raise DataError(f"{where}: no domain (name the file <domain>{_SUFFIX} or add a 'domain' field)")
    domain = pooled_domain(source)
    if domain not in DOMAINS:
        raise DataError(f"{where}: unknown domain {source!r}; expected one of {', '.join(DOMAINS)}")
    chosen = text_list(rec, "chosen", where, STYLES)
    rejected = text_list(rec, "rejected", where, STYLES)
    group = Group(prompt=field_of(rec, "prompt", where), responses=tuple(chosen + rejected))
    meta = {"domain": domain, "source_domain": source, "subset": rec.get("subset") or ""}
    # Ids restart in every file, so the item id carries the file's domain.
    return BenchItem(id=f"{source}/{raw_id}", group=group, meta=meta)


def style_matrix(rows: Sequence[Sequence[float]]) -> list[list[float]]:
    """M[i][j] = fraction of rows with chosen[i] > rejected[j] (rows hold 3 chosen, 3 rejected)."""
    return [[pair_accuracy([row[i] for row in rows], [row[STYLES + j] for row in rows])
             for j in range(STYLES)] for i in range(STYLES)]


def difficulty(m: Sequence[Sequence[float]]) -> dict[str, float]:
    """easy / normal / hard accuracies and their mean from a style matrix."""
    n = len(m)
    upper = [m[i][j] for i in range(n) for j in range(n) if i < j]
    lower = [m[i][j] for i in range(n) for j in range(n) if i > j]
    out = {
        "easy": sum(lower) / len(lower),
        "normal": sum(m[i][i] for i in range(n)) / n,
        "hard": sum(upper) / len(upper),
    }
    out["score"] = (out["easy"] + out["normal"] + out["hard"]) / 3
    return out


def metrics(items: Sequence[BenchItem], scores: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Per-domain and overall easy/normal/hard accuracies; see the module docstring."""
    check_scores(items, scores)
    for item in items:
        if len(item.group.responses) != 2 * STYLES:
            raise ValueError(f"item {item.id}: RM-Bench items hold {2 * STYLES} responses")
    domains: dict[str, dict[str, float]] = {}
    for domain in DOMAINS:
        rows = [row for item, row in zip(items, scores) if item.meta["domain"] == domain]
        if rows:
            domains[domain] = difficulty(style_matrix(rows))
    if not domains:
        raise ValueError("RM-Bench metrics need at least one item")
    present = list(domains)
    result: dict[str, Any] = {"domains": domains}
    for key in ("easy", "normal", "hard"):
        result[key] = sum(d[key] for d in domains.values()) / len(domains)
    result["total"] = sum(d["score"] for d in domains.values()) / len(domains)
    result["domains_present"] = present
    missing = [d for d in DOMAINS if d not in domains]
    if missing:
        result["note"] = (
            f"{' and '.join(missing)} domain{'s' if len(missing) > 1 else ''} absent: easy, normal, "
            f"hard and total average the {len(present)} domains present ({', '.join(present)}), "
            "not the reference's four"
        )
    return result
