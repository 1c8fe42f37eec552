"""The report backend: numbers against hand-computed values, figures that are real PNGs.

The statistics themselves are tested in test_metrics.py; here they must reach report.json."""

from __future__ import annotations

import json
import math
import re
import statistics

import pytest
from PIL import Image

from basereward.errors import DataError
from basereward.report import (
    build_report,
    category_bar_sets,
    metrics_table,
    pair_from_line,
)

# Four pairs with texts (lengths in words) and rewards:
#   a: chosen 2 words, r_w=2 | rejected 4 words, r_l=0   -> chosen shorter, correct
#   b: chosen 3 words, r_w=1 | rejected 1 word,  r_l=3   -> chosen longer, wrong
#   c: chosen 5 words, r_w=3 | rejected 2 words, r_l=1   -> chosen longer, correct
#   d: chosen 1 word,  r_w=0 | rejected 1 word,  r_l=-2  -> equal length, correct
PAIRS = [
    ("a", "one two", "x y z w", 2.0, 0.0),
    ("b", "a b c", "a", 1.0, 3.0),
    ("c", "w w w w w", "q q", 3.0, 1.0),
    ("d", "k", "m", 0.0, -2.0),
]
CHOSEN_R = [p[3] for p in PAIRS]
REJECTED_R = [p[4] for p in PAIRS]
LEN_C, LEN_R = [2, 3, 5, 1], [4, 1, 2, 1]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def inputs(tmp_path):
    pairs_file = write_jsonl(
        tmp_path / "pairs.jsonl",
        [{"id": i, "prompt": "p", "images": [], "chosen": c, "rejected": r, "category": "chat"} for i, c, r, _, _ in PAIRS],
    )
    m1 = tmp_path / "pairs_eval.json"
    m1.write_text(json.dumps({
        "benchmark": "pairs", "accuracy": 0.75, "num_pairs": 4,
        "per_category": {"chat": 1.0, "math": 0.5}, "mean_margin": 1.0,
    }))
    lines = [{"id": i, "scores": [w, l], "chosen_reward": w, "rejected_reward": l} for i, _, _, w, l in PAIRS[:3]]
    lines.append({"id": "d", "scores": [0.0, -2.0]})  # a pair given by its two scores only
    lines.append({"id": "e", "scores": [1, 2, 3, 4, 5, 6]})  # not a pair: skipped
    write_jsonl(tmp_path / "pairs_eval.scores.jsonl", lines)

    # Every pair has margin ln 3 (p = 0.75) and the preferred response listed second.
    m2 = tmp_path / "vl.json"
    m2.write_text(json.dumps({"benchmark": "vl_rewardbench", "accuracy": 1.0, "overall": {"hallucination": 1.0}}))
    write_jsonl(tmp_path / "vl.scores.jsonl",
                [{"id": f"v{k}", "scores": [0.1 * k, 0.1 * k + math.log(3)], "preferred": 1} for k in range(40)])

    m3 = tmp_path / "rmb.json"
    m3.write_text(json.dumps({
        "benchmark": "rm_bench", "easy": 0.8, "normal": 0.6, "hard": 0.3, "total": 0.5667,
        "domains": {"chat": {"easy": 0.9, "normal": 0.7, "hard": 0.4, "score": 2 / 3},
                    "code": {"easy": 0.7, "normal": 0.5, "hard": 0.2, "score": 0.4667}},
        "domains_present": ["chat", "code"], "note": "math domain absent",
    }))
    return tmp_path, [str(m1), str(m2), str(m3)], [pairs_file]


def test_pair_from_line_forms():
    assert pair_from_line({"chosen_reward": 1, "rejected_reward": 2.5}) == (1.0, 2.5)
    assert pair_from_line({"scores": [3, 4], "preferred": 1}) == (4.0, 3.0)
    assert pair_from_line({"scores": [3, 4]}) == (3.0, 4.0)
    assert pair_from_line({"scores": [1, 2, 3]}) is None


def test_category_bar_sets_flat_and_grouped():
    sets = category_bar_sets({
        "accuracy": 0.5, "num": 3,
        "per_category": {"chat": 1.0, "math": 0.5, "n": 4},
        "domains": {"chat": {"easy": 0.9, "hard": 0.4}, "code": {"easy": 0.7, "hard": 0.2}},
    })
    assert sets[0] == {"title": "per_category", "groups": ["chat", "math"], "series": {"accuracy": [1.0, 0.5]}}
    assert sets[1] == {"title": "domains", "groups": ["chat", "code"], "series": {"easy": [0.9, 0.7], "hard": [0.4, 0.2]}}


def test_metrics_table_flattens_numbers():
    table = metrics_table({"accuracy": 0.75, "n": 4, "per_category": {"chat": 1.0}, "note": "text"})
    assert table.splitlines() == [
        "| Metric | Value |", "|---|---|", "| accuracy | 0.7500 |", "| n | 4 |", "| per_category.chat | 1.0000 |",
    ]


def test_build_report_end_to_end(inputs):
    tmp_path, metrics, pairs = inputs
    out = tmp_path / "report"
    report_md = build_report(metrics, str(out), pairs_paths=pairs, title="Test report")
    with open(report_md) as f:
        text = f.read()
    assert text.startswith("# Test report")

    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(figures) >= 7
    for rel in figures:
        with Image.open(out / rel) as im:
            assert im.format == "PNG" and im.size[0] > 300
            im.verify()

    data = json.loads((out / "report.json").read_text())
    pairs_rec = data["benchmarks"]["pairs"]
    assert pairs_rec["skipped_items"] == 1
    assert pairs_rec["reward_stats"]["gap"] == 1.0
    assert pairs_rec["reward_stats"]["std_rejected"] == pytest.approx(math.sqrt(13 / 4))
    bias = pairs_rec["length_bias"]
    assert bias["chosen_shorter"] == {"n": 1, "accuracy": 1.0}
    assert bias["chosen_longer"] == {"n": 2, "accuracy": 0.5}
    assert bias["pearson_reward_length"] == pytest.approx(statistics.correlation(CHOSEN_R + REJECTED_R, LEN_C + LEN_R))
    assert pairs_rec["headline"] == {"accuracy": 0.75, "num_pairs": 4, "mean_margin": 1.0}

    # Whatever the order of a pair, its bin's gap is 1 - 0.75 (first chosen: p .75, y 1; first
    # rejected: p .25, y 0), so ECE = 0.25 exactly.
    vl = data["benchmarks"]["vl_rewardbench"]
    assert vl["calibration"]["ece"] == pytest.approx(0.25)
    assert vl["reward_stats"]["gap"] == pytest.approx(math.log(3))
    assert vl["length_bias"]["n_pairs"] == 0  # no texts for these ids
    assert {b["n"] for b in vl["calibration"]["bins"] if b["n"]} and sum(b["n"] for b in vl["calibration"]["bins"]) == 40

    rmb = data["benchmarks"]["rm_bench"]
    assert rmb["category_bars"][0]["series"]["hard"] == [0.4, 0.2]
    assert "calibration" not in rmb and "No per-item scores" in text
    assert "math domain absent" in text
    # The overview table holds every file's headline numbers.
    assert "| rm_bench |" in text and "0.5667" in text and "| vl_rewardbench |" in text


def test_build_report_chars_unit(inputs):
    tmp_path, metrics, pairs = inputs
    build_report(metrics[:1], str(tmp_path / "r2"), pairs_paths=pairs, length_unit="chars")
    bias = json.loads((tmp_path / "r2" / "report.json").read_text())["benchmarks"]["pairs"]["length_bias"]
    # chars: a 7 vs 7 (equal), b 5 vs 1 (longer, wrong), c 9 vs 3 (longer, right), d 1 vs 1 (equal).
    assert bias["unit"] == "chars" and bias["equal_length"] == 2
    assert bias["chosen_longer"] == {"n": 2, "accuracy": 0.5} and bias["chosen_shorter"]["n"] == 0


def test_bad_inputs_are_one_line_data_errors(inputs, tmp_path):
    _, metrics, _ = inputs
    not_a_dict = tmp_path / "list.json"
    not_a_dict.write_text("[1, 2]")
    with pytest.raises(DataError, match=r"list\.json: expected a JSON object of metrics"):
        build_report([str(not_a_dict)], str(tmp_path / "r3"))
    with pytest.raises(DataError, match=r"missing\.json: file not found"):
        build_report([str(tmp_path / "missing.json")], str(tmp_path / "r3"))
    # A bad scores line is reported with its file and line.
    (tmp_path / "pairs_eval.scores.jsonl").write_text('{"id": "a", "scores": [1, 0]}\n{oops\n')
    with pytest.raises(DataError, match=r"pairs_eval\.scores\.jsonl:2: malformed JSON"):
        build_report(metrics[:1], str(tmp_path / "r4"))
    assert not (tmp_path / "r4" / "report.md").exists()
