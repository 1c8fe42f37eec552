"""Run one benchmark end to end: load, score with any reward source, compute metrics, write.

Outputs (written atomically): the metrics JSON at `output` and, beside it, `M.scores.jsonl` for
`M.json` (`io.scores_path_for`) with one line per item: `id`, `scores` (one per response),
`chosen_reward` / `rejected_reward` for pair-like items, and the item's JSON-serialisable meta
fields.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import DataError
from ..io import finite, scores_path_for, write_json, write_jsonl
from ..scoring.interface import RewardSource, writable_rewards
from ..scoring.shard import Processes, score_sharded
from ..scoring.truncation import truncation_summary
from .benchmarks import BenchItem, canonical_name, get_benchmark

_RESERVED = ("id", "scores", "chosen_reward", "rejected_reward")


def run_benchmark(scorer: RewardSource, bench: str, data: str, output: str, limit: int = 0,
                  allow_nonfinite: bool = False, image_root: str | None = None,
                  processes: Processes | None = None) -> dict[str, Any]:
    """Score benchmark `bench` read from `data` with any reward source, write the metrics to
    `output` (and the per-item scores beside it), return them.

    `limit` > 0 keeps only the first `limit` items (a quick smoke run; the metrics then describe
    that prefix, not the benchmark).

    A NaN / infinite reward stops the run before anything is written (the error names the item);
    with `allow_nonfinite` it counts as a wrong comparison, is written as null and counted in
    `nonfinite_rewards`. `image_root`: image files named by the benchmark must lie in it.
    `processes`: several (under a launcher) each score a shard of the items; every process gets
    the metrics, only the first writes the files.
    """
    processes = processes or Processes()
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    name = canonical_name(bench)
    module = get_benchmark(name)
    items: list[BenchItem] = module.load(data, image_root=image_root)
    if limit:
        items = items[:limit]
    if not items:
        raise DataError(f"{data}: no {name} items to score")
    # One call: the scorer owns batching, image sharing within a group and progress reporting.
    scores = score_sharded(scorer, [item.group for item in items], processes)
    rows, n_bad = writable_rewards([item.id for item in items], scores, allow_nonfinite)
    result: dict[str, Any] = {"benchmark": name, "num_items": len(items), "definition": module.DEFINITION}
    result.update(module.metrics(items, scores))
    result["truncation"] = truncation_summary(scorer)
    if n_bad:
        result["nonfinite_rewards"] = n_bad

    if not processes.is_main:
        return result
    write_json(output, finite(result) if n_bad else result)  # a NaN mean is only expected after NaN rewards
    write_jsonl(scores_path_for(output), (_score_line(item, row) for item, row in zip(items, rows)))
    return result


def _score_line(item: BenchItem, row: list[float | None]) -> dict[str, Any]:
    line: dict[str, Any] = {"id": item.id, "scores": row}
    preferred = item.meta.get("preferred")
    if len(row) == 2 and preferred in (0, 1):
        line["chosen_reward"] = row[preferred]
        line["rejected_reward"] = row[1 - preferred]
    for key, value in item.meta.items():
        if key in _RESERVED:
            continue
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            continue  # e.g. PIL objects: the scores file stays plain JSON
        line[key] = value
    return line


def format_table(metrics: dict[str, Any]) -> str:
    """A compact plain-text table of the metric numbers.

    Fractions print as percentages with one decimal, integers (counts) as they are, `mean_*`
    rewards with four decimals, missing values as `-`. Nested dicts become sub-tables; the
    definition is left out (it is in the JSON).
    """
    title = str(metrics.get("benchmark", "metrics"))
    if "num_items" in metrics:
        title += f" ({metrics['num_items']} items)"
    lines = [title]
    top = [(k, v) for k, v in metrics.items() if k != "num_items" and _is_value(v)]
    lines += _rows([(k, _fmt(k, v)) for k, v in top])
    for key, value in metrics.items():
        if not isinstance(value, dict) or not value:
            continue
        lines.append("")
        lines.append(f"{key}:")
        if all(isinstance(v, dict) for v in value.values()):
            cols: list[str] = []
            for inner in value.values():
                cols += [c for c, v in inner.items() if c not in cols and _is_value(v)]
            table = [["", *cols]] + [[str(r), *(_fmt(c, inner.get(c)) for c in cols)] for r, inner in value.items()]
            lines += _grid(table)
        else:
            lines += _rows([(str(k), _fmt(str(k), v)) for k, v in value.items() if _is_value(v)])
    for key in ("domains_present", "sections_missing"):
        if isinstance(metrics.get(key), list):
            lines.append(f"{key}: {', '.join(map(str, metrics[key]))}")
    if metrics.get("note"):
        lines.append(f"note: {metrics['note']}")
    return "\n".join(lines)


def _is_value(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _fmt(key: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, int):
        return str(v)
    if key.startswith("mean_"):
        return f"{v:.4f}"
    return f"{100 * v:.1f}"


def _rows(pairs: list[tuple[str, str]]) -> list[str]:
    if not pairs:
        return []
    width = max(len(k) for k, _ in pairs)
    return [f"  {k:<{width}}  {v:>6}" for k, v in pairs]


def _grid(table: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    out = []
    for row in table:
        cells = [row[0].ljust(widths[0])] + [c.rjust(max(w, 6)) for c, w in zip(row[1:], widths[1:])]
        out.append("  " + "  ".join(cells))
    return out
