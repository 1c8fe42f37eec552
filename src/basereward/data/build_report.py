"""`data build`'s stats.json and summary.md: counts per source, MM/text, length statistics."""

from __future__ import annotations

from typing import Any

import numpy as np


def length_stats(sides: np.ndarray, chosen_len: np.ndarray, rejected_len: np.ndarray) -> dict[str, Any]:
    """Share of pairs whose chosen response is longer / shorter / as long (characters), and the
    mean lengths; None when there are no pairs."""
    n = len(sides)
    if n == 0:
        return {"n": 0, "chosen_longer": None, "chosen_shorter": None, "tied": None,
                "mean_chosen_len": None, "mean_rejected_len": None}
    return {
        "n": n,
        "chosen_longer": round(float((sides > 0).mean()), 4),
        "chosen_shorter": round(float((sides < 0).mean()), 4),
        "tied": round(float((sides == 0).mean()), 4),
        "mean_chosen_len": round(float(chosen_len.mean()), 1),
        "mean_rejected_len": round(float(rejected_len.mean()), 1),
    }


def source_stats(base: dict[str, Any], facts: Any, train: np.ndarray, val: np.ndarray) -> dict[str, Any]:
    """One source's entry: the adapter's counts (`rows`, `skipped`, `made`), what each curation
    step dropped, what was written (`pairs` = train + validation) and length statistics before
    curation and in the written pairs."""
    kept = train | val
    return {
        **base,
        "pairs": int(kept.sum()),
        "train": int(train.sum()),
        "validation": int(val.sum()),
        "multimodal": int((kept & facts.mm).sum()),
        "text": int((kept & ~facts.mm).sum()),
        "length_before": length_stats(facts.sides, facts.chosen_len, facts.rejected_len),
        "length": length_stats(facts.sides[kept], facts.chosen_len[kept], facts.rejected_len[kept]),
    }


def total_stats(per_source: dict[str, dict[str, Any]], recipe: Any) -> dict[str, Any]:
    s = list(per_source.values())
    mm, text = sum(x["multimodal"] for x in s), sum(x["text"] for x in s)
    return {
        "pairs": sum(x["pairs"] for x in s),
        "train": sum(x["train"] for x in s),
        "validation": sum(x["validation"] for x in s),
        "multimodal": mm,
        "text": text,
        "text_per_multimodal": round(text / mm, 4) if mm else None,
        "seed": recipe.seed,
        "settings": {"dedup": recipe.dedup, "length_target": recipe.length_target,
                     "length_tolerance": recipe.length_tolerance, "text_ratio": recipe.text_ratio,
                     "total": recipe.total, "validation": recipe.validation, "order_balance": recipe.order_balance},
        "sources": per_source,
    }


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def summary_markdown(stats: dict[str, Any]) -> str:
    lines = [
        "# Data build summary", "",
        f"{stats['pairs']} pairs ({stats['train']} train, {stats['validation']} validation): "
        f"{stats['multimodal']} multimodal, {stats['text']} text-only"
        + (f" (text per multimodal pair: {stats['text_per_multimodal']})" if stats["text_per_multimodal"] is not None else "")
        + f"; seed {stats['seed']}.", "",
        "| source | rows | made | dup | length | size | ratio | pairs | MM | text | chosen longer (before → after) | mean chosen / rejected chars |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in stats["sources"].items():
        d = s["dropped"]
        after = s["length"]
        means = ("–" if after["n"] == 0 else f"{after['mean_chosen_len']:.0f} / {after['mean_rejected_len']:.0f}")
        lines.append(
            f"| {name} | {s['rows']} | {s['made']} | {d.get('duplicate', 0)} | {d.get('length', 0)} | {d.get('size', 0)} | "
            f"{d.get('text_ratio', 0)} | {s['pairs']} | {s['multimodal']} | {s['text']} | "
            f"{_pct(s['length_before']['chosen_longer'])} → {_pct(after['chosen_longer'])} | {means} |")
    short = [(n, s) for n, s in stats["sources"].items() if s.get("requested", 0) > s["pairs"] + s["dropped"].get("text_ratio", 0)]
    if short:
        lines += ["", "Sources with fewer pairs than requested: "
                  + ", ".join(f"{n} ({s['pairs']} of {s['requested']})" for n, s in short) + "."]
    skipped = [(n, s["skipped"]) for n, s in stats["sources"].items() if s["skipped"]]
    if skipped:
        lines += ["", "## Skipped rows", "", "| source | reason | rows |", "|---|---|---:|"]
        lines += [f"| {n} | {reason} | {k} |" for n, sk in skipped for reason, k in sk.items()]
    return "\n".join(lines) + "\n"
