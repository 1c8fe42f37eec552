"""Benchmark metrics against hand-derived numbers, load() round trips and the eval runner.

Every metric test lists its items and scores in a table and works the expected numbers out in
comments. "Correct" always means strictly greater: each table includes ties, which count as wrong.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from basereward.data.schema import Group
from basereward.errors import ConfigError, DataError
from basereward.eval import format_table, get_benchmark, run_benchmark
from basereward.eval.benchmarks import BenchItem, canonical_name, rewardbench, rm_bench
from basereward.eval.benchmarks import mm_rlhf_reward_bench as mmrlhf
from basereward.eval.benchmarks import multimodal_rewardbench as mmrb
from basereward.eval.benchmarks import pairs as pairs_bench
from basereward.eval.benchmarks import vl_rewardbench as vlrb
from basereward.eval.runner import _score_line
from basereward.scoring import ScoreShapeError
from basereward.scoring.interface import NonFiniteRewardError


def pair(item_id: str, preferred: int = 0, **meta) -> BenchItem:
    """A two-response item; the prompt is the id so fake scorers can look scores up."""
    return BenchItem(
        id=item_id,
        group=Group(prompt=item_id, responses=("first", "second")),
        meta={"preferred": preferred, **meta},
    )


def png_bytes(color=(255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (2, 2), color).save(buf, format="PNG")
    return buf.getvalue()


class TableScorer:
    """Fake Scorer: returns preset rewards looked up by the group's prompt."""

    def __init__(self, table: dict[str, list[float]]):
        self.table = table
        self.calls: list[int] = []

    def score_groups(self, groups):
        self.calls.append(len(groups))
        return [list(self.table[g.prompt]) for g in groups]


class FuncScorer:
    """Fake Scorer: reward = fn(response)."""

    def __init__(self, fn):
        self.fn = fn

    def score_groups(self, groups):
        return [[self.fn(r) for r in g.responses] for g in groups]


# ---------------------------------------------------------------------------------------------
# Registry


def test_registry_names_and_aliases():
    assert canonical_name("VL-RewardBench") == "vl_rewardbench"
    assert canonical_name("rm-bench") == "rm_bench"
    assert canonical_name("MM-RLHF-Reward-Bench") == "mm_rlhf_reward_bench"
    assert get_benchmark("rewardbench") is rewardbench
    for name in (
        "vl_rewardbench",
        "multimodal_rewardbench",
        "mm_rlhf_reward_bench",
        "rewardbench",
        "rm_bench",
        "pairs",
    ):
        module = get_benchmark(name)
        assert module.NAME == name
        assert module.DEFINITION.endswith(".")
    with pytest.raises(ConfigError, match="unknown benchmark"):
        get_benchmark("imagenet")


# ---------------------------------------------------------------------------------------------
# VL-RewardBench


def test_vl_rewardbench_groups_by_id_prefix_case_insensitive():
    assert vlrb.group_of("RLAIF-V_12") == "Hallucination"
    assert vlrb.group_of("rlhf-v-3") == "Hallucination"
    assert vlrb.group_of("Hallucination_pair_9") == "Hallucination"
    assert vlrb.group_of("MathVerse_1") == "Reasoning"
    assert vlrb.group_of("mmmu_pro_4") == "Reasoning"
    assert vlrb.group_of("wildvision_7") == "General"
    assert vlrb.group_of("vlfeedback_2") == "General"


def test_vl_rewardbench_metrics_hand_computed():
    # id                   group          preferred  scores      correct?
    # RLAIF-V_1            Hallucination  0          [2, 1]      yes
    # hallucination_pair_3 Hallucination  1          [0.5, 0.5]  no (tie)
    # rlhf-v-7             Hallucination  1          [0, 3]      yes
    # mathverse_12         Reasoning      0          [1, 2]      no
    # MMMU_pro_5           Reasoning      0          [5, 1]      yes
    # wildvision_9         General        1          [1, 0]      no
    # vlfeedback_4         General        0          [3, -1]     yes
    # general_2            General        0          [1, 1]      no (tie)
    # wildvision_10        General        1          [2, 2]      no (tie)
    # Hallucination 2/3, Reasoning 1/2, General 1/4
    # Overall (micro) = (2 + 1 + 1) / 9 = 4/9
    # Macro = (2/3 + 1/2 + 1/4) / 3 = (8/12 + 6/12 + 3/12) / 3 = 17/36
    table = [
        ("RLAIF-V_1", 0, [2, 1]),
        ("hallucination_pair_3", 1, [0.5, 0.5]),
        ("rlhf-v-7", 1, [0, 3]),
        ("mathverse_12", 0, [1, 2]),
        ("MMMU_pro_5", 0, [5, 1]),
        ("wildvision_9", 1, [1, 0]),
        ("vlfeedback_4", 0, [3, -1]),
        ("general_2", 0, [1, 1]),
        ("wildvision_10", 1, [2, 2]),
    ]
    items = [pair(i, p, group=vlrb.group_of(i)) for i, p, _ in table]
    m = vlrb.metrics(items, [s for _, _, s in table])
    assert m["Hallucination"] == pytest.approx(2 / 3)
    assert m["Reasoning"] == pytest.approx(1 / 2)
    assert m["General"] == pytest.approx(1 / 4)
    assert m["Overall Accuracy"] == pytest.approx(4 / 9)
    assert m["Macro Average Accuracy"] == pytest.approx(17 / 36)
    assert m["counts"] == {"General": 4, "Hallucination": 3, "Reasoning": 2}


def _vl_parquet(path: Path, rows: list[dict]) -> None:
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("query", pa.string()),
            ("response", pa.list_(pa.string())),
            ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            ("human_ranking", pa.list_(pa.int64())),
            ("query_source", pa.string()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def test_vl_rewardbench_load_parquet_round_trip(tmp_path):
    (tmp_path / "data").mkdir()
    Image.new("RGB", (3, 1)).save(tmp_path / "data" / "pic.png")
    rows = [
        {
            "id": "RLHF-V_x",
            "query": "What is shown?",
            "response": ["a cat", "a dog"],
            "image": {"bytes": png_bytes(), "path": "x.png"},
            "human_ranking": [1, 0],
            "query_source": "rlhf-v",
        },
        {
            # No bytes: the image is found by its path beside the parquet file.
            "id": "mathverse_1",
            "query": "Solve.",
            "response": ["4", "5"],
            "image": {"bytes": None, "path": "pic.png"},
            "human_ranking": [0, 1],
            "query_source": "mathverse",
        },
    ]
    _vl_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", rows)

    items = vlrb.load(str(tmp_path))  # a directory is searched recursively
    assert [i.id for i in items] == ["RLHF-V_x", "mathverse_1"]
    first, second = items
    assert first.group.prompt == "What is shown?"
    assert first.group.responses == ("a cat", "a dog")
    assert first.meta["preferred"] == 1 and first.meta["group"] == "Hallucination"
    assert first.meta["query_source"] == "rlhf-v"
    assert first.group.images[0].size == (2, 2)  # PIL image from the bytes
    assert second.meta["preferred"] == 0 and second.meta["group"] == "Reasoning"
    assert second.group.images == (str((tmp_path / "data" / "pic.png").resolve()),)


def test_vl_rewardbench_bad_input(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        vlrb.load(str(tmp_path / "missing.parquet"))
    bad = tmp_path / "bad.parquet"
    row = {
        "id": "a",
        "query": "q",
        "response": ["x", "y"],
        "image": {"bytes": png_bytes(), "path": None},
        "human_ranking": [0, 0],
        "query_source": "s",
    }
    _vl_parquet(bad, [row])
    with pytest.raises(DataError, match=r"bad\.parquet: row 0 \(id a\): human_ranking"):
        vlrb.load(str(bad))
    row.update(human_ranking=[0, 1], image={"bytes": None, "path": "nowhere.png"})
    _vl_parquet(bad, [row])
    with pytest.raises(DataError, match="nowhere.png does not exist"):
        vlrb.load(str(bad))
    pq.write_table(pa.table({"id": ["a"]}), bad)
    with pytest.raises(DataError, match="missing field 'query'"):
        vlrb.load(str(bad))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no \\*.parquet files"):
        vlrb.load(str(tmp_path / "empty"))


# ---------------------------------------------------------------------------------------------
# Multimodal RewardBench


def test_multimodal_rewardbench_columns():
    assert mmrb.column_of("open_generation/correctness_task", "nocaps_1") == "General Correctness"
    assert mmrb.column_of("open_generation/preference_task", "visitbench_2") == "General Preference"
    assert mmrb.column_of("knowledge", "mmmu-s_3") == "Knowledge"
    assert mmrb.column_of("reasoning", "mathvista_4") == "Reasoning (Math)"
    assert mmrb.column_of("reasoning", "EMMA-Coding_5") == "Reasoning (Coding)"
    assert mmrb.column_of("reasoning", "image2struct_6") == "Reasoning (Coding)"
    assert mmrb.column_of("reasoning/math", "x") == "Reasoning (Math)"
    assert mmrb.column_of("safety", "PAIRS_7") == "Safety (Bias)"
    assert mmrb.column_of("safety", "hateful_8") == "Safety (Toxicity)"
    assert mmrb.column_of("safety/toxicity", "pairs_9") == "Safety (Toxicity)"
    assert mmrb.column_of("vqa", "MMBench_1") == "VQA"
    assert mmrb.column_of("correctness/long", "x") == "General Correctness"
    assert mmrb.column_of("poetry", "x") is None


def test_multimodal_rewardbench_metrics_hand_computed():
    # id              category                          preferred scores   column              correct?
    # nocaps_1        open_generation/correctness_task  0        [2, 1]    General Correctness yes
    # visitbench_2    open_generation/correctness_task  1        [1, 1]    General Correctness no (tie)
    # visitbench_3    open_generation/preference_task   0        [0, 1]    General Preference  no
    # mmmu-s_4        knowledge                         1        [0, 1]    Knowledge           yes
    # mathvista_5     reasoning                         0        [3, 2]    Reasoning (Math)    yes
    # EMMA-Coding_6   reasoning                         0        [1, 2]    Reasoning (Coding)  no
    # image2struct_7  reasoning                         1        [1, 2]    Reasoning (Coding)  yes
    # pairs_8         safety                            0        [1, 0]    Safety (Bias)       yes
    # pairs_9         safety                            0        [0, 1]    Safety (Bias)       no
    # hateful_10      safety/toxicity                   1        [4, 4]    Safety (Toxicity)   no (tie)
    # MMBench_11      vqa                               1        [1, 2]    VQA                 yes
    # Overall = 6 correct / 11
    # Reasoning = mean(1/1, 1/2) = 0.75 (pooling would give 2/3); Safety = mean(1/2, 0/1) = 0.25
    table = [
        ("nocaps_1", "open_generation/correctness_task", 0, [2, 1]),
        ("visitbench_2", "open_generation/correctness_task", 1, [1, 1]),
        ("visitbench_3", "open_generation/preference_task", 0, [0, 1]),
        ("mmmu-s_4", "knowledge", 1, [0, 1]),
        ("mathvista_5", "reasoning", 0, [3, 2]),
        ("EMMA-Coding_6", "reasoning", 0, [1, 2]),
        ("image2struct_7", "reasoning", 1, [1, 2]),
        ("pairs_8", "safety", 0, [1, 0]),
        ("pairs_9", "safety", 0, [0, 1]),
        ("hateful_10", "safety/toxicity", 1, [4, 4]),
        ("MMBench_11", "vqa", 1, [1, 2]),
    ]
    items = [pair(i, p, column=mmrb.column_of(c, i), category=c) for i, c, p, _ in table]
    m = mmrb.metrics(items, [s for *_, s in table])
    assert m["Overall"] == pytest.approx(6 / 11)
    assert m["General Correctness"] == pytest.approx(1 / 2)
    assert m["General Preference"] == pytest.approx(0.0)
    assert m["Knowledge"] == pytest.approx(1.0)
    assert m["Reasoning (Math)"] == pytest.approx(1.0)
    assert m["Reasoning (Coding)"] == pytest.approx(1 / 2)
    assert m["Reasoning"] == pytest.approx(0.75)
    assert m["Safety (Bias)"] == pytest.approx(1 / 2)
    assert m["Safety (Toxicity)"] == pytest.approx(0.0)
    assert m["Safety"] == pytest.approx(0.25)
    assert m["VQA"] == pytest.approx(1.0)
    assert m["counts"]["Reasoning (Coding)"] == 2


def test_multimodal_rewardbench_empty_column_is_null():
    # Only one bias item, correct: toxicity has no items -> null, Safety = Safety (Bias) = 1.
    m = mmrb.metrics([pair("pairs_1", 0, column="Safety (Bias)")], [[1, 0]])
    assert m["Safety (Toxicity)"] is None and m["VQA"] is None
    assert m["Safety"] == pytest.approx(1.0) and m["Overall"] == pytest.approx(1.0)


def _mmrb_files(root: Path, records: list[dict]) -> Path:
    (root / "images" / "nocaps").mkdir(parents=True)
    (root / "images" / "nocaps" / "1.jpg").write_bytes(png_bytes())
    (root / "all_data.json").write_text(json.dumps(records))
    return root


def _mmrb_record(**kw) -> dict:
    rec = {
        "ID": "nocaps_1",
        "Text": "Describe the image.",
        "Image": "images/nocaps/1.jpg",
        "Output1": "a red square",
        "Output2": "a blue circle",
        "Better": "Output1",
        "Category": "open_generation/correctness_task",
    }
    rec.update(kw)
    return rec


def test_multimodal_rewardbench_load_round_trip(tmp_path):
    root = _mmrb_files(
        tmp_path / "data", [_mmrb_record(), _mmrb_record(ID="pairs_2", Better="Output2", Category="safety")]
    )
    for arg in (root, root / "all_data.json"):
        items = mmrb.load(str(arg))
        assert [i.id for i in items] == ["nocaps_1", "pairs_2"]
        assert items[0].group.prompt == "Describe the image."
        assert items[0].group.responses == ("a red square", "a blue circle")
        assert items[0].group.images == (str((root / "images/nocaps/1.jpg").resolve()),)
        assert items[0].meta == {
            "category": "open_generation/correctness_task",
            "column": "General Correctness",
            "preferred": 0,
        }
        assert items[1].meta["preferred"] == 1 and items[1].meta["column"] == "Safety (Bias)"


@pytest.mark.parametrize(
    "override, message",
    [
        ({"Image": "images/nocaps/404.jpg"}, r"item 0 \(ID nocaps_1\): image not found"),
        ({"Better": "Output3"}, "Better should be"),
        ({"Category": "poetry"}, "unknown Category 'poetry'"),
        ({"Text": None}, "missing field 'Text'"),
    ],
)
def test_multimodal_rewardbench_bad_records(tmp_path, override, message):
    root = _mmrb_files(tmp_path, [_mmrb_record(**override)])
    with pytest.raises(DataError, match=message):
        mmrb.load(str(root))


def test_multimodal_rewardbench_bad_json(tmp_path):
    (tmp_path / "all_data.json").write_text('[{"ID": 1,\n  oops]')
    with pytest.raises(DataError, match=r"all_data\.json:2: invalid JSON"):
        mmrb.load(str(tmp_path))


# ---------------------------------------------------------------------------------------------
# MM-RLHF-Reward Bench


def test_mm_rlhf_metrics_hand_computed():
    # question  category  scores (chosen, rejected)  correct?
    # q1        mcq       [2, 1]                     yes
    # q1        mcq       [3, 0]                     yes   -> q1 all correct
    # q2        mcq       [1, 1]                     no (tie) -> q2 not
    # q3        long      [1, 0]                     yes
    # q3        long      [0, 1]                     no
    # q3        long      [2, 1]                     yes   -> q3 not
    # q4        safety    [5, -5]                    yes   -> q4 all correct
    # Acc = 5/7; Acc+ = 2 of 4 questions (q1, q4) = 1/2
    # mcq: Acc 2/3, Acc+ 1/2 (q1 of q1, q2); long: Acc 2/3, Acc+ 0/1; safety: Acc 1, Acc+ 1
    table = [
        ("q1", "mcq", [2, 1]),
        ("q1", "mcq", [3, 0]),
        ("q2", "mcq", [1, 1]),
        ("q3", "long", [1, 0]),
        ("q3", "long", [0, 1]),
        ("q3", "long", [2, 1]),
        ("q4", "safety", [5, -5]),
    ]
    items = [pair(f"{q}#{k}", 0, question_id=q, category=c) for k, (q, c, _) in enumerate(table)]
    m = mmrlhf.metrics(items, [s for *_, s in table])
    assert m["Acc"] == pytest.approx(5 / 7)
    assert m["Acc+"] == pytest.approx(1 / 2)
    assert m["num_pairs"] == 7 and m["num_questions"] == 4
    pc = m["per_category"]
    assert set(pc) == {"mcq", "long", "safety"}
    assert pc["mcq"]["Acc"] == pytest.approx(2 / 3) and pc["mcq"]["Acc+"] == pytest.approx(1 / 2)
    assert pc["long"]["Acc"] == pytest.approx(2 / 3) and pc["long"]["Acc+"] == pytest.approx(0.0)
    assert pc["safety"]["Acc"] == pytest.approx(1.0) and pc["safety"]["Acc+"] == pytest.approx(1.0)
    assert pc["long"]["num_pairs"] == 3 and pc["long"]["num_questions"] == 1


def test_mm_rlhf_load_round_trip(tmp_path):
    (tmp_path / "images" / "mcq").mkdir(parents=True)
    (tmp_path / "images" / "mcq" / "a.png").write_bytes(png_bytes())
    clip = tmp_path / "video" / "clip1"
    clip.mkdir(parents=True)
    for k in range(3):
        Image.new("RGB", (2, 2), (k, k, k)).save(clip / f"f{k}.jpg")
    (clip / "notes.txt").write_text("not a frame")
    records = [
        {"id": "q1", "prompt": "Pick one.", "chosen": "A", "rejected": "B", "image": "mcq/a.png"},
        {"id": "q1", "prompt": "Pick one.", "chosen": "A", "rejected": "C", "image": "mcq/a.png"},
        {"id": "v1", "prompt": "What happens?", "chosen": "x", "rejected": "y", "video": "video/clip1"},
        {"id": 7, "prompt": "Hi", "chosen": "hello", "rejected": "go away", "category": "short"},
    ]
    file = tmp_path / "mm_reward_bench.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in records))

    items = mmrlhf.load(str(tmp_path), video_frames=4)
    assert [i.id for i in items] == ["q1#0", "q1#1", "v1#0", "7#0"]
    assert [i.meta["question_id"] for i in items] == ["q1", "q1", "v1", "7"]
    assert [i.meta["category"] for i in items] == ["mcq", "mcq", "video", "short"]
    # image found under images/ (the HF layout)
    assert items[0].group.images == (str((tmp_path / "images/mcq/a.png").resolve()),)
    assert items[0].group.responses == ("A", "B") and items[0].meta["preferred"] == 0
    # linspace(0, 2, 4) truncated to int = [0, 0, 1, 2]; the .txt is not a frame
    frames = [Path(p).name for p in items[2].group.images]
    assert frames == ["f0.jpg", "f0.jpg", "f1.jpg", "f2.jpg"]
    assert items[3].group.images == ()


def test_mm_rlhf_bad_input(tmp_path):
    file = tmp_path / "b.jsonl"
    file.write_text(
        json.dumps({"id": "a", "prompt": "p", "chosen": "c", "rejected": "r", "image": "misc/x.png"}) + "\n"
    )
    with pytest.raises(DataError, match=r"b\.jsonl:1 \(id a\): cannot tell the category"):
        mmrlhf.load(str(file))
    file.write_text(
        json.dumps({"id": "a", "prompt": "p", "chosen": "c", "rejected": "r", "category": "mcq"})
        + "\n"
        + json.dumps({"id": "b", "prompt": "p", "chosen": "c", "image": "mcq/x.png"})
        + "\n"
    )
    with pytest.raises(DataError, match=r"b\.jsonl:2 \(id b\): missing field 'rejected'"):
        mmrlhf.load(str(file))
    file.write_text(json.dumps({"id": "a", "prompt": "p", "chosen": "c", "rejected": "r", "image": "mcq/x.png"}) + "\n")
    with pytest.raises(DataError, match="image not found: mcq/x.png"):
        mmrlhf.load(str(file))
    with pytest.raises(DataError, match="no such file"):
        mmrlhf.load(str(tmp_path / "nope"))


# ---------------------------------------------------------------------------------------------
# RewardBench


def test_rewardbench_metrics_hand_computed():
    # subset                 scores per row (chosen, rejected)      accuracy
    # alpacaeval-easy        [2,1] [3,0]                            2/2 = 1
    # mt-bench-med           [1,0] [1,1] (tie)                      1/2
    # mt-bench-easy          [0,1]                                  0
    # llmbar-natural         [0,2]                                  0
    # mt-bench-hard          [5,4]                                  1
    # donotanswer            [1,0] [2,2] (tie)                      1/2
    # math-prm               [1,0]                                  1
    # hep-python             [0,1] [1,1] (tie)                      0
    # anthropic_helpful      [1,0]  (in no section)                 1
    # Sections weight by EXAMPLE_COUNTS, not by the rows present:
    # Chat      = (1*100 + 0.5*40 + 0*28) / (100 + 40 + 28) = 120/168 = 5/7
    # Chat Hard = (0*100 + 1*37) / (100 + 37) = 37/137
    # Safety    = 0.5 (one subset)
    # Reasoning = (1*984 + 0*164) / (984 + 164) = 984/1148 = 6/7
    #             (an unweighted subset mean would give 1/2: math-prm counts as all code)
    # Score     = (5/7 + 37/137 + 1/2 + 6/7) / 4
    rows = {
        "alpacaeval-easy": [[2, 1], [3, 0]],
        "mt-bench-med": [[1, 0], [1, 1]],
        "mt-bench-easy": [[0, 1]],
        "llmbar-natural": [[0, 2]],
        "mt-bench-hard": [[5, 4]],
        "donotanswer": [[1, 0], [2, 2]],
        "math-prm": [[1, 0]],
        "hep-python": [[0, 1], [1, 1]],
        "anthropic_helpful": [[1, 0]],
    }
    items, scores = [], []
    for subset, score_rows in rows.items():
        for k, s in enumerate(score_rows):
            items.append(pair(f"{subset}-{k}", 0, subset=subset))
            scores.append(s)
    m = rewardbench.metrics(items, scores)
    assert m["Chat"] == pytest.approx(5 / 7)
    assert m["Chat Hard"] == pytest.approx(37 / 137)
    assert m["Safety"] == pytest.approx(0.5)
    assert m["Reasoning"] == pytest.approx(6 / 7)
    assert m["Score"] == pytest.approx((5 / 7 + 37 / 137 + 0.5 + 6 / 7) / 4)
    assert m["subsets"]["mt-bench-med"] == pytest.approx(0.5)
    assert m["subsets"]["anthropic_helpful"] == pytest.approx(1.0)
    assert m["counts"]["hep-python"] == 2
    assert "sections_missing" not in m


def test_rewardbench_missing_sections_are_null():
    # Only Chat rows: the other sections are null and Score averages Chat alone.
    # alpacaeval-hard [1,0] correct, [0,0] tie -> 1/2 -> Chat = 1/2
    items = [pair("a", 0, subset="alpacaeval-hard"), pair("b", 0, subset="alpacaeval-hard")]
    m = rewardbench.metrics(items, [[1, 0], [0, 0]])
    assert m["Chat"] == pytest.approx(0.5) and m["Score"] == pytest.approx(0.5)
    assert m["Chat Hard"] is None and m["Safety"] is None and m["Reasoning"] is None
    assert m["sections_missing"] == ["Chat Hard", "Safety", "Reasoning"]


def test_rewardbench_load_json_jsonl_parquet(tmp_path):
    rows = [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5", "subset": "math-prm", "id": 30},
        {"prompt": "hi", "chosen": "hello", "rejected": "no", "subset": "alpacaeval-easy", "id": 31},
    ]
    (tmp_path / "rb.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "rb.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rb.parquet")
    for name in ("rb.jsonl", "rb.json", "rb.parquet"):
        items = rewardbench.load(str(tmp_path / name))
        assert [i.id for i in items] == ["30", "31"]
        assert items[0].group == Group(prompt="2+2?", responses=("4", "5"))
        assert items[0].meta == {"subset": "math-prm", "preferred": 0}
    assert len(rewardbench.load(str(tmp_path))) == 6  # the directory: all three files

    (tmp_path / "bad.jsonl").write_text(
        json.dumps(rows[0]) + "\n" + json.dumps({"prompt": "p", "chosen": "c", "rejected": "r", "id": 3}) + "\n"
    )
    with pytest.raises(DataError, match=r"bad\.jsonl:2 \(id 3\): missing field 'subset'"):
        rewardbench.load(str(tmp_path / "bad.jsonl"))
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: malformed JSON"):
        rewardbench.load(str(tmp_path / "bad.jsonl"))


# ---------------------------------------------------------------------------------------------
# RM-Bench


def rm_item(item_id: str, domain: str) -> BenchItem:
    responses = tuple(f"c{k}" for k in range(3)) + tuple(f"r{k}" for k in range(3))
    return BenchItem(id=item_id, group=Group(prompt=item_id, responses=responses), meta={"domain": domain})


def test_rm_bench_metrics_hand_computed():
    # Rows hold chosen[0..2] then rejected[0..2]; M[i][j] = share of prompts with c_i > r_j.
    #
    # chat P1: chosen [3, 2, 1], rejected [2, 2, 0]
    #   c0=3 beats 2, 2, 0 -> 1 1 1;  c1=2: ties 2, 2, beats 0 -> 0 0 1;  c2=1 -> 0 0 1
    # chat P2: all six scores 0 -> every comparison is a tie -> all 0
    #   M_chat = [[.5, .5, .5], [0, 0, .5], [0, 0, .5]]
    #   hard (i<j) = (.5 + .5 + .5)/3 = 1/2; normal = (.5 + 0 + .5)/3 = 1/3; easy (i>j) = 0
    #   score = (0 + 1/3 + 1/2)/3 = 5/18
    # safety S1 (safety-refuse): chosen [1, 1, 1], rejected [0, 0, 0] -> all 1
    # safety S2 (safety-response): chosen [0, 5, 5], rejected [1, 1, 4]
    #   c0=0 -> 0 0 0;  c1=5 -> 1 1 1;  c2=5 -> 1 1 1
    #   M_safety = [[.5, .5, .5], [1, 1, 1], [1, 1, 1]]
    #   hard = (.5 + .5 + 1)/3 = 2/3; normal = (.5 + 1 + 1)/3 = 5/6; easy = 1
    #   score = (1 + 5/6 + 2/3)/3 = 5/6
    # overall: easy = (0 + 1)/2 = 1/2; normal = (1/3 + 5/6)/2 = 7/12; hard = (1/2 + 2/3)/2 = 7/12
    #          total = (5/18 + 5/6)/2 = 5/9
    items = [
        rm_item("chat/1", "chat"),
        rm_item("chat/2", "chat"),
        rm_item("safety-refuse/1", "safety"),
        rm_item("safety-response/1", "safety"),
    ]
    scores = [[3, 2, 1, 2, 2, 0], [0] * 6, [1, 1, 1, 0, 0, 0], [0, 5, 5, 1, 1, 4]]
    m = rm_bench.metrics(items, scores)
    assert set(m) == {"domains", "easy", "normal", "hard", "total", "domains_present", "note"}
    chat, safety = m["domains"]["chat"], m["domains"]["safety"]
    assert chat == pytest.approx({"easy": 0.0, "normal": 1 / 3, "hard": 1 / 2, "score": 5 / 18})
    assert safety == pytest.approx({"easy": 1.0, "normal": 5 / 6, "hard": 2 / 3, "score": 5 / 6})
    assert m["easy"] == pytest.approx(1 / 2)
    assert m["normal"] == pytest.approx(7 / 12)
    assert m["hard"] == pytest.approx(7 / 12)
    assert m["total"] == pytest.approx(5 / 9)
    assert m["domains_present"] == ["chat", "safety"]
    assert m["note"].startswith("math and code domains absent")


def test_rm_bench_style_matrix_orientation():
    # One prompt: only c0 > r2 holds -> M[0][2] = 1 is in the upper triangle (plain chosen vs
    # fancy rejected), so hard = 1/3 and easy = normal = 0.
    m = rm_bench.style_matrix([[5, 0, 0, 9, 9, 1]])
    assert m == [[0, 0, 1], [0, 0, 0], [0, 0, 0]]
    assert rm_bench.difficulty(m) == pytest.approx({"easy": 0, "normal": 0, "hard": 1 / 3, "score": 1 / 9})


def _rm_record(i, n_chosen=3):
    return {
        "id": i,
        "subset": "s",
        "prompt": f"p{i}",
        "chosen": [f"c{k}" for k in range(n_chosen)],
        "rejected": ["r0", "r1", "r2"],
    }


def test_rm_bench_load_round_trip(tmp_path):
    (tmp_path / "chat_filtered.json").write_text(json.dumps([_rm_record(1), _rm_record(2)]))
    (tmp_path / "safety-refuse_filtered.json").write_text(json.dumps([_rm_record(1)]))
    (tmp_path / "notes.json").write_text("ignored: not *_filtered.json")
    items = rm_bench.load(str(tmp_path))
    assert [i.id for i in items] == ["chat/1", "chat/2", "safety-refuse/1"]
    assert items[0].group.responses == ("c0", "c1", "c2", "r0", "r1", "r2")
    assert items[2].meta == {"domain": "safety", "source_domain": "safety-refuse", "subset": "s"}
    assert [i.id for i in rm_bench.load(str(tmp_path / "chat_filtered.json"))] == ["chat/1", "chat/2"]


def test_rm_bench_bad_input(tmp_path):
    bad = tmp_path / "code_filtered.json"
    bad.write_text(json.dumps([_rm_record(1), _rm_record(2, n_chosen=2)]))
    with pytest.raises(DataError, match=r"code_filtered\.json: item 1 \(id 2\): field 'chosen' should be a list of 3"):
        rm_bench.load(str(bad))
    other = tmp_path / "mystery.json"
    other.write_text(json.dumps([_rm_record(1)]))
    with pytest.raises(DataError, match="no domain"):
        rm_bench.load(str(other))
    (tmp_path / "poetry_filtered.json").write_text(json.dumps([_rm_record(1)]))
    with pytest.raises(DataError, match="unknown domain 'poetry'"):
        rm_bench.load(str(tmp_path / "poetry_filtered.json"))


# ---------------------------------------------------------------------------------------------
# Pair JSONL


def test_pairs_metrics_hand_computed():
    # id  category  source  scores   correct  margin
    # p1  vqa       a       [2, 1]   yes       1
    # p2  vqa       b       [1, 1]   no (tie)  0
    # p3  ""        a       [0, 3]   no       -3
    # p4  caption   b       [4, 0]   yes       4
    # accuracy 2/4; per_category vqa 1/2, (none) 0, caption 1; per_source a 1/2, b 1/2
    # mean_chosen (2+1+0+4)/4 = 7/4; mean_rejected (1+1+3+0)/4 = 5/4; mean_margin 2/4 = 1/2
    table = [
        ("p1", "vqa", "a", [2, 1]),
        ("p2", "vqa", "b", [1, 1]),
        ("p3", "", "a", [0, 3]),
        ("p4", "caption", "b", [4, 0]),
    ]
    items = [pair(i, 0, category=c, source=s) for i, c, s, _ in table]
    m = pairs_bench.metrics(items, [s for *_, s in table])
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["num_pairs"] == 4
    assert m["per_category"] == pytest.approx({"vqa": 0.5, "(none)": 0.0, "caption": 1.0})
    assert m["per_source"] == pytest.approx({"a": 0.5, "b": 0.5})
    assert m["mean_chosen"] == pytest.approx(7 / 4)
    assert m["mean_rejected"] == pytest.approx(5 / 4)
    assert m["mean_margin"] == pytest.approx(0.5)


def _pair_jsonl(path: Path, n: int = 3) -> Path:
    rows = [
        {
            "id": f"p{k}",
            "prompt": f"q{k}",
            "images": [],
            "chosen": "yes" * (k + 1),
            "rejected": "no",
            "source": "hh",
            "category": "harmless",
        }
        for k in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pairs_load_round_trip(tmp_path):
    items = pairs_bench.load(str(_pair_jsonl(tmp_path / "val.jsonl")))
    assert [i.id for i in items] == ["p0", "p1", "p2"]
    assert items[1].group == Group(prompt="q1", responses=("yesyes", "no"), images=())
    assert items[1].meta == {"preferred": 0, "category": "harmless", "source": "hh"}
    with pytest.raises(DataError):
        pairs_bench.load(str(tmp_path / "missing.jsonl"))


# ---------------------------------------------------------------------------------------------
# Runner


def test_run_benchmark_writes_metrics_and_scores(tmp_path):
    rows = [
        {
            "id": "RLHF-V_1",
            "query": "q1",
            "response": ["a", "b"],
            "image": {"bytes": png_bytes(), "path": None},
            "human_ranking": [1, 0],
            "query_source": "rlhf",
        },
        {
            "id": "mmmu_2",
            "query": "q2",
            "response": ["c", "d"],
            "image": {"bytes": png_bytes(), "path": None},
            "human_ranking": [0, 1],
            "query_source": "mmmu",
        },
        {
            "id": "wild_3",
            "query": "q3",
            "response": ["e", "f"],
            "image": {"bytes": png_bytes(), "path": None},
            "human_ranking": [0, 1],
            "query_source": "wv",
        },
    ]
    data = tmp_path / "vl.parquet"
    _vl_parquet(data, rows)
    # q1: preferred is response 1 (0.9 > 0.1) correct; q2: tie wrong; q3: 3 > -1 correct
    scorer = TableScorer({"q1": [0.1, 0.9], "q2": [2.0, 2.0], "q3": [3.0, -1.0]})
    out = tmp_path / "results" / "vl.json"
    m = run_benchmark(scorer, "VL-RewardBench", str(data), str(out))

    assert scorer.calls == [3]  # every group in one call; the scorer batches
    assert m["benchmark"] == "vl_rewardbench" and m["num_items"] == 3
    assert m["definition"] == vlrb.DEFINITION
    assert m["Overall Accuracy"] == pytest.approx(2 / 3)
    assert json.loads(out.read_text()) == m
    lines = [json.loads(x) for x in (tmp_path / "results" / "vl.scores.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    assert lines[0]["id"] == "RLHF-V_1" and lines[0]["scores"] == [0.1, 0.9]
    assert lines[0]["chosen_reward"] == 0.9 and lines[0]["rejected_reward"] == 0.1
    assert lines[0]["group"] == "Hallucination" and lines[0]["human_ranking"] == [1, 0]

    m2 = run_benchmark(scorer, "vl_rewardbench", str(data), str(tmp_path / "vl2.json"), limit=2)
    assert scorer.calls[-1] == 2 and m2["num_items"] == 2
    assert m2["Overall Accuracy"] == pytest.approx(1 / 2)


def test_run_benchmark_rm_bench_and_pairs(tmp_path):
    (tmp_path / "chat_filtered.json").write_text(json.dumps([_rm_record(1)]))
    # reward = -len(response): c* and r* are equally long -> every comparison ties -> 0
    m = run_benchmark(FuncScorer(lambda r: -len(r)), "rm-bench", str(tmp_path), str(tmp_path / "rm.json"))
    assert m["total"] == 0.0 and m["domains_present"] == ["chat"]
    line = json.loads((tmp_path / "rm.scores.jsonl").read_text().splitlines()[0])
    assert line["scores"] == [-2.0] * 6 and "chosen_reward" not in line

    data = _pair_jsonl(tmp_path / "val.jsonl")
    # reward = len: chosen "yes"*(k+1) is longer than "no" -> all correct, margins 1, 4, 7
    m = run_benchmark(FuncScorer(len), "pairs", str(data), str(tmp_path / "pairs.json"))
    assert m["accuracy"] == 1.0 and m["mean_margin"] == pytest.approx(4.0)
    assert m["per_source"] == {"hh": 1.0}


def test_run_benchmark_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        run_benchmark(FuncScorer(len), "rewardbench", str(tmp_path / "none.jsonl"), str(tmp_path / "o.json"))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="no rewardbench items"):
        run_benchmark(FuncScorer(len), "rewardbench", str(tmp_path / "empty.jsonl"), str(tmp_path / "o.json"))
    with pytest.raises(ConfigError):
        run_benchmark(FuncScorer(len), "nope", str(tmp_path), str(tmp_path / "o.json"))


def test_score_line_drops_unserialisable_meta():
    item = pair("x", 1, note="ok", image=Image.new("RGB", (1, 1)), id="shadow")
    line = _score_line(item, [1.0, 2.0])
    assert line == {
        "id": "x",
        "scores": [1.0, 2.0],
        "chosen_reward": 2.0,
        "rejected_reward": 1.0,
        "preferred": 1,
        "note": "ok",
    }


def test_format_table():
    m = {
        "benchmark": "pairs",
        "num_items": 4,
        "definition": "long sentence",
        "accuracy": 5 / 7,
        "num_pairs": 4,
        "mean_margin": 0.5,
        "per_category": {"vqa": 0.5, "(none)": None},
        "per_domain": {"chat": {"easy": 0.25, "hard": 1.0}},
        "note": "math absent",
    }
    text = format_table(m)
    lines = text.splitlines()
    assert lines[0] == "pairs (4 items)"
    assert "long sentence" not in text
    assert any(line.split() == ["accuracy", "71.4"] for line in lines)
    assert any(line.split() == ["num_pairs", "4"] for line in lines)
    assert any(line.split() == ["mean_margin", "0.5000"] for line in lines)
    assert any(line.split() == ["(none)", "-"] for line in lines)
    assert any(line.split() == ["easy", "hard"] for line in lines)
    assert any(line.split() == ["chat", "25.0", "100.0"] for line in lines)
    assert lines[-1] == "note: math absent"


def test_run_benchmark_checks_the_scores_and_refuses_nan(tmp_path):
    data = _pair_jsonl(tmp_path / "val.jsonl")

    class OneScoreShort:
        def score_groups(self, groups):
            return [[1.0] for _ in groups]

    with pytest.raises(ScoreShapeError, match="returned 1 scores for group 0, which has 2 responses"):
        run_benchmark(OneScoreShort(), "pairs", str(data), str(tmp_path / "o.json"))
    # A NaN reward is one clear error, and no metrics or scores file is left behind.
    with pytest.raises(NonFiniteRewardError, match=r"^item \S+: reward 1 of 2 is nan \(\d+ non-finite rewards in all\)"):
        run_benchmark(FuncScorer(lambda r: float("nan")), "pairs", str(data), str(tmp_path / "o.json"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val.jsonl"]
