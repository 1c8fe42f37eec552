"""Rankings files -> pair files: the reader's checks, the pairs derived by hand, and the CLI."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from basereward.cli import main
from basereward.data.pairs import load_pairs
from basereward.data.rankings import load_rankings, rankings_to_pairs
from basereward.errors import DataError


def _write(path, rows) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _resp(*scored):
    return [{"text": t, "score": s} for t, s in scored]


ROWS = [
    # q1: scores 3, 1, 2 -> (0,1) a>b, (0,2) a>c, (1,2) c>b; widest gap (0,1).
    {"id": "q1", "prompt": "What is shown?", "images": ["img/cat.png"],
     "responses": _resp(("a cat", 3), ("a dog", 1), ("an animal", 2)), "source": "uf", "category": "general"},
    # q2: text-only, a tie (0,1) dropped; (0,2) and (1,2): z wins; widest gap: (0,2) first of two 4.5 gaps.
    {"id": "q2", "prompt": "Say hi", "images": [], "responses": _resp(("hi", 0.5), ("hello", 0.5), ("hey", 5))},
    # q3: one response gives no pair; extra keys are ignored.
    {"id": "q3", "prompt": "Alone", "images": [], "responses": _resp(("only", 1)), "model": "x"},
]


@pytest.fixture()
def rankings_file(tmp_path):
    (tmp_path / "in" / "img").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "in" / "img" / "cat.png")
    return _write(tmp_path / "in" / "rankings.jsonl", ROWS)


def test_all_pairs_and_ultra_hard_by_hand(rankings_file, tmp_path):
    rankings = load_rankings(rankings_file)
    assert [r.id for r in rankings] == ["q1", "q2", "q3"]
    assert rankings[0].images == (str(tmp_path / "in" / "img" / "cat.png"),)
    assert rankings[1].scores == (0.5, 0.5, 5.0)
    pairs = rankings_to_pairs(rankings)
    assert [(p.id, p.chosen, p.rejected) for p in pairs] == [
        ("q1-0-1", "a cat", "a dog"),
        ("q1-0-2", "a cat", "an animal"),
        ("q1-1-2", "an animal", "a dog"),
        ("q2-0-2", "hey", "hi"),
        ("q2-1-2", "hey", "hello"),
    ]
    assert {(p.source, p.category) for p in pairs[:3]} == {("uf", "general")}
    assert pairs[3].images == () and pairs[3].source == ""
    hard = rankings_to_pairs(rankings, ultra_hard=True)
    assert [(p.id, p.chosen, p.rejected) for p in hard] == [("q1-0-1", "a cat", "a dog"), ("q2-0-2", "hey", "hi")]


def test_cli_writes_a_pair_file_that_loads(rankings_file, tmp_path, capsys):
    out = tmp_path / "out" / "pairs.jsonl"
    assert main(["data", "rank-pairs", "--input", rankings_file, "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 5 pairs from 3 prompts to {out}"
    pairs = load_pairs(out)  # images checked: paths were rewritten relative to the new file
    assert [p.id for p in pairs] == ["q1-0-1", "q1-0-2", "q1-1-2", "q2-0-2", "q2-1-2"]
    assert pairs[0].images == (str(tmp_path / "in" / "img" / "cat.png"),)
    assert json.loads(out.read_text().splitlines()[0])["images"] == ["../in/img/cat.png"]

    hard = tmp_path / "out" / "hard.jsonl"
    assert main(["data", "rank-pairs", "--input", rankings_file, "--out", str(hard), "--ultra-hard"]) == 0
    assert [(p.id, p.chosen) for p in load_pairs(hard)] == [("q1-0-1", "a cat"), ("q2-0-2", "hey")]


BAD_ROWS = [
    ({"prompt": "p", "images": [], "responses": []}, "missing field 'id'"),
    ({"id": "b", "prompt": " ", "images": [], "responses": []}, "field 'prompt' must be a non-empty string"),
    ({"id": "c", "prompt": "p", "images": "x.png", "responses": []}, "field 'images' must be a list"),
    ({"id": "d", "prompt": "p", "images": ["nowhere.png"], "responses": []}, "image not found: nowhere.png"),
    ({"id": "e", "prompt": "p", "images": [], "responses": {"text": "a"}}, "field 'responses' must be a list"),
    ({"id": "f", "prompt": "p", "images": [], "responses": [{"text": "a"}]}, "responses[0] must be an object with"),
    ({"id": "g", "prompt": "p", "images": [], "responses": _resp(("a", 1), ("b", True))},
     "responses[1].score must be a finite number, got True"),
    ('{"id": "h", "prompt": "p", "images": [], "responses": [{"text": "a", "score": NaN}]}',
     "responses[0].score must be a finite number, got nan"),
    ({"id": "i", "prompt": "p", "images": [], "responses": _resp(("", 1))}, "responses[0].text must be a non-empty"),
    ({"id": "j", "prompt": "p", "images": [], "responses": [], "category": 3}, "field 'category' must be a string"),
    ("[1, 2]", "not a JSON object"),
    ({"id": "ok", "prompt": "p", "images": [], "responses": []}, "duplicate id 'ok' (first on line 12)"),
]


def test_every_bad_row_named_by_file_and_line(tmp_path):
    good = {"id": "ok", "prompt": "p", "images": [], "responses": _resp(("yes", 1), ("no", 0))}
    path = _write(tmp_path / "r.jsonl", [row for row, _ in BAD_ROWS[:-1]] + [good, BAD_ROWS[-1][0]])
    with pytest.raises(DataError) as info:
        load_rankings(path)
    assert str(info.value) == f"{path}:1: missing field 'id' (and {len(BAD_ROWS) - 1} more bad rows)"
    logged: list[str] = []
    kept = load_rankings(path, on_error="skip", log=logged.append)
    assert [r.id for r in kept] == ["ok"]
    expected_lines = list(range(1, len(BAD_ROWS))) + [len(BAD_ROWS) + 1]
    assert len(logged) == len(BAD_ROWS) + 1
    for line, lineno, (_, reason) in zip(logged, expected_lines, BAD_ROWS):
        assert line.startswith(f"{path}:{lineno}: ") and reason in line, (line, reason)
    assert logged[-1] == f"{path}: skipped {len(BAD_ROWS)} of {len(BAD_ROWS) + 1} rows"


def test_cli_errors_are_one_line(tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    bad = _write(tmp_path / "bad.jsonl", [{"id": "a", "prompt": "p", "images": [], "responses": "x"}])
    assert main(["data", "rank-pairs", "--input", bad, "--out", str(out)]) == 2
    reason = "field 'responses' must be a list of {\"text\", \"score\"} objects"
    assert capsys.readouterr().err.strip() == f"error: {bad}:1: {reason}"
    tie = {"id": "a", "prompt": "p", "images": [], "responses": _resp(("x", 1), ("y", 1))}
    tied = _write(tmp_path / "tied.jsonl", [tie])
    assert main(["data", "rank-pairs", "--input", tied, "--out", str(out), "--ultra-hard"]) == 2
    assert "no pairs: every prompt has fewer than two responses or only equal scores" in capsys.readouterr().err
    empty = _write(tmp_path / "empty.jsonl", [])
    assert main(["data", "rank-pairs", "--input", empty, "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {empty}: file is empty (no rankings)"
    assert not os.path.exists(out)
