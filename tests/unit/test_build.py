"""`data build`: a recipe of fixture sources in their published schemas + the shared HH-RLHF
file -> Arrow directory + stats.json, checked against hand counts; training reads it lazily."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from basereward.data.build import (
    Recipe,
    build,
    list_adapters,
    load_recipe,
    pair_length,
    parse_recipe,
)
from basereward.data.built import BuiltPairs, Subset, pair_lengths
from basereward.data.sources.hh_rlhf import default_hh_path, load_hh_rlhf
from basereward.errors import ConfigError, DataError


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _fixtures(tmp: Path) -> dict[str, str]:
    """Three sources in their published row schemas; hand counts in the comments."""
    for name, colour in (("a.png", "red"), ("b.png", "blue"), ("c.png", "green")):
        Image.new("RGB", (8, 8), colour).save(tmp / name)
    # RLAIF-V (JSONL export, `image` as a path): 6 rows -> 1 skipped (no image), 5 pairs made,
    # of which row 4 repeats row 0 (other idx, same pair): 4 pairs after dedup, all multimodal.
    # chosen longer in rows 0, 1; shorter in 2, 3.
    rv = [
        {"ds_name": "RLAIF-V", "image": "a.png", "question": "What is red?", "chosen": "The square is red here.",
         "rejected": "Blue.", "origin_dataset": "coco", "origin_split": "train", "idx": 0, "image_path": "a.png"},
        {"ds_name": "RLAIF-V", "image": "b.png", "question": "Colour?", "chosen": "It is blue, clearly.",
         "rejected": "Red.", "origin_dataset": "vqav2", "origin_split": "train", "idx": 1, "image_path": "b.png"},
        {"ds_name": "RLAIF-V", "image": "c.png", "question": "Colour?", "chosen": "Green.",
         "rejected": "It is a purple square.", "origin_dataset": "coco", "origin_split": "train", "idx": 2, "image_path": "c.png"},
        {"ds_name": "RLAIF-V", "image": "a.png", "question": "Shape?", "chosen": "Square.",
         "rejected": "A large circle.", "origin_dataset": "coco", "origin_split": "train", "idx": 3, "image_path": "a.png"},
        {"ds_name": "RLAIF-V", "image": "a.png", "question": "What is red?", "chosen": "The square is red here.",
         "rejected": "Blue.", "origin_dataset": "coco", "origin_split": "train", "idx": 4, "image_path": "a.png"},
        {"ds_name": "RLAIF-V", "image": None, "question": "Colour?", "chosen": "x", "rejected": "y",
         "origin_dataset": "coco", "origin_split": "train", "idx": 5, "image_path": ""},
    ]
    # SHP: 4 rows -> 1 skipped (label 2), 3 pairs; labels 1 -> A preferred, 0 -> B.
    shp = [
        {"post_id": f"p{i}", "domain": "askscience_train", "upvote_ratio": 0.9, "history": h, "c_root_id_A": f"a{i}",
         "c_root_id_B": f"b{i}", "created_at_utc_A": 1, "created_at_utc_B": 2, "score_A": sa, "score_B": sb,
         "human_ref_A": a, "human_ref_B": b, "labels": lab, "seconds_difference": 1.0, "score_ratio": 2.0}
        for i, (h, a, b, lab, sa, sb) in enumerate([
            ("Why is the sky blue?", "Rayleigh scattering of sunlight.", "Magic.", 1, 10, 5),
            ("Why do cats purr?", "No idea, I never thought about it.", "Larynx muscles.", 0, 3, 6),
            ("Is water wet?", "Depends on the definition of wet.", "Yes.", 1, 8, 4),
            ("Bad label?", "A", "B", 2, 1, 1),
        ])
    ]

    def completion(resp: str, score) -> dict:
        return {"model": "m", "principle": "helpfulness", "custom_system_prompt": "", "response": resp,
                "annotations": {}, "critique": "", "overall_score": score, "fine-grained_score": score}

    # UltraFeedback (hard): row 0 -> 1 pair (8.5 vs 2.0); row 1 -> only one scored completion: skipped.
    uf = [
        {"source": "evol", "instruction": "Write a haiku.", "models": ["m"] * 3, "correct_answers": [],
         "incorrect_answers": [], "completions": [completion("Autumn moon rises", 6.0),
                                                  completion("Leaves fall, silent pond", 8.5),
                                                  completion("haiku", 2.0)]},
        {"source": "evol", "instruction": "Say hi.", "models": ["m"] * 2, "correct_answers": [],
         "incorrect_answers": [], "completions": [completion("hi", 7.0), completion("hello", "N/A")]},
    ]
    return {"rlaif-v": _jsonl(tmp / "rlaif.jsonl", rv), "shp": _jsonl(tmp / "shp.jsonl", shp),
            "ultrafeedback": _jsonl(tmp / "uf.jsonl", uf)}


def _recipe(paths: dict[str, str], **top) -> Recipe:
    srcs = [{"adapter": "rlaif-v", "path": paths["rlaif-v"]}, {"adapter": "shp", "path": paths["shp"]},
            {"adapter": "ultrafeedback", "path": paths["ultrafeedback"], "construction": "hard"}]
    if "hh" in paths:
        srcs.append({"adapter": "hh-rlhf", "path": paths["hh"]})
    return parse_recipe({"seed": 3, "sources": srcs, **top})


def test_recipe_of_three_sources_and_hh_rlhf_matches_hand_counts(tmp_path):
    paths = _fixtures(tmp_path)
    paths["hh"] = str(default_hh_path())
    hh = load_hh_rlhf(paths["hh"], log=lambda _: None)  # the reader the adapter must agree with
    hh_unique = len({(p.prompt, p.chosen, p.rejected) for p in hh})
    out = tmp_path / "built"
    stats = build(_recipe(paths, validation=4, order_balance=True), out, log=lambda _: None)

    s = stats["sources"]
    assert (s["rlaif-v"]["rows"], s["rlaif-v"]["made"], s["rlaif-v"]["skipped"]) == (6, 5, {"missing image": 1})
    assert s["rlaif-v"]["dropped"]["duplicate"] == 1 and s["rlaif-v"]["pairs"] == 4
    assert (s["shp"]["rows"], s["shp"]["made"], s["shp"]["pairs"], s["shp"]["skipped"]) == \
        (4, 3, 3, {"label is not 0 or 1": 1})
    assert (s["ultrafeedback"]["rows"], s["ultrafeedback"]["pairs"], s["ultrafeedback"]["skipped"]) == \
        (2, 1, {"fewer than 2 scored completions": 1})
    assert (s["hh-rlhf"]["rows"], s["hh-rlhf"]["made"], s["hh-rlhf"]["pairs"]) == (1800, len(hh), hh_unique)
    total = 4 + 3 + 1 + hh_unique
    assert (stats["pairs"], stats["train"], stats["validation"]) == (total, total - 4, 4)
    assert (stats["multimodal"], stats["text"]) == (4, total - 4)
    # 4 validation pairs over 4 sources: one each.
    assert [s[n]["validation"] for n in ("rlaif-v", "shp", "ultrafeedback", "hh-rlhf")] == [1, 1, 1, 1]
    # Length statistics of RLAIF-V after dedup: chosen longer in 2 of 4; mean lengths by hand.
    assert s["rlaif-v"]["length"]["chosen_longer"] == 0.5
    assert s["rlaif-v"]["length"]["mean_chosen_len"] == (23 + 20 + 6 + 7) / 4
    assert s["rlaif-v"]["length_before"]["n"] == 5

    assert json.loads((out / "stats.json").read_text()) == stats
    summary = (out / "summary.md").read_text()
    assert "| rlaif-v | 6 | 5 | 1 |" in summary and "missing image" in summary

    train, val = BuiltPairs(out), BuiltPairs(out, "validation")
    assert (len(train), len(val)) == (total - 4, 4)
    import datasets

    col = datasets.load_from_disk(str(out / "train"))
    assert int(np.sum(col["swapped"])) == (total - 4) // 2  # answer-order balance: exactly half
    assert list(train.lengths()) == [pair_length(p) for p in train]
    mm = [p for p in list(train) + list(val) if p.images]
    assert len(mm) == 4 and all(Path(i).is_file() and Path(i).parent == tmp_path for p in mm for i in p.images)
    by_id = {p.id: p for p in list(train) + list(val)}
    assert by_id["rlaif-v:3"].chosen == "Square." and by_id["rlaif-v:3"].category == "coco"
    assert "rlaif-v:4" not in by_id  # the duplicate of row 0


def test_sizes_and_text_ratio_hand_counts(tmp_path):
    paths = _fixtures(tmp_path)
    # After dedup: rlaif-v 4 MM, shp 3 text, ultrafeedback 1 text. text_ratio 0.5 -> 2 text pairs,
    # split 3:1 by largest remainders (1.5, 0.5 -> tie to the earlier source): shp 2, uf 0.
    stats = build(_recipe(paths, text_ratio=0.5), tmp_path / "o1", log=lambda _: None)
    got = {n: (v["pairs"], v["dropped"].get("text_ratio")) for n, v in stats["sources"].items()}
    assert got == {"rlaif-v": (4, 0), "shp": (2, 1), "ultrafeedback": (0, 1)}
    assert stats["text_per_multimodal"] == 0.5
    # count / fraction / share: rlaif-v count 3 of 4, shp fraction 2/3 of 3 = 2, uf share of total 5 -> asks 5, has 1.
    r = parse_recipe({"total": 5, "sources": [
        {"adapter": "rlaif-v", "path": paths["rlaif-v"], "count": 3},
        {"adapter": "shp", "path": paths["shp"], "fraction": 2 / 3},
        {"adapter": "ultrafeedback", "path": paths["ultrafeedback"], "share": 1.0}]})
    stats = build(r, tmp_path / "o2", log=lambda _: None)
    assert {n: v["pairs"] for n, v in stats["sources"].items()} == {"rlaif-v": 3, "shp": 2, "ultrafeedback": 1}
    assert stats["sources"]["ultrafeedback"]["requested"] == 5
    assert "ultrafeedback (1 of 5)" in (tmp_path / "o2" / "summary.md").read_text()
    # Same recipe, same seed: the same pairs.
    again = build(r, tmp_path / "o3", log=lambda _: None)
    assert [p.id for p in BuiltPairs(tmp_path / "o2")] == [p.id for p in BuiltPairs(tmp_path / "o3")]
    assert again == stats


def test_length_target_per_source(tmp_path):
    paths = _fixtures(tmp_path)
    # SHP: chosen longer in rows 0 and 2, shorter in row 1 (2 of 3). Target 0.5 keeps 1 longer + the
    # shorter one; RLAIF-V is at 2 of 4 already. UltraFeedback (one pair, chosen longer) has no target:
    # a source with only one side cannot be balanced (an error, tested in test_curation).
    srcs = [{"adapter": "rlaif-v", "path": paths["rlaif-v"], "length_target": 0.5},
            {"adapter": "shp", "path": paths["shp"], "length_target": 0.5},
            {"adapter": "ultrafeedback", "path": paths["ultrafeedback"]}]
    stats = build(parse_recipe({"length_tolerance": 0.0, "sources": srcs}), tmp_path / "o", log=lambda _: None)
    assert stats["sources"]["shp"]["length_before"]["chosen_longer"] == round(2 / 3, 4)
    assert stats["sources"]["shp"]["dropped"]["length"] == 1
    assert stats["sources"]["shp"]["length"]["chosen_longer"] == 0.5
    assert stats["sources"]["rlaif-v"]["dropped"]["length"] == 0
    assert "length" not in stats["sources"]["ultrafeedback"]["dropped"]


def test_recipe_errors(tmp_path):
    paths = _fixtures(tmp_path)
    with pytest.raises(ConfigError, match="unknown key"):
        parse_recipe({"sources": [], "mix": 1})
    with pytest.raises(ConfigError, match="unknown dataset adapter 'nope'"):
        parse_recipe({"sources": [{"adapter": "nope", "path": "x"}]})
    with pytest.raises(ConfigError, match="at most one of count / fraction / share"):
        parse_recipe({"sources": [{"adapter": "shp", "path": "x", "count": 1, "fraction": 0.5}]})
    with pytest.raises(ConfigError, match="needs a top-level `total`"):
        parse_recipe({"sources": [{"adapter": "shp", "path": "x", "share": 0.5}]})
    with pytest.raises(ConfigError, match="used twice"):
        parse_recipe({"sources": [{"adapter": "shp", "path": "x"}, {"adapter": "shp", "path": "y"}]})
    with pytest.raises(ConfigError, match="text_ratio must be a number"):
        parse_recipe({"text_ratio": "half", "sources": [{"adapter": "shp", "path": "x"}]})
    # A relative path is taken from the recipe's folder; adapter options pass through.
    (tmp_path / "r.yaml").write_text("sources:\n  - {adapter: shp, path: shp.jsonl, min_score_ratio: 2}\n")
    r = load_recipe(tmp_path / "r.yaml")
    assert r.sources[0].path == str(tmp_path / "shp.jsonl") and r.sources[0].options == {"min_score_ratio": 2}
    # A failed build leaves no output and no temporary directory.
    bad = parse_recipe({"text_ratio": 0.5, "sources": [{"adapter": "shp", "path": paths["shp"]}]})
    with pytest.raises(DataError, match="needs multimodal pairs"):
        build(bad, tmp_path / "never", log=lambda _: None)
    assert not any(p.name.startswith((".never", "never")) for p in tmp_path.iterdir())


def test_adapters_listed():
    names = [n for n, _, _ in list_adapters()]
    for name in ("rlaif-v", "mmpr", "mm-rlhf", "mmif", "omni-align", "ultrafeedback", "shp", "tulu-3",
                 "wildchat", "olmo-2", "swe-arena", "hh-rlhf"):
        assert name in names


def test_training_reads_a_build_lazily(tmp_path):
    from basereward.config.schema import DataConfig
    from basereward.data.pairs import save_pairs
    from basereward.training.data import load_training_data
    from basereward.training.plan import MicroBatches, StepPlan

    paths = _fixtures(tmp_path)
    build(_recipe(paths, validation=2), tmp_path / "b", log=lambda _: None)
    train, val = load_training_data(DataConfig(train=(str(tmp_path / "b"),), validation=str(tmp_path / "b")), seed=0)
    assert isinstance(train, BuiltPairs) and (len(train), len(val)) == (6, 2)
    lengths = pair_lengths(train)
    assert lengths.dtype.kind == "i" and list(lengths) == [pair_length(p) for p in train]
    plan = StepPlan(len(train), 2, 1, 1, seed=0, lengths=lengths)
    got = MicroBatches(plan, train, lambda groups: groups, rank=0, start_step=0, end_step=3)
    seen = [g for k in range(len(got)) for g in got[k]]
    assert len(seen) == 6 and {g.prompt for g in seen} == {p.prompt for p in train}
    # A build and a JSONL file together; a cap keeps a lazy seeded subset.
    save_pairs(list(val), tmp_path / "extra.jsonl")
    dc = DataConfig(train=(str(tmp_path / "b"), str(tmp_path / "extra.jsonl")), max_pairs=5)
    capped, _ = load_training_data(dc, seed=0)
    assert isinstance(capped, Subset) and len(capped) == 5
    assert list(capped.lengths()) == [pair_length(p) for p in (capped[i] for i in range(5))]
    with pytest.raises(ConfigError, match="in its recipe"):
        load_training_data(DataConfig(train=(str(tmp_path / "b"),), text_ratio=0.5), seed=0)


def test_pair_length_is_the_scorers_length_estimate():
    from basereward.data.schema import PreferencePair
    from basereward.scoring import length_estimate

    p = PreferencePair(id="x", prompt="abc", chosen="long answer", rejected="no", images=("/i.png",),
                       history=(("user", "hi"), ("assistant", "hello")))
    assert pair_length(p) == length_estimate(p.to_group()) == 2 + 5 + 3 + 11 + 1000


def test_cli_build_and_adapters(tmp_path, capsys):
    from basereward.cli import main

    paths = _fixtures(tmp_path)
    (tmp_path / "r.yaml").write_text(
        f"seed: 1\nsources:\n  - {{adapter: shp, path: {paths['shp']}}}\n  - {{adapter: rlaif-v, path: rlaif.jsonl}}\n")
    assert main(["data", "build", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "o")]) == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert (stats["pairs"], stats["multimodal"], stats["text"]) == (7, 4, 3)
    assert main(["data", "adapters"]) == 0
    assert "rlaif-v" in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text("sources:\n  - {adapter: nope, path: x}\n")
    assert main(["data", "build", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "x")]) == 2
    assert "unknown dataset adapter 'nope'" in capsys.readouterr().err
