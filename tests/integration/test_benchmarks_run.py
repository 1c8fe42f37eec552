"""The performance scripts run as a user runs them (`python benchmarks/<name>.py --quick --out DIR`):
each finishes, its last line is the JSON summary the README quotes, the ways it compares agree
(rewards / losses) and its results.json / table.txt land in DIR. Timings are not asserted (the
scripts print ratios; a test cannot judge speed on a shared machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def run(name: str, out: Path) -> dict:
    res = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["quick"] is True
    record = json.loads((out / "results.json").read_text())
    assert record["summary"] == summary and record["machine"]["torch"]
    assert (out / "table.txt").read_text().strip()
    return summary


def test_group_scoring(tmp_path):
    s = run("group_scoring", tmp_path / "p1")
    assert s["max_abs_reward_diff"] < 1e-4  # per-sample, image once and prefix once agree
    assert set(s["speedup_8_by_backbone"]) == {"qwen2.5-vl", "mini-vl"} and s["speedup_8"] > 0
    assert s["unshared_batches"]["qwen2.5-vl"] == 0  # the prefix really was shared


def test_pair_forward(tmp_path):
    s = run("pair_forward", tmp_path / "p2")
    assert s["max_abs_loss_diff"] < 1e-5
    assert set(s["speedup_by_backbone"]) == {"qwen2.5-vl", "mini-vl"}


def test_flops(tmp_path):
    s = run("flops", tmp_path / "p5")
    assert s["matmul_peak_gflops"] > 0
    assert set(s["fraction_of_peak"]) == {"full sequences", "prefix shared"}
    assert all(0 < f for f in s["fraction_of_peak"].values())


def test_scaling(tmp_path):
    s = run("scaling", tmp_path / "scaling")
    # One exponent between each pair of consecutive points of each curve.
    assert len(s["time_exponents_vs_pairs"]) >= 1 and len(s["time_exponents_vs_length"]) >= 1
