"""What the truncation rule did, as every command reports it (torch-free).

Each `Scorer` counts the sequences it scored and how many had their prompt text cut or lost
their response's end (`Scorer.truncated`). A combined source (ensemble, router) holds several
scorers; each is reported under its own name, since each scores with its own tokenizer and limits.
"""

from __future__ import annotations

from typing import Any, Iterator


def count_batch(counts: dict[str, int], batch: dict[str, Any], n: int) -> None:
    """Add a scored batch of `n` sequences to `counts` ({"sequences", "prompt", "response"}), from
    the collator's `truncated_prompt` / `truncated_response` flags."""
    counts["sequences"] += n
    for key in ("prompt", "response"):
        flags = batch.get(f"truncated_{key}")
        if flags is not None:
            counts[key] += int(flags.sum())


def scorers_of(source: Any) -> Iterator[Any]:
    """Every object with truncation counts inside `source` (itself, ensemble members, routes)."""
    if hasattr(source, "truncated"):
        yield source
        return
    for child in getattr(source, "members", None) or ():
        yield from scorers_of(child)
    for attr in ("text_scorer", "multimodal_scorer"):
        child = getattr(source, attr, None)
        if child is not None:
            yield from scorers_of(child)


def truncation_summary(source: Any) -> list[dict[str, Any]]:
    """[{"name", "sequences", "prompt", "response"}] per scorer (JSON-ready)."""
    return [{"name": getattr(s, "name", "") or "model", **s.truncated} for s in scorers_of(source)]


def truncation_lines(source: Any) -> list[str]:
    """One line per scorer, e.g. `truncated (model): 3 of 200 prompts cut, 1 of 200 responses lost their end`."""
    lines = []
    for row in truncation_summary(source):
        n = row["sequences"]
        lines.append(f"truncated ({row['name']}): {row['prompt']} of {n} prompts cut "
                     f"(model.backbone.max_prompt_length), {row['response']} of {n} responses lost their end "
                     "(model.backbone.max_length)")
    return lines
