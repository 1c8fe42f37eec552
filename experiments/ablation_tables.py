"""The ablation grid, the paper's findings checked against it, and the Markdown report.

Pure Python over plain dicts (no torch): `experiments/ablations.py` trains and scores every cell
through the real trainer and Scorer and hands the numbers here.

A cell's result is {"cell": {...}, "n_train": int, "runs": [per-seed dicts], "summary": {...}}
where every summary metric is {"mean", "std"} over seeds and accuracies are fractions.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

HEAD_CELLS = ((1, "none"), (2, "tanh"), (2, "relu"), (2, "silu"), (2, "gelu"), (3, "silu"), (4, "silu"),
              (5, "silu"))
ZERO_COEFS = (0.0, 0.01, 0.1)
LONG_FRACTION = 0.9


@dataclass(frozen=True)
class Cell:
    """One ablation setting: the head, the loss and the training set it is trained on."""

    name: str
    num_layers: int = 2
    activation: str = "silu"
    zero_coef: float = 0.0
    length_norm: bool = False
    train_set: str = "mixed"
    """Key into the training sets: mixed (visual + HH), hh, hh-biased, hh-balanced."""

    def head_label(self) -> str:
        return "linear" if self.num_layers == 1 else f"{self.num_layers}-layer {self.activation}"

    def key(self) -> tuple:
        """Cells equal up to their name train the same model (they share one result)."""
        act = self.activation if self.num_layers > 1 else "none"
        return (self.num_layers, act, self.zero_coef, self.length_norm, self.train_set)


def head_name(layers: int, activation: str) -> str:
    return "L1-linear" if layers == 1 else f"L{layers}-{activation}"


def build_tables() -> dict[str, list[Cell]]:
    """The four tables; the 2-layer SiLU, lambda=0, no-norm mixed cell is the shared baseline."""
    heads = [Cell(head_name(n, a), num_layers=n, activation=a) for n, a in HEAD_CELLS]
    zero = [Cell(f"zero_coef={z:g}", zero_coef=z) for z in ZERO_COEFS]
    norm = [Cell("length_norm=off"), Cell("length_norm=on", length_norm=True)]
    bias = [Cell("hh as is", train_set="hh"), Cell("hh 90% long-biased", train_set="hh-biased"),
            Cell("hh biased + balance_length", train_set="hh-balanced")]
    return {"head": heads, "zero_coef": zero, "length_norm": norm, "length_bias": bias}


def run_tables(tables: dict[str, list[Cell]], run: Callable[[Cell], dict]) -> dict[str, list[dict]]:
    """`run` every distinct cell once and lay the results out table by table."""
    unique: dict[tuple, Cell] = {}
    for cells in tables.values():
        for c in cells:
            unique.setdefault(c.key(), c)
    done = {key: run(cell) for key, cell in unique.items()}
    return {t: [{**done[c.key()], "cell": dataclasses.asdict(c)} for c in cells] for t, cells in tables.items()}


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value)."""
    vals = [float(v) for v in values]
    m = sum(vals) / len(vals)
    std = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return {"mean": m, "std": std}


def summarise(runs: Sequence[dict], keys: Sequence[str]) -> dict[str, Any]:
    """{key: {metric: mean_std}} for nested per-run dicts, {key: mean_std} for scalars."""
    out: dict[str, Any] = {}
    for k in keys:
        if isinstance(runs[0][k], dict):
            out[k] = {m: mean_std([r[k][m] for r in runs]) for m in runs[0][k] if runs[0][k][m] is not None}
        else:
            out[k] = mean_std([r[k] for r in runs])
    return out


# ------------------------------------------------------------------------------------- findings
def _by_name(rows: list[dict]) -> dict[str, dict]:
    return {r["cell"]["name"]: r for r in rows}


def diff(a: dict, b: dict, n_seeds: int) -> dict:
    """a - b in accuracy points with a 2-standard-error band from the seed spread."""
    delta = 100 * (a["mean"] - b["mean"])
    se = 100 * math.sqrt((a["std"] ** 2 + b["std"] ** 2) / max(n_seeds, 1))
    return {"delta_points": round(delta, 2), "noise_2se_points": round(2 * se, 2),
            "within_noise": n_seeds > 1 and abs(delta) <= 2 * se}


def findings(tables: dict[str, list[dict]], n_seeds: int) -> list[dict]:
    """Whether each of the paper's directions reproduced, from the seed means (nothing tuned)."""
    out = []
    acc = {k: v["summary"]["mean_accuracy"] for k, v in _by_name(tables["head"]).items()}
    base = acc["L2-silu"]
    d = diff(base, acc["L1-linear"], n_seeds)
    out.append({"id": "silu2_vs_linear", "claim": "2-layer SiLU >= linear head", "reproduced": d["delta_points"] >= 0,
                **d})
    rank = 1 + sum(v["mean"] > base["mean"] for v in acc.values())
    best = "L2-silu" if rank == 1 else max(acc, key=lambda k: acc[k]["mean"])
    out.append({"id": "silu2_best", "claim": "2-layer SiLU is the best head of the grid (ties count as best)",
                "reproduced": rank == 1, "rank": rank, "of": len(acc), "best": best,
                "delta_points": round(100 * (base["mean"] - acc[best]["mean"]), 2)})
    two = [acc[k]["mean"] for k in acc if k.startswith("L2-")]
    deep = [acc[k]["mean"] for k in acc if k[:2] in ("L3", "L4", "L5")]
    dd = 100 * (sum(deep) / len(deep) - sum(two) / len(two))
    out.append({"id": "deeper_worse", "claim": "deeper SiLU heads (3-5 layers) are worse than 2-layer heads",
                "reproduced": dd < 0, "delta_points": round(dd, 2)})
    zs = _by_name(tables["zero_coef"])
    z0 = zs[f"zero_coef={ZERO_COEFS[0]:g}"]["summary"]["mean_accuracy"]
    per = {f"{z:g}": diff(zs[f"zero_coef={z:g}"]["summary"]["mean_accuracy"], z0, n_seeds) for z in ZERO_COEFS[1:]}
    out.append({"id": "zero_coef_hurts", "claim": "zero-coefficient lambda > 0 hurts (every lambda below lambda=0)",
                "reproduced": all(v["delta_points"] < 0 for v in per.values()), "per_lambda": per})
    ln = _by_name(tables["length_norm"])
    d = diff(ln["length_norm=on"]["summary"]["mean_accuracy"], ln["length_norm=off"]["summary"]["mean_accuracy"],
             n_seeds)
    out.append({"id": "length_norm_hurts", "claim": "length normalisation hurts", "reproduced": d["delta_points"] < 0,
                **d})
    lb = _by_name(tables["length_bias"])
    hh = {k: v["summary"]["hh_val"]["accuracy"] for k, v in lb.items()}
    hurt = diff(hh["hh 90% long-biased"], hh["hh as is"], n_seeds)
    recover = diff(hh["hh biased + balance_length"], hh["hh 90% long-biased"], n_seeds)
    out.append({"id": "length_bias", "claim": "biased training hurts and resampling recovers",
                "reproduced": hurt["delta_points"] < 0 and recover["delta_points"] > 0,
                "biased_minus_as_is": hurt, "balanced_minus_biased": recover})
    pl = {k: v["summary"]["hh_val"]["prefers_longer"]["mean"] for k, v in lb.items()}
    out.append({"id": "length_bias_signature", "claim": "biased training raises the preference for the longer response",
                "reproduced": pl["hh 90% long-biased"] > pl["hh as is"],
                "prefers_longer": {k: round(v, 4) for k, v in pl.items()}})
    return out


def _signed(x: float) -> str:
    return f"{x:+.1f}"


def finding_line(f: dict) -> str:
    yes = "yes" if f["reproduced"] else "no"

    def noise(d: dict) -> str:
        return " (within seed noise)" if d.get("within_noise") else ""

    if f["id"] == "silu2_best":
        return (f"{f['claim']}: {yes} (rank {f['rank']} of {f['of']}; best = {f['best']}, "
                f"Δ vs best = {_signed(f['delta_points'])} points)")
    if f["id"] == "zero_coef_hurts":
        parts = ", ".join(f"λ={k}: {_signed(v['delta_points'])}{noise(v)}" for k, v in f["per_lambda"].items())
        return f"{f['claim']}: {yes} (Δ vs λ=0: {parts} points)"
    if f["id"] == "length_bias":
        a, b = f["biased_minus_as_is"], f["balanced_minus_biased"]
        return (f"{f['claim']}: {yes} (biased − as is = {_signed(a['delta_points'])}{noise(a)}, "
                f"balanced − biased = {_signed(b['delta_points'])}{noise(b)} points, HH val)")
    if f["id"] == "length_bias_signature":
        pl = ", ".join(f"{k}: {100 * v:.1f}%" for k, v in f["prefers_longer"].items())
        return f"{f['claim']}: {yes} (HH val pairs where the longer response wins: {pl})"
    band = f" ± {f['noise_2se_points']:.1f} (2 s.e.)" if f.get("noise_2se_points") else ""
    return f"{f['claim']}: {yes} (Δ = {_signed(f['delta_points'])}{band} points{noise(f)})"


# ------------------------------------------------------------------------------------- Markdown
def _pct(s: dict | None) -> str:
    if not s or s.get("mean") is None or not math.isfinite(s["mean"]):
        return "n/a"
    return f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"


def _num(s: dict | None) -> str:
    if not s or s.get("mean") is None or not math.isfinite(s["mean"]):
        return "n/a"
    return f"{s['mean']:.3f} ± {s['std']:.3f}"


def _mixed_row(r: dict, label: str) -> str:
    s = r["summary"]
    return (f"| {r['cell']['name']} | {label} | {_pct(s['visual_test']['accuracy'])} | "
            f"{_pct(s['hh_val']['accuracy'])} | {_pct(s['mean_accuracy'])} | {_num(s['train_loss'])} |")


def to_markdown(results: dict) -> str:
    """One table per ablation (a row a cell) and a line per finding."""
    setup, data, tables = results["setup"], results["data"], results["tables"]
    seeds = ", ".join(map(str, setup["seeds"]))
    head = ["| cell | {} | visual test | HH val | mean | final train loss |", "|---|---|---:|---:|---:|---:|"]
    lines = [
        "# BaseReward ablations in miniature (real trainer, real Scorer)",
        "",
        f"Every cell is a `basereward.training.train` run from the same starting point ({setup['start']}), "
        f"scored by the `Scorer`: {setup['description']}. Seeds {seeds}; accuracy in %, mean ± std over seeds, "
        "ties wrong.",
        f"Data: visual train {data['visual_train']} (generator seed {setup['synthetic_seeds']['train']}), visual test "
        f"{data['visual_test']} (seed {setup['synthetic_seeds']['test']}), HH train {data['hh_train']}, HH val "
        f"{data['hh_val']}; HH biased {data['hh_biased']}, HH biased + balanced {data['hh_balanced']}.",
        "", "## (a) Reward head: layers × activation (train: visual + HH)", "", head[0].format("head"), head[1],
    ]
    lines += [_mixed_row(r, Cell(**r["cell"]).head_label()) for r in tables["head"]]
    lines += ["", "## (b) Zero-coefficient regularisation λ (2-layer SiLU)", "", head[0].format("λ"), head[1]]
    lines += [_mixed_row(r, f"{r['cell']['zero_coef']:g}") for r in tables["zero_coef"]]
    lines += ["", "## (c) Length normalisation r / log(len + 1) (2-layer SiLU)", "", head[0].format("normalised"),
              head[1]]
    lines += [_mixed_row(r, "yes" if r["cell"]["length_norm"] else "no") for r in tables["length_norm"]]
    lines += ["", f"## (d) Length bias (train: HH only, {100 * LONG_FRACTION:.0f}% chosen-longer subset; "
              "eval: HH val)", "",
              "| cell | train pairs | train chosen-longer | HH val | HH val prefers longer | final train loss |",
              "|---|---:|---:|---:|---:|---:|"]
    stats = data.get("length_stats", {})
    stat_key = {"hh": "hh_train", "hh-biased": "hh_biased", "hh-balanced": "hh_balanced"}
    for r in tables["length_bias"]:
        st = stats.get(stat_key.get(r["cell"]["train_set"], ""), {})
        cl = f"{100 * st['chosen_longer']:.1f}%" if "chosen_longer" in st else "?"
        s = r["summary"]["hh_val"]
        lines.append(f"| {r['cell']['name']} | {r['n_train']} | {cl} | {_pct(s['accuracy'])} | "
                     f"{_pct(s.get('prefers_longer'))} | {_num(r['summary']['train_loss'])} |")
    lines += ["", "## Did the paper's direction reproduce?", ""]
    lines += [f"- {finding_line(f)}" for f in results["findings"]]
    if len(setup["seeds"]) == 1:
        lines += ["", "One seed only: no noise estimate; differences may be noise."]
    lines += ["", f"Total {results['timing']['total_s']:.0f} s on {setup['threads']} CPU threads."]
    return "\n".join(lines) + "\n"
