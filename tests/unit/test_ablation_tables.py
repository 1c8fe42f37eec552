"""experiments/ablation_tables.py: the grid, the seed summaries and the findings on hand-made numbers.

The experiments folder is not a package, so the module is imported by path.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "experiments" / "ablation_tables.py"


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("ablation_tables_under_test", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


def test_cells_equal_up_to_their_name_run_once(tables):
    grid = tables.build_tables()
    calls = []

    def run(cell):
        calls.append(cell.name)
        return {"n_train": 1, "runs": [], "summary": {"tag": cell.name}}

    out = tables.run_tables(grid, run)
    # The 2-layer SiLU baseline appears in three tables (head, zero_coef=0, length_norm=off).
    assert len(calls) == len({c.key() for cells in grid.values() for c in cells}) == 14  # 8 heads + 2 lambdas + norm + 3 HH sets
    by_name = {r["cell"]["name"]: r for t in out.values() for r in t}
    assert by_name["zero_coef=0"]["summary"] == by_name["L2-silu"]["summary"] == by_name["length_norm=off"]["summary"]
    assert by_name["zero_coef=0"]["cell"]["name"] == "zero_coef=0"  # each row keeps its own label


def test_mean_std_and_summaries_by_hand(tables):
    assert tables.mean_std([0.5]) == {"mean": 0.5, "std": 0.0}
    s = tables.mean_std([0.6, 0.8])  # mean 0.7, sample std sqrt(0.02) = 0.1414
    assert s["mean"] == pytest.approx(0.7) and s["std"] == pytest.approx(math.sqrt(0.02))
    runs = [{"loss": 1.0, "hh_val": {"accuracy": 0.5, "prefers_longer": None}},
            {"loss": 3.0, "hh_val": {"accuracy": 0.7, "prefers_longer": None}}]
    got = tables.summarise(runs, ["loss", "hh_val"])
    assert got["loss"]["mean"] == 2.0
    assert got["hh_val"]["accuracy"]["mean"] == pytest.approx(0.6)
    assert "prefers_longer" not in got["hh_val"]  # no value to average


def _row(name, mean, std=0.0, hh=None, longer=None, table_kind="mixed"):
    s = {"mean": mean, "std": std}
    summary = {"mean_accuracy": s, "hh_val": {"accuracy": hh or s, "prefers_longer": {"mean": longer or 0.5, "std": 0}}}
    return {"cell": {"name": name}, "summary": summary}


def _tables(head_means, zero, norm_on, bias_hh, bias_longer):
    names = ["L1-linear", "L2-tanh", "L2-relu", "L2-silu", "L2-gelu", "L3-silu", "L4-silu", "L5-silu"]
    return {
        "head": [_row(n, m) for n, m in zip(names, head_means)],
        "zero_coef": [_row(f"zero_coef={z:g}", m) for z, m in zip((0.0, 0.01, 0.1), zero)],
        "length_norm": [_row("length_norm=off", zero[0]), _row("length_norm=on", norm_on)],
        "length_bias": [_row(n, 0, hh={"mean": h, "std": 0.0}, longer=pl)
                        for n, h, pl in zip(("hh as is", "hh 90% long-biased", "hh biased + balance_length"),
                                            bias_hh, bias_longer)],
    }


def test_findings_follow_the_numbers(tables):
    #            L1    L2-tanh L2-relu L2-silu L2-gelu L3   L4    L5
    head = [0.60, 0.62, 0.63, 0.66, 0.64, 0.61, 0.60, 0.59]
    t = _tables(head, zero=[0.66, 0.65, 0.60], norm_on=0.62, bias_hh=[0.58, 0.52, 0.56],
                bias_longer=[0.5, 0.8, 0.6])
    f = {x["id"]: x for x in tables.findings(t, n_seeds=1)}
    assert f["silu2_vs_linear"]["reproduced"] and f["silu2_vs_linear"]["delta_points"] == pytest.approx(6.0)
    assert f["silu2_best"]["reproduced"] and f["silu2_best"]["rank"] == 1
    # deeper (0.61, 0.60, 0.59 -> 0.60) vs 2-layer (0.62, 0.63, 0.66, 0.64 -> 0.6375): -3.75 points
    assert f["deeper_worse"]["reproduced"] and f["deeper_worse"]["delta_points"] == pytest.approx(-3.75)
    assert f["zero_coef_hurts"]["reproduced"]
    assert f["length_norm_hurts"]["reproduced"] and f["length_norm_hurts"]["delta_points"] == pytest.approx(-4.0)
    assert f["length_bias"]["reproduced"] and f["length_bias_signature"]["reproduced"]
    # The other way round, every finding flips.
    t = _tables([0.70, 0.6, 0.6, 0.6, 0.6, 0.65, 0.65, 0.65], zero=[0.6, 0.61, 0.62], norm_on=0.65,
                bias_hh=[0.5, 0.55, 0.52], bias_longer=[0.6, 0.5, 0.55])
    f = {x["id"]: x for x in tables.findings(t, n_seeds=1)}
    assert not any(x["reproduced"] for x in f.values())
    assert f["silu2_best"]["best"] == "L1-linear" and f["silu2_best"]["rank"] == 5  # 1 + four better heads


def test_noise_band_from_the_seed_spread(tables):
    d = tables.diff({"mean": 0.60, "std": 0.02}, {"mean": 0.59, "std": 0.02}, n_seeds=2)
    # se = 100 * sqrt((0.02^2 + 0.02^2) / 2) = 2 points; the band is 2 se = 4 points.
    assert d["noise_2se_points"] == pytest.approx(4.0) and d["within_noise"]
    assert not tables.diff({"mean": 0.6, "std": 0}, {"mean": 0.5, "std": 0}, n_seeds=1)["within_noise"]
