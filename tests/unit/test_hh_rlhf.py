"""HH-RLHF reader: dialogue splitting, truncation, the seeded split (synthetic and shared file)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from basereward.data.pairs import load_pairs
from basereward.data.sources.hh_rlhf import (
    HH_FILE,
    default_hh_path,
    hh_rlhf_split,
    load_hh_rlhf,
    split_hh_dialogue,
    truncate_dialogue,
    write_hh_split,
)
from basereward.errors import DataError

PREFIX = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How do I pick a lock?\n\nAssistant:"


def _quiet(_msg: str) -> None:
    pass


def test_split_dialogue_keeps_shared_prefix_and_last_turns():
    prompt, chosen, rejected = split_hh_dialogue(
        PREFIX + " I can't help with that. ", PREFIX + " Use a tension wrench."
    )
    assert (
        prompt
        == "Human: Hi there\n\nAssistant: Hello!\n\nHuman: How do I pick a lock?\n\nAssistant:"
    )
    assert (chosen, rejected) == ("I can't help with that.", "Use a tension wrench.")


@pytest.mark.parametrize(
    "chosen, rejected, reason",
    [
        ("\n\nHuman: hi", "\n\nHuman: hi\n\nAssistant: yo", "no Assistant turn"),
        (
            "\n\nHuman: a\n\nAssistant: x",
            "\n\nHuman: b\n\nAssistant: y",
            "dialogues differ before the final Assistant turn",
        ),
        (PREFIX + "   ", PREFIX + " ok", "empty final response"),
        (PREFIX + " same", PREFIX + " same  ", "identical responses"),
    ],
)
def test_split_dialogue_rejects_unusable_rows(chosen, rejected, reason):
    with pytest.raises(ValueError, match=reason):
        split_hh_dialogue(chosen, rejected)


def test_truncate_dialogue_drops_oldest_turns():
    prompt = "Human: " + "a" * 50 + "\n\nAssistant: " + "b" * 50 + "\n\nHuman: last?\n\nAssistant:"
    assert truncate_dialogue(prompt, 1000) == prompt
    assert truncate_dialogue(prompt, 64) == "Human: last?\n\nAssistant:"
    long_last = "Human: " + "x" * 200 + "\n\nAssistant:"
    cut = truncate_dialogue(long_last, 64)
    assert len(cut) == 64 and cut.startswith("Human: …x") and cut.endswith("x\n\nAssistant:")
    with pytest.raises(ValueError):
        truncate_dialogue(prompt, 10)


def _synthetic_file(tmp_path: Path, n: int = 50) -> Path:
    """n rows; every 10th has identical final turns and must be skipped."""
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for i in range(n):
            head = f"\n\nHuman: question {i}?\n\nAssistant:"
            bad = "answer" if i % 10 == 0 else f"bad answer {i}"
            fh.write(json.dumps({"chosen": f"{head} answer", "rejected": f"{head} {bad}"}) + "\n")
    return path


def test_split_on_synthetic_file(tmp_path):
    path = _synthetic_file(tmp_path)
    logged: list[str] = []
    train, val = hh_rlhf_split(path, val_fraction=0.2, seed=3, log=logged.append)
    assert logged == ["hh-rlhf: kept 45 of 50 rows (skipped: 5 identical responses)"]
    train_ids, val_ids = {p.id for p in train}, {p.id for p in val}
    assert not train_ids & val_ids
    assert train_ids | val_ids == {f"hh-harmless-{i}" for i in range(50) if i % 10}
    # 10 of the 50 row indices are drawn for validation; skipped rows stay skipped on either side.
    assert len(val) <= 10 and len(train) >= 35
    again = hh_rlhf_split(path, val_fraction=0.2, seed=3, log=_quiet)
    assert again == (train, val)
    assert hh_rlhf_split(path, val_fraction=0.2, seed=4, log=_quiet)[1] != val
    assert [p.id for p in train] == sorted(
        (p.id for p in train), key=lambda s: int(s.split("-")[-1])
    )
    p = train[0]
    assert (p.source, p.category, p.images) == ("hh-rlhf", "harmless", ())


def test_bad_raw_file_reports_line(tmp_path):
    path = tmp_path / "hh.jsonl"
    path.write_text('{"chosen": "a", "rejected": "b"}\n{"chosen": 1}\n')
    with pytest.raises(DataError, match=r"hh\.jsonl:2: expected an object"):
        load_hh_rlhf(path, log=_quiet)
    with pytest.raises(DataError, match="file not found"):
        load_hh_rlhf(tmp_path / "none.jsonl.gz", log=_quiet)


# ---- the shared file ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hh_file(shared_data_path):
    path = shared_data_path(f"hh-rlhf/{HH_FILE}")
    # The loader's own search (used by the demo) must find a file where the tests find one.
    assert default_hh_path().is_file()
    return path


@pytest.fixture(scope="module")
def shared_split(hh_file):
    return hh_rlhf_split(hh_file, log=_quiet)


def test_shared_split_is_fixed(shared_split):
    train, val = shared_split
    # 1,800 rows: 2 whose dialogues differ before the last turn and 4 with an empty final
    # response are skipped; 360 (20%) row indices go to validation, one of them a skipped row.
    assert (len(train), len(val)) == (1435, 359)
    # The first indices of default_rng(0).permutation(1800): pinned so a machine or NumPy
    # version that permutes differently fails here instead of silently changing the split.
    val_ids = {p.id for p in val}
    assert {f"hh-harmless-{i}" for i in (360, 1776, 1484, 600, 850, 196, 968, 1745)} <= val_ids
    assert not val_ids & {p.id for p in train}
    assert len(val_ids | {p.id for p in train}) == 1794


def test_shared_split_content(shared_split):
    for p in shared_split[0] + shared_split[1]:
        assert p.prompt.startswith("Human:") and p.prompt.endswith("Assistant:")
        assert p.chosen == p.chosen.strip() and p.chosen and p.rejected
        assert "\n\nAssistant:" not in p.chosen and "\n\nAssistant:" not in p.rejected
        assert p.chosen != p.rejected


def test_shared_last_turns_match_raw_rows(shared_split, hh_file):
    with gzip.open(hh_file, "rt", encoding="utf-8") as fh:
        raw = [json.loads(line) for line in fh]
    for p in shared_split[1][:50]:
        row = raw[int(p.id.rsplit("-", 1)[1])]
        assert row["chosen"].endswith(p.chosen) and row["rejected"].endswith(p.rejected)
        assert row["chosen"].lstrip("\n").startswith(p.prompt)


def test_write_hh_split_round_trips(shared_split, hh_file, tmp_path):
    train_path, val_path = write_hh_split(tmp_path, hh_file, val_fraction=0.2, seed=0, log=_quiet)
    assert (train_path.name, val_path.name) == ("hh_train.jsonl", "hh_val.jsonl")
    assert load_pairs(train_path) == shared_split[0]
    assert load_pairs(val_path) == shared_split[1]
