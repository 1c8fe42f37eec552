"""Text dataset adapters on fixture rows written in each dataset's published schema.

Every expectation below is counted by hand from the fixture rows: rows read, pairs made, rows
skipped by reason, and the fields of the pairs (which side is chosen, the prompt, the history).
Each output also goes through the pair JSONL writer and validating loader, so an adapter can
never emit a row the trainer would refuse.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from basereward.data.pairs import load_pairs, save_pairs
from basereward.data.sources.base import ADAPTERS, SourceContext, get_adapter
from basereward.data.sources.hh_rlhf import default_hh_path, load_hh_rlhf
from basereward.errors import ConfigError, DataError


def _run(name: str, path: Path, tmp_path: Path, **options):
    """(pairs, ctx) of adapter `name` on `path`, after a round trip through the pair loader."""
    ctx = SourceContext(name)
    pairs = list(get_adapter(name).read(str(path), ctx, **options))
    if pairs:  # the loader refuses an empty file
        out = tmp_path / f"{name}-roundtrip.jsonl"
        save_pairs(pairs, out)  # refuses duplicate ids
        assert load_pairs(out, check_images=False) == pairs  # the loader's validation accepts every pair
    return pairs, ctx


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _msgs(*turns: tuple[str, str]) -> list[dict]:
    return [{"role": role, "content": content} for role, content in turns]


def test_registry_lists_the_text_adapters():
    get_adapter("shp")  # imports the package, registering everything
    for name in ("ultrafeedback", "shp", "tulu-3", "wildchat", "olmo-2", "swe-arena", "hh-rlhf"):
        assert name in ADAPTERS and ADAPTERS[name].multimodal is False and ADAPTERS[name].summary


# ---------------------------------------------------------------------------------- UltraFeedback


def _rating(value: str) -> dict:
    return {"Rating": value, "Rationale": "r"}


def _completion(response, overall, fine=None, ratings=("3", "3", "3", "3")) -> dict:
    """One completion in openbmb/UltraFeedback's layout (aspect ratings as published strings)."""
    if_, honesty, truth, help_ = ratings
    return {
        "model": "m",
        "principle": "helpfulness",
        "custom_system_prompt": "s",
        "response": response,
        "annotations": {
            "instruction_following": _rating(if_),
            "honesty": _rating(honesty),
            "truthfulness": {"Type": ["0"], "Rationale": "r", "Rating": truth, "Rationale For Rating": "r"},
            "helpfulness": {"Type": ["1"], "Rationale": "r", "Rating": help_, "Rationale For Rating": "r"},
        },
        "critique": "c",
        "overall_score": overall,
        "fine-grained_score": fine,
    }


def _uf_row(instruction: str, completions: list[dict], source: str = "evol_instruct") -> dict:
    return {
        "source": source,
        "instruction": instruction,
        "models": ["m"] * len(completions),
        "correct_answers": ["None"],
        "incorrect_answers": ["None"],
        "completions": completions,
    }


UF_ROWS = [
    # 0: scores 7, 3.5, 9, 3.5 -> Ultra-Hard is 9 vs the first 3.5; Ultra-All has 5 pairs (3.5/3.5 tied).
    _uf_row("Q0", [_completion(f"r0{k}", s) for k, s in zip("abcd", (7.0, 3.5, 9.0, 3.5), strict=True)]),
    # 1: a null score and an empty response leave "A1" (8) and "D1" (2).
    _uf_row("Q1", [_completion("A1", 8.0), _completion("B1", None), _completion("", 6.0), _completion("D1", 2.0)]),
    _uf_row("Q2", [_completion("x", 5.0), _completion("y", 5.0)]),  # all tied
    _uf_row("Q3", [_completion("x", 5.0), _completion("y", "N/A")]),  # one scored completion
    _uf_row("  ", [_completion("x", 5.0), _completion("y", 1.0)]),  # empty instruction
    _uf_row("Q5", [_completion("same", 6.0), _completion("same", 4.0)]),  # identical texts
]


def test_ultrafeedback_hard_is_best_vs_worst_with_counted_skips(tmp_path):
    pairs, ctx = _run("ultrafeedback", _jsonl(tmp_path / "uf.jsonl", UF_ROWS), tmp_path)
    assert [(p.id, p.prompt, p.chosen, p.rejected) for p in pairs] == [
        ("ultrafeedback:0-1-2", "Q0", "r0c", "r0b"),
        ("ultrafeedback:1-0-1", "Q1", "A1", "D1"),
    ]
    assert {(p.source, p.category, p.history) for p in pairs} == {("ultrafeedback", "evol_instruct", ())}
    assert ctx.stats(len(pairs)) == {
        "rows": 6,
        "pairs": 2,
        "skipped": {
            "all scores tied": 1,
            "empty prompt": 1,
            "fewer than 2 scored completions": 1,
            "identical responses": 1,
        },
    }


def test_ultrafeedback_all_keeps_every_differently_scored_pair(tmp_path):
    pairs, ctx = _run("ultrafeedback", _jsonl(tmp_path / "uf.jsonl", UF_ROWS), tmp_path, construction="all")
    row0 = [(p.id, p.chosen, p.rejected) for p in pairs if p.prompt == "Q0"]
    assert row0 == [
        ("ultrafeedback:0-0-1", "r0a", "r0b"),
        ("ultrafeedback:0-0-2", "r0c", "r0a"),
        ("ultrafeedback:0-0-3", "r0a", "r0d"),
        ("ultrafeedback:0-1-2", "r0c", "r0b"),
        ("ultrafeedback:0-2-3", "r0c", "r0d"),
    ]
    assert len(pairs) == 6 and ctx.rows == 6 and sum(ctx.skipped.values()) == 4


def test_ultrafeedback_score_choice_and_na_ratings(tmp_path):
    completions = [
        _completion("c0", 9.0, 3.0, ("5", "N/A", "4", "3")),  # ratings mean (5+4+3)/3 = 4.0
        _completion("c1", 9.0, None, ("N/A", "N/A", "N/A", "N/A")),  # no usable rating at all
        _completion("c2", 9.0, 4.5, ("2", "2", "2", "2")),  # 2.0
        _completion("c3", 9.0, 1.0, ("4", "4", "4", "5")),  # 4.25
    ]
    path = _jsonl(tmp_path / "uf.jsonl", [_uf_row("Q", completions)])
    by_ratings, _ = _run("ultrafeedback", path, tmp_path, score="ratings")
    # Scored positions c0=0, c2=1, c3=2: widest gap 4.25 - 2.0 between positions 1 and 2.
    assert [(p.id, p.chosen, p.rejected) for p in by_ratings] == [("ultrafeedback:0-1-2", "c3", "c2")]
    by_fine, _ = _run("ultrafeedback", path, tmp_path, score="fine-grained")
    assert [(p.chosen, p.rejected) for p in by_fine] == [("c2", "c3")]
    by_overall, ctx = _run("ultrafeedback", path, tmp_path)
    assert by_overall == [] and ctx.skipped == {"all scores tied": 1}


def test_ultrafeedback_refuses_bad_options_and_other_datasets(tmp_path):
    path = _jsonl(tmp_path / "uf.jsonl", UF_ROWS)
    with pytest.raises(ConfigError, match="construction"):
        list(get_adapter("ultrafeedback").read(str(path), SourceContext("u"), construction="medium"))
    with pytest.raises(ConfigError, match="score"):
        list(get_adapter("ultrafeedback").read(str(path), SourceContext("u"), score="mean"))
    shp_file = _jsonl(tmp_path / "shp.jsonl", [SHP_ROWS[0]])
    with pytest.raises(DataError, match=r"shp.jsonl:1: not in the UltraFeedback layout \(no 'instruction', 'completions'"):
        list(get_adapter("ultrafeedback").read(str(shp_file), SourceContext("u")))


# -------------------------------------------------------------------------------------------- SHP


def _shp_row(k: int, history: str, a: str, b: str, label: int, ratio: float, domain: str) -> dict:
    return {
        "post_id": f"p{k}",
        "domain": domain,
        "upvote_ratio": 0.9,
        "history": history,
        "c_root_id_A": f"a{k}",
        "c_root_id_B": f"b{k}",
        "created_at_utc_A": 1_600_000_000,
        "created_at_utc_B": 1_600_000_100,
        "score_A": 30,
        "score_B": 10,
        "human_ref_A": a,
        "human_ref_B": b,
        "labels": label,
        "seconds_difference": 100.0,
        "score_ratio": ratio,
    }


SHP_ROWS = [
    _shp_row(0, "How long to rest dough?", "An hour.", "No need.", 1, 3.0, "askculinary_train"),
    _shp_row(1, "Salt before or after?", "After.", "Before, always.", 0, 1.5, "askculinary_train"),
    _shp_row(2, "Why?", "Same text.", "Same text.", 1, 1.0, "askculinary_train"),
    _shp_row(3, "Odd label?", "x", "y", 2, 4.0, "askculinary_train"),
    _shp_row(4, "", "x", "y", 0, 2.0, "askhistorians_test"),
    _shp_row(5, "Who built it?", "Romans.", "Aliens.", 1, 2.0, "askhistorians_test"),
]


def _shp_tree(tmp_path: Path) -> Path:
    """SHP's published layout: one folder per subreddit, JSON Lines files named `*.json`."""
    root = tmp_path / "SHP"
    _jsonl(root / "askculinary" / "train.json", SHP_ROWS[:4])
    _jsonl(root / "askhistorians" / "test.json", SHP_ROWS[4:])
    return root


def test_shp_label_picks_the_side_and_skips_are_counted(tmp_path):
    pairs, ctx = _run("shp", _shp_tree(tmp_path), tmp_path)
    assert [(p.id, p.prompt, p.chosen, p.rejected, p.category) for p in pairs] == [
        ("shp:0:p0:a0:b0", "How long to rest dough?", "An hour.", "No need.", "askculinary_train"),
        ("shp:1:p1:a1:b1", "Salt before or after?", "Before, always.", "After.", "askculinary_train"),
        ("shp:5:p5:a5:b5", "Who built it?", "Romans.", "Aliens.", "askhistorians_test"),
    ]
    assert ctx.stats(len(pairs)) == {
        "rows": 6,
        "pairs": 3,
        "skipped": {"empty prompt": 1, "identical responses": 1, "label is not 0 or 1": 1},
    }


def test_shp_min_score_ratio(tmp_path):
    pairs, ctx = _run("shp", _shp_tree(tmp_path), tmp_path, min_score_ratio=2)
    assert [p.id for p in pairs] == ["shp:0:p0:a0:b0", "shp:5:p5:a5:b5"]
    # Rows 1 (1.5) and 2 (1.0) fall below; row 3's label and row 4's empty post are caught first / still.
    assert ctx.skipped == {"score_ratio below 2": 2, "label is not 0 or 1": 1, "empty prompt": 1}
    for bad in (0.5, "2", True):
        with pytest.raises(ConfigError, match="min_score_ratio"):
            list(get_adapter("shp").read(str(tmp_path), SourceContext("shp"), min_score_ratio=bad))


def test_shp_reads_json_lists_and_parquet_too(tmp_path):
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(SHP_ROWS[:2]))
    assert [p.chosen for p in _run("shp", listed, tmp_path)[0]] == ["An hour.", "Before, always."]
    table = _parquet(tmp_path / "pq" / "train-00000-of-00001.parquet", SHP_ROWS[4:])
    assert [p.chosen for p in _run("shp", table.parent, tmp_path)[0]] == ["Romans."]


# ------------------------------------------------------------------------- Tulu-3 / WildChat / OLMo 2


TULU_ROWS = [
    {"id": "t0", "prompt": "Q", "chosen": _msgs(("user", "Q"), ("assistant", "good")),
     "rejected": _msgs(("user", "Q"), ("assistant", "bad"))},
    {"id": "t1", "prompt": "u1",
     "chosen": _msgs(("user", "u1"), ("assistant", "a1"), ("user", "u2"), ("assistant", "fine")),
     "rejected": _msgs(("user", "u1"), ("assistant", "a1"), ("user", "u2"), ("assistant", "poor"))},
    {"id": "t2", "prompt": "Q",
     "chosen": _msgs(("system", "Be terse."), ("user", "Q"), ("assistant", "a")),
     "rejected": _msgs(("system", "Be terse."), ("user", "Q"), ("assistant", "b"))},
    {"id": "t3", "prompt": "u1",
     "chosen": _msgs(("user", "u1"), ("assistant", "x"), ("user", "u2"), ("assistant", "a")),
     "rejected": _msgs(("user", "u1"), ("assistant", "y"), ("user", "u2"), ("assistant", "b"))},
    {"id": "t4", "prompt": "Q",
     "chosen": _msgs(("user", "Q"), ("assistant", "a"), ("user", "more?")),
     "rejected": _msgs(("user", "Q"), ("assistant", "a"), ("user", "more!"))},
    {"id": "t5", "prompt": "Q", "chosen": _msgs(("user", "Q"), ("assistant", "same")),
     "rejected": _msgs(("user", "Q"), ("assistant", "same "))},
]


def test_tulu3_message_lists_keep_history_and_count_skips(tmp_path):
    path = _parquet(tmp_path / "tulu" / "data" / "train-00000-of-00001.parquet", TULU_ROWS)
    pairs, ctx = _run("tulu-3", path.parent.parent, tmp_path)
    assert [(p.id, p.history, p.prompt, p.chosen, p.rejected) for p in pairs] == [
        ("tulu-3:0:t0", (), "Q", "good", "bad"),
        ("tulu-3:1:t1", (("user", "u1"), ("assistant", "a1")), "u2", "fine", "poor"),
    ]
    assert ctx.stats(2) == {
        "rows": 6,
        "pairs": 2,
        "skipped": {
            "conversations differ before the final response": 1,
            "identical responses": 1,
            "last turn is not an assistant response": 1,
            "system message": 1,
        },
    }


def test_wildchat_saved_dataset_dict_whole_or_one_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict(
        wildchat_if=datasets.Dataset.from_list(TULU_ROWS[:2]),
        wildchat_unused=datasets.Dataset.from_list([TULU_ROWS[5]]),
    )
    dd.save_to_disk(str(tmp_path / "wc"))
    pairs, ctx = _run("wildchat", tmp_path / "wc", tmp_path)
    assert [p.chosen for p in pairs] == ["good", "fine"] and ctx.rows == 3
    assert ctx.skipped == {"identical responses": 1}
    pairs, ctx = _run("wildchat", tmp_path / "wc" / "wildchat_if", tmp_path)  # one split's folder
    assert [p.id for p in pairs] == ["wildchat:0:t0", "wildchat:1:t1"] and ctx.rows == 2


def _olmo(k, chosen, rejected, rc, rr, source="src-a"):
    return {"chosen": chosen, "rejected": rejected, "chosen_rating": rc, "rejected_rating": rr,
            "chosen_model": "m1", "rejected_model": "m2", "source": source, "id": f"o{k}"}


OLMO_ROWS = [
    _olmo(0, _msgs(("user", "Q"), ("assistant", "yes")), _msgs(("user", "Q"), ("assistant", "no")), 5.0, 2.0),
    _olmo(1, _msgs(("user", "Q"), ("assistant", "a")), _msgs(("user", "Q"), ("assistant", "b")), 4.0, 4.0),
    _olmo(2, _msgs(("user", "Q"), ("assistant", "a")), _msgs(("user", "Q"), ("assistant", "b")), 2.0, 5.0),
    _olmo(3, _msgs(("user", "R"), ("assistant", "up")), _msgs(("user", "R"), ("assistant", "down")), None, None, "src-b"),
    _olmo(4, _msgs(("assistant", "Hi!"), ("user", "Q"), ("assistant", "a")),
          _msgs(("assistant", "Hi!"), ("user", "Q"), ("assistant", "b")), 5.0, 1.0),
    _olmo(5, [{"role": "user", "content": None}, {"role": "assistant", "content": "a"}],
          _msgs(("user", "Q"), ("assistant", "b")), 5.0, 1.0),
]


def test_olmo2_ratings_ties_and_malformed_turns(tmp_path):
    pairs, ctx = _run("olmo-2", _parquet(tmp_path / "olmo.parquet", OLMO_ROWS), tmp_path)
    assert [(p.id, p.prompt, p.chosen, p.rejected, p.category) for p in pairs] == [
        ("olmo-2:0:o0", "Q", "yes", "no", "src-a"),
        ("olmo-2:3:o3", "R", "up", "down", "src-b"),
    ]
    assert ctx.stats(2)["skipped"] == {
        "chosen rated below rejected": 1,
        "malformed message": 1,
        "tied ratings": 1,
        "turns do not alternate user/assistant": 1,
    }
    with pytest.raises(DataError, match="not in the OLMo 2 preference mix layout"):
        list(get_adapter("olmo-2").read(str(_jsonl(tmp_path / "x.jsonl", UF_ROWS[:1])), SourceContext("o")))


# -------------------------------------------------------------------------------------- swe-arena


def _state(messages, offset=0, roles=("Human", "Assistant")):
    return {"chat_mode": "battle_anony", "chat_session_id": "s", "conv_id": "c", "messages": messages,
            "model_name": "m", "offset": offset, "roles": list(roles)}


def _battle(k, vote_type, type_, a_msgs, b_msgs, offset=0):
    return {
        "type": type_,
        "feedback": {"correctness": "", "efficiency": "", "explainability": "", "maintainability": "",
                     "ui_ux_design": "", "vote_type": vote_type},
        "models": {"model_A": "mA", "model_B": "mB"},
        "chat_session_id": f"s{k}",
        "instruction": "write x",
        "states": {"model_A": _state(a_msgs, offset), "model_B": _state(b_msgs, offset)},
    }


FEW_SHOT = [["Human", "example?"], ["Assistant", "example."]]
ARENA_ROWS = [
    _battle(0, "", "leftvote", [["Human", "write x"], ["Assistant", "code A"]], [["Human", "write x"], ["Assistant", "code B"]]),
    _battle(1, "vote_model_B", "rightvote", FEW_SHOT + [["Human", "sort"], ["Assistant", "bubble"]],
            FEW_SHOT + [["Human", "sort"], ["Assistant", "merge"]], offset=2),
    _battle(2, "", "tievote", [["Human", "q"], ["Assistant", "a"]], [["Human", "q"], ["Assistant", "b"]]),
    _battle(3, "vote_both_bad", "bothbad_vote", [["Human", "q"], ["Assistant", "a"]], [["Human", "q"], ["Assistant", "b"]]),
    _battle(4, "", "leftvote", [["Human", "q"], ["Assistant", "a1"], ["Human", "more"], ["Assistant", "a2"]],
            [["Human", "q"], ["Assistant", "b1"], ["Human", "more"], ["Assistant", "b2"]]),
    _battle(5, "", "share", [["Human", "q"], ["Assistant", "a"]], [["Human", "q"], ["Assistant", "b"]]),
    _battle(6, "", "leftvote", [["Human", "q"], ["Assistant", None]], [["Human", "q"], ["Assistant", "b"]]),
]


def test_swe_arena_votes_make_pairs_ties_and_both_bad_skipped(tmp_path):
    pairs, ctx = _run("swe-arena", _parquet(tmp_path / "arena.parquet", ARENA_ROWS), tmp_path)
    assert [(p.id, p.prompt, p.chosen, p.rejected, p.history) for p in pairs] == [
        ("swe-arena:0:s0", "write x", "code A", "code B", ()),
        ("swe-arena:1:s1", "sort", "merge", "bubble", ()),  # the few-shot turns before `offset` are not the prompt
    ]
    assert ctx.stats(2) == {
        "rows": 7,
        "pairs": 2,
        "skipped": {
            "both-bad vote": 1,
            "conversations differ before the final response": 1,
            "empty response": 1,
            "no recognised vote": 1,
            "tie vote": 1,
        },
    }


# ---------------------------------------------------------------------------------------- HH-RLHF


def test_hh_rlhf_adapter_counts_skips_and_names_the_subset(tmp_path):
    prefix = "\n\nHuman: Is it safe?\n\nAssistant:"
    path = tmp_path / "helpful-base" / "train.jsonl.gz"
    path.parent.mkdir()
    rows = [
        {"chosen": prefix + " Yes, mostly.", "rejected": prefix + " No idea."},
        {"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: b\n\nAssistant: y"},
        {"chosen": prefix + " same", "rejected": prefix + " same"},
    ]
    with gzip.open(path, "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    pairs, ctx = _run("hh-rlhf", tmp_path / "helpful-base", tmp_path)
    assert [(p.id, p.prompt, p.chosen, p.rejected, p.category) for p in pairs] == [
        ("hh-rlhf:0", "Human: Is it safe?\n\nAssistant:", "Yes, mostly.", "No idea.", "helpful-base"),
    ]
    assert ctx.skipped == {"dialogues differ before the final Assistant turn": 1, "identical responses": 1}


def test_hh_rlhf_adapter_matches_the_reader_on_the_shared_file(tmp_path):
    try:
        shared = default_hh_path()
    except DataError:
        pytest.skip("shared HH-RLHF file not present")
    pairs, ctx = _run("hh-rlhf", shared, tmp_path)
    reference = load_hh_rlhf(shared, log=lambda _m: None)
    assert ctx.rows == 1800 and len(pairs) == len(reference) == ctx.rows - sum(ctx.skipped.values())
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [(r.prompt, r.chosen, r.rejected) for r in reference]
    assert {p.category for p in pairs} == {"harmless-base"}
