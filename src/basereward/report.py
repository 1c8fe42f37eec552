"""`basereward report`: a Markdown report with PNG plots from `basereward eval` outputs.

Inputs per benchmark: `M.json` (a dict with `"benchmark"` and numeric metrics, possibly nested)
and, beside it, `M.scores.jsonl` (one line per item). A line is a *pair* when it carries numeric
`chosen_reward` and `rejected_reward`, or exactly two `scores` — `scores[preferred]` is the chosen
reward, `preferred` defaulting to 0 (a pair group lists the chosen response first). Other lines
(e.g. RM-Bench's six-response groups) are counted as skipped for the pair analyses.

What the report holds, per metrics file:

* headline metrics (top-level numbers) and per-category accuracy bars: every nested dict of
  accuracies becomes a bar chart; a dict of dicts (RM-Bench `domains -> easy/normal/hard`)
  becomes grouped bars. Accuracies are floats in [0, 1]; integers are counts and are not plotted.
* chosen vs rejected reward histograms with the paper's Table 13 statistics
  (`metrics.reward_stats`);
* a length-bias audit (`metrics.length_bias`): length = number of whitespace-separated words (or
  characters with `length_unit="chars"`), taken from `chosen` / `rejected` texts in the scores
  line or, joined on `id`, from pair JSONL files;
* calibration of sigmoid(r_first - r_second) with a seeded random pair order
  (`metrics.calibration`) and its reliability diagram.

The definitions of every number are in `basereward.metrics`; `report.json` beside `report.md`
holds every number shown, at full precision.
"""

from __future__ import annotations

import os
import re
from typing import Any, Sequence

import numpy as np

from .errors import DataError
from .io import iter_jsonl, read_json, scores_path_for, write_json, write_text
from .metrics import calibration, length_bias, reward_stats

FIGURES = "figures"


# --------------------------------------------------------------------------------------------
# Reading inputs
# --------------------------------------------------------------------------------------------


def read_metrics(path: str) -> dict[str, Any]:
    """A metrics file: one JSON object (DataError `file: reason` otherwise)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object of metrics")
    return data


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def pair_from_line(row: dict[str, Any]) -> tuple[float, float] | None:
    """(chosen reward, rejected reward) of a scores line, or None if it is not a pair."""
    if _is_number(row.get("chosen_reward")) and _is_number(row.get("rejected_reward")):
        return float(row["chosen_reward"]), float(row["rejected_reward"])
    scores = row.get("scores")
    if isinstance(scores, list) and len(scores) == 2 and all(_is_number(s) for s in scores):
        preferred = row.get("preferred", 0)
        if preferred in (0, 1):
            return float(scores[preferred]), float(scores[1 - preferred])
    return None


def load_pair_texts(pairs_paths: Sequence[str]) -> dict[str, tuple[str, str]]:
    """id -> (chosen, rejected) over all pair files; an id whose texts differ between files is
    ambiguous and left out (so no length is joined from the wrong pair)."""
    from .data.pairs import load_pairs

    texts: dict[str, tuple[str, str]] = {}
    ambiguous: set[str] = set()
    for path in pairs_paths:
        # Only the texts are needed: images may live on another machine.
        for p in load_pairs(path, on_error="fail", check_images=False):
            if p.id in texts and texts[p.id] != (p.chosen, p.rejected):
                ambiguous.add(p.id)
            texts.setdefault(p.id, (p.chosen, p.rejected))
    for i in ambiguous:
        del texts[i]
    return texts


def response_length(text: str, unit: str = "words") -> int:
    """Length of a response in whitespace-separated words or in characters."""
    if unit == "words":
        return len(text.split())
    if unit == "chars":
        return len(text)
    raise ValueError(f"length unit must be 'words' or 'chars', got {unit!r}")


def collect_pairs(
    rows: Sequence[dict[str, Any]], texts: dict[str, tuple[str, str]], unit: str
) -> dict[str, Any]:
    """Pair rewards (N,) and lengths (NaN where unknown) from scores lines, plus skip counts."""
    chosen, rejected, len_c, len_r = [], [], [], []
    skipped = 0
    for row in rows:
        pair = pair_from_line(row)
        if pair is None:
            skipped += 1
            continue
        chosen.append(pair[0])
        rejected.append(pair[1])
        if isinstance(row.get("chosen"), str) and isinstance(row.get("rejected"), str):
            text = (row["chosen"], row["rejected"])
        else:
            text = texts.get(str(row.get("id")))
        len_c.append(response_length(text[0], unit) if text else np.nan)
        len_r.append(response_length(text[1], unit) if text else np.nan)
    return {
        "chosen": np.asarray(chosen, dtype=np.float64),
        "rejected": np.asarray(rejected, dtype=np.float64),
        "len_chosen": np.asarray(len_c, dtype=np.float64),
        "len_rejected": np.asarray(len_r, dtype=np.float64),
        "skipped_items": skipped,
    }


def headline_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The top-level numbers of a metrics dict (nested dicts are shown as bars)."""
    return {k: v for k, v in metrics.items() if _is_number(v)}


def _accuracies(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, float) and 0.0 <= v <= 1.0}


def category_bar_sets(metrics: dict[str, Any], path: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every nested dict of accuracies as `{"title", "groups", "series": {name: [value|None]}}`."""
    found = []
    for key, value in metrics.items():
        if not isinstance(value, dict):
            continue
        title = ".".join(path + (key,))
        inner = {k: v for k, v in value.items() if isinstance(v, dict)}
        flat = _accuracies(value)
        inner_acc = {k: _accuracies(v) for k, v in inner.items()}
        if inner and not flat and all(inner_acc.values()):
            # A table (category -> {difficulty: accuracy}): one group per category, one bar per column.
            names: list[str] = []
            for acc in inner_acc.values():
                names += [n for n in acc if n not in names]
            series = {n: [inner_acc[g].get(n) for g in inner] for n in names}
            found.append({"title": title, "groups": list(inner), "series": series})
            continue
        if flat:
            found.append({"title": title, "groups": list(flat), "series": {"accuracy": list(flat.values())}})
        found += category_bar_sets(inner, path + (key,))
    return found


# --------------------------------------------------------------------------------------------
# Plots: each writes one PNG with a fresh Figure (no pyplot state, Agg canvas)
# --------------------------------------------------------------------------------------------


def _figure(width: float = 7.0, height: float = 4.5):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return fig, fig.add_subplot()


def plot_category_bars(bar_set: dict[str, Any], path: str) -> str:
    groups, series = bar_set["groups"], bar_set["series"]
    fig, ax = _figure(max(6.0, 0.6 * len(groups) * max(1, len(series)) + 2), 4.5)
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        heights = [np.nan if v is None else v for v in values]
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=name)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(x, groups, rotation=30 if max(len(g) for g in groups) > 8 else 0, ha="right")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("accuracy")
    ax.set_title(bar_set["title"])
    if len(series) > 1:
        ax.legend(fontsize=8, ncols=len(series))
    fig.savefig(path)
    return path


def plot_reward_histograms(chosen: np.ndarray, rejected: np.ndarray, path: str) -> str:
    fig, ax = _figure()
    edges = np.histogram_bin_edges(np.concatenate([chosen, rejected]), bins=30)
    ax.hist(chosen, bins=edges, alpha=0.6, label=f"chosen (mean {chosen.mean():.3f})", color="tab:blue")
    ax.hist(rejected, bins=edges, alpha=0.6, label=f"rejected (mean {rejected.mean():.3f})", color="tab:orange")
    ax.set_xlabel("reward")
    ax.set_ylabel("responses")
    ax.set_title("Chosen vs rejected rewards")
    ax.legend()
    fig.savefig(path)
    return path


def plot_length_scatter(pairs: dict[str, Any], bias: dict[str, Any], path: str) -> str:
    fig, ax = _figure()
    for key, lkey, label, color in (
        ("chosen", "len_chosen", "chosen", "tab:blue"),
        ("rejected", "len_rejected", "rejected", "tab:orange"),
    ):
        ax.scatter(pairs[lkey], pairs[key], s=10, alpha=0.6, label=label, color=color)
    r = bias["pearson_reward_length"]
    ax.set_title(f"Reward vs length (Pearson r = {_fmt(r)})")
    ax.set_xlabel(f"response length ({bias['unit']})")
    ax.set_ylabel("reward")
    ax.legend()
    fig.savefig(path)
    return path


def plot_reliability(calib: dict[str, Any], path: str) -> str:
    fig, ax = _figure(5.5, 5.0)
    full = [b for b in calib["bins"] if b["n"]]
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.bar([(b["lo"] + b["hi"]) / 2 for b in full], [b["accuracy"] for b in full], width=1 / len(calib["bins"]),
           edgecolor="black", alpha=0.7, label="empirical accuracy")
    ax.plot([b["confidence"] for b in full], [b["accuracy"] for b in full], "o", color="black", label="(bin mean p, accuracy)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted P(first listed is chosen) = sigmoid(r1 - r2)")
    ax.set_ylabel("fraction where first listed is chosen")
    ax.set_title(f"Reliability diagram (ECE = {_fmt(calib['ece'])})")
    ax.legend(fontsize=8, loc="upper left")
    fig.savefig(path)
    return path


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool) or not _is_number(x):
        return str(x)
    return str(x) if isinstance(x, int) else f"{x:.4f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif _is_number(v):
            out[prefix + k] = v
    return out


def metrics_table(metrics: dict[str, Any]) -> str:
    """A `Metric | Value` Markdown table of every number in `metrics` (nested keys dotted)."""
    return _table(["Metric", "Value"], list(_flatten(metrics).items()))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _section(key: str, path: str, texts: dict, out_dir: str, unit: str, seed: int) -> tuple[list[str], dict]:
    """Markdown lines and JSON record for one metrics file; writes its figures."""
    metrics = read_metrics(path)
    fig_dir = os.path.join(out_dir, FIGURES)
    record: dict[str, Any] = {"metrics_path": path, "headline": headline_metrics(metrics), "figures": {}}
    md = [f"## {key}", "", f"Metrics: `{path}`", ""]
    notes = [f"> {k}: {v}" for k, v in metrics.items() if isinstance(v, str) and k != "benchmark"]
    md += [*notes, ""] if notes else []
    md += ["### Headline metrics", "", metrics_table(record["headline"]), ""]

    def figure(name: str, plot, *args) -> str:
        rel = f"{FIGURES}/{_slug(key)}-{name}.png"
        plot(*args, os.path.join(fig_dir, os.path.basename(rel)))
        record["figures"][name] = rel
        md.extend([f"![{key} {name}]({rel})", ""])
        return rel

    record["category_bars"] = category_bar_sets(metrics)
    if record["category_bars"]:
        md += ["### Per-category accuracy", ""]
        for bars in record["category_bars"]:
            md += [f"**{bars['title']}**", ""]
            md += [_table(["Category", *bars["series"]], [[g, *(s[i] for s in bars["series"].values())]
                                                         for i, g in enumerate(bars["groups"])]), ""]
            figure(f"bars-{_slug(bars['title'])}", plot_category_bars, bars)

    scores_path = scores_path_for(path)
    if not os.path.isfile(scores_path):
        md += [f"No per-item scores (`{scores_path}` not found): no reward, length or calibration analysis.", ""]
        return md, record
    pairs = collect_pairs([row for _, row in iter_jsonl(scores_path)], texts, unit)
    record["scores_path"] = scores_path
    record["skipped_items"] = pairs["skipped_items"]
    if pairs["chosen"].size == 0:
        md += [f"`{scores_path}` holds no pair items ({pairs['skipped_items']} items are not pairs).", ""]
        return md, record
    if pairs["skipped_items"]:
        md += [f"{pairs['skipped_items']} items in `{scores_path}` are not pairs and are left out below.", ""]

    stats = record["reward_stats"] = reward_stats(pairs["chosen"], pairs["rejected"])
    md += ["### Chosen vs rejected rewards", "", _table(
        ["Pairs", "Mean chosen", "Std chosen", "Mean rejected", "Std rejected", "Gap", "Accuracy"],
        [[stats["n_pairs"], stats["mean_chosen"], stats["std_chosen"], stats["mean_rejected"],
          stats["std_rejected"], stats["gap"], stats["accuracy"]]]), ""]
    figure("rewards", plot_reward_histograms, pairs["chosen"], pairs["rejected"])

    bias = record["length_bias"] = length_bias(
        pairs["chosen"], pairs["rejected"], pairs["len_chosen"], pairs["len_rejected"], unit)
    md += ["### Length bias", ""]
    if bias["n_pairs"] == 0:
        md += ["No response texts for these pairs (pass the pair files to join on id): no length audit.", ""]
    else:
        md += [_table(
            ["Pairs with lengths", f"Pearson r(reward, length in {unit})", "Mean chosen length",
             "Mean rejected length", "Acc. chosen shorter (n)", "Acc. chosen longer (n)", "Equal length"],
            [[bias["n_pairs"], bias["pearson_reward_length"], bias["mean_length_chosen"],
              bias["mean_length_rejected"],
              f"{_fmt(bias['chosen_shorter']['accuracy'])} ({bias['chosen_shorter']['n']})",
              f"{_fmt(bias['chosen_longer']['accuracy'])} ({bias['chosen_longer']['n']})",
              bias["equal_length"]]]), ""]
        figure("length", plot_length_scatter, pairs, bias)

    calib = record["calibration"] = calibration(pairs["chosen"], pairs["rejected"], seed)
    md += ["### Calibration of sigmoid(r1 - r2)", "",
           f"Pair order randomised with seed {seed}; ECE = {_fmt(calib['ece'])} over {calib['n']} pairs.", "",
           _table(["Bin", "Pairs", "Mean p", "Accuracy"],
                  [[f"[{b['lo']:.1f}, {b['hi']:.1f}{']' if b['hi'] >= 1 else ')'}", b["n"], b["confidence"], b["accuracy"]]
                   for b in calib["bins"]]), ""]
    figure("calibration", plot_reliability, calib)
    return md, record


def build_report(
    metrics_paths: Sequence[str],
    out_dir: str,
    pairs_paths: Sequence[str] | None = None,
    title: str = "Reward model report",
    length_unit: str = "words",
    seed: int = 0,
) -> str:
    """Write `out_dir/report.md`, `out_dir/report.json` and `out_dir/figures/*.png`; return the
    path of report.md. `pairs_paths` supply response texts (joined on id) for the length audit."""
    if not metrics_paths:
        raise ValueError("build_report needs at least one metrics file")
    response_length("", length_unit)  # fail on a bad unit before any work
    os.makedirs(os.path.join(out_dir, FIGURES), exist_ok=True)
    texts = load_pair_texts(pairs_paths) if pairs_paths else {}

    sections: list[str] = []
    records: dict[str, Any] = {}
    for path in metrics_paths:
        name = str(read_metrics(path).get("benchmark") or os.path.basename(path))
        key = name if name not in records else f"{name} ({os.path.basename(path)})"
        md, records[key] = _section(key, path, texts, out_dir, length_unit, seed)
        sections += md

    columns: list[str] = []
    for rec in records.values():
        columns += [c for c in rec["headline"] if c not in columns]
    overview = _table(["Benchmark", *columns], [[k, *(r["headline"].get(c) for c in columns)]
                                                for k, r in records.items()])
    lines = [f"# {title}", "", "## Overview", "", overview, "", *sections]
    report_md = os.path.join(out_dir, "report.md")
    summary = {"title": title, "length_unit": length_unit, "seed": seed,
               "pairs_paths": list(pairs_paths or []), "benchmarks": records}
    # report.json first: a NaN in it fails before report.md claims the report was written.
    write_json(os.path.join(out_dir, "report.json"), summary)
    write_text(report_md, "\n".join(lines).rstrip() + "\n")
    return report_md
