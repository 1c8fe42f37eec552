"""Multimodal dataset adapters on fixture rows written in each dataset's published schema.

Every expected count below is derived by hand from the rows written in the test (comments say
which row gives what). Images are real tiny PNGs so the pairs also pass the pair loader.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from basereward.data.pairs import load_pairs, save_pairs
from basereward.data.paths import OUTSIDE_ROOT
from basereward.data.sources.base import ADAPTERS, SourceContext, get_adapter
from basereward.data.sources.media import evenly_spaced, strip_placeholders
from basereward.errors import ConfigError, DataError


def png(color: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buf, format="PNG")
    return buf.getvalue()


def put_png(path: Path, color: tuple[int, int, int] = (255, 0, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png(color))
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run(name: str, path: Path | str, ctx: SourceContext | None = None, **options):
    """(pairs, stats) of adapter `name` on `path`."""
    ctx = ctx or SourceContext(name)
    pairs = list(get_adapter(name).read(str(path), ctx, **options))
    return pairs, ctx.stats(len(pairs))


def test_all_multimodal_adapters_are_registered():
    get_adapter("rlaif-v")  # imports the package, registering every adapter
    for name in ("rlaif-v", "mmpr", "mm-rlhf", "mmif", "omni-align"):
        assert ADAPTERS[name].multimodal


def test_placeholders_and_frame_spacing():
    assert strip_placeholders("<image>\nWhat is this?") == "What is this?"
    assert strip_placeholders("Image-1: <image>\nImage-2: <image>\nCompare.") == "Image-1:\nImage-2:\nCompare."
    assert strip_placeholders("<image><image>Compare.") == "Compare."
    assert strip_placeholders("<video>\n<image> Describe") == "Describe"
    assert evenly_spaced(list("abcdefghijkl"), 4) == ["a", "d", "h", "l"]  # 0, 11//3, 22//3, 11
    assert evenly_spaced(list("abc"), 8) == ["a", "b", "c"]


# ------------------------------------------------------------------------------------- RLAIF-V


RLAIF_SCHEMA = pa.schema(
    [
        ("ds_name", pa.string()),
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("question", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("origin_dataset", pa.string()),
        ("origin_split", pa.string()),
        ("idx", pa.string()),
        ("image_path", pa.string()),
    ]
)


def _rlaif_row(idx, image, question="What is in the image?", chosen="A red square.", rejected="A blue circle.",
               origin="coco"):
    return {"ds_name": "RLAIF-V", "image": image, "question": question, "chosen": chosen, "rejected": rejected,
            "origin_dataset": origin, "origin_split": '{"model": "m", "type": "qa"}', "idx": idx,
            "image_path": f"{origin}/{idx}.jpg"}


def test_rlaif_v_parquet_writes_embedded_bytes_once_and_counts_skips(tmp_path):
    red = png()
    put_png(tmp_path / "data" / "local" / "x.png", (0, 0, 255))
    rows = [
        _rlaif_row("a1", {"bytes": red, "path": "coco/a1.png"}),                       # pair
        _rlaif_row("a2", {"bytes": red, "path": "vqav2/a2.png"}, origin="vqav2",
                   question="<image>\nHow many squares?"),                             # pair, same bytes
        _rlaif_row("a3", {"bytes": red, "path": "x.png"}, chosen="Same.", rejected="Same."),  # identical
        _rlaif_row("a4", {"bytes": red, "path": "x.png"}, question="  "),              # empty question
        _rlaif_row("a5", {"bytes": None, "path": "nowhere.png"}),                      # image not found
        _rlaif_row("a6", {"bytes": None, "path": "local/x.png"}),                       # pair, path image
        _rlaif_row("a7", None),                                                        # missing image
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=RLAIF_SCHEMA), tmp_path / "data" / "RLAIF-V-Dataset_000.parquet")
    ctx = SourceContext("rlaif-v", image_dir=str(tmp_path / "img"))
    pairs, stats = run("rlaif-v", tmp_path / "data", ctx)

    assert stats == {"rows": 7, "pairs": 3, "skipped": {
        "empty question": 1, "identical responses": 1, "image not found": 1, "missing image": 1}}
    assert [p.id for p in pairs] == ["rlaif-v:a1", "rlaif-v:a2", "rlaif-v:a6"]
    assert [p.category for p in pairs] == ["coco", "vqav2", "coco"]
    assert pairs[1].prompt == "How many squares?"
    assert (pairs[0].chosen, pairs[0].rejected, pairs[0].source) == ("A red square.", "A blue circle.", "rlaif-v")
    # The same bytes land in one file, unchanged; the path image is used where it lies.
    assert pairs[0].images == pairs[1].images
    assert Path(pairs[0].images[0]).read_bytes() == red and pairs[0].images[0].endswith(".png")
    assert len([f for f in (tmp_path / "img").rglob("*") if f.is_file()]) == 1
    assert pairs[2].images == (str((tmp_path / "data" / "local" / "x.png").resolve()),)


def test_rlaif_v_bytes_without_image_dir_is_a_config_error(tmp_path):
    pq.write_table(pa.Table.from_pylist([_rlaif_row("a1", {"bytes": png(), "path": "a.png"})], schema=RLAIF_SCHEMA),
                   tmp_path / "r.parquet")
    with pytest.raises(ConfigError, match="image directory"):
        run("rlaif-v", tmp_path / "r.parquet")


def test_rlaif_v_save_to_disk_copy(tmp_path):
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                               "chosen": datasets.Value("string"), "rejected": datasets.Value("string"),
                               "idx": datasets.Value("string"), "origin_dataset": datasets.Value("string")})
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": png(), "path": "a.png"}, {"bytes": png((0, 255, 0)), "path": "b.png"}],
         "question": ["Q1?", "Q2?"], "chosen": ["yes", "no"], "rejected": ["no", "no"],
         "idx": ["i1", "i2"], "origin_dataset": ["coco", "coco"]}, features=feats)
    ds.save_to_disk(str(tmp_path / "saved"))
    ctx = SourceContext("rlaif-v", image_dir=str(tmp_path / "img"))
    pairs, stats = run("rlaif-v", tmp_path / "saved", ctx)
    assert stats == {"rows": 2, "pairs": 1, "skipped": {"identical responses": 1}}  # row 2: "no" vs "no"
    assert Path(pairs[0].images[0]).read_bytes() == png()


def test_wrong_dataset_is_an_error_not_a_skip(tmp_path):
    write_jsonl(tmp_path / "other.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    with pytest.raises(DataError, match=r"other.jsonl:1: not a RLAIF-V row \(no 'image', 'question'"):
        run("rlaif-v", tmp_path / "other.jsonl")


# ---------------------------------------------------------------------------------------- MMPR


def _mmpr_layout(tmp_path: Path) -> Path:
    """The published layout: MMPR-v1.2/meta.json whose paths start with "MMPR-v1.2/"."""
    top = tmp_path / "MMPR-v1.2"
    put_png(top / "images" / "sub_a" / "1.png")
    put_png(top / "images" / "sub_a" / "2.png", (0, 255, 0))
    write_jsonl(top / "annotations" / "sub_a.jsonl", [
        {"image": "1.png", "question": "<image>\nQ0?", "chosen": "c0", "rejected": "r0"},         # 1 image
        {"image": ["1.png", "2.png"], "question": "Image-1: <image>\nImage-2: <image>\nQ1?",
         "chosen": "c1", "rejected": "r1"},                                                      # 2 images
        {"question": "Text only Q2?", "chosen": "c2", "rejected": "r2"},                          # text-only
        {"image": "nope.png", "question": "Q3?", "chosen": "c3", "rejected": "r3"},               # not found
    ])
    write_jsonl(top / "annotations" / "sub_b.jsonl", [
        {"question": f"B{i}?", "chosen": f"cb{i}", "rejected": f"rb{i}"} for i in range(5)
    ])
    write_jsonl(top / "annotations" / "sub_c.jsonl", [
        {"question": f"C{i}?", "chosen": f"cc{i}", "rejected": f"rc{i}"} for i in range(2)
    ])
    meta = {
        "sub_a": {"root": "MMPR-v1.2/images/sub_a", "annotation": "MMPR-v1.2/annotations/sub_a.jsonl",
                  "data_augment": False, "repeat_time": 2, "length": 4},
        # Relative to meta.json's own folder: the first place tried.
        "sub_b": {"root": "", "annotation": "annotations/sub_b.jsonl", "data_augment": False,
                  "repeat_time": 0.5, "length": 5},
        "sub_c": {"root": "", "annotation": "MMPR-v1.2/annotations/sub_c.jsonl", "data_augment": False,
                  "repeat_time": 1.5, "length": 2},
    }
    (top / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return top


def test_mmpr_honours_repeat_time_and_counts(tmp_path):
    top = _mmpr_layout(tmp_path)
    pairs, stats = run("mmpr", top)
    # sub_a: repeat 2 -> 4 rows read twice: 3 pairs + 1 "image not found" per pass.
    # sub_b: 0.5 of 5 rows -> the first floor(2.5) = 2; 3 not sampled.
    # sub_c: 1.5 of 2 rows -> floor(3) = 3: both rows, then the first again.
    assert stats == {"rows": 8 + 5 + 3, "pairs": 6 + 2 + 3, "skipped": {
        "image not found": 2, "not sampled (repeat_time < 1)": 3}}
    assert [p.id for p in pairs] == [
        "mmpr:sub_a:0", "mmpr:sub_a:1", "mmpr:sub_a:2", "mmpr:sub_a:0#r1", "mmpr:sub_a:1#r1", "mmpr:sub_a:2#r1",
        "mmpr:sub_b:0", "mmpr:sub_b:1", "mmpr:sub_c:0", "mmpr:sub_c:1", "mmpr:sub_c:0#r1",
    ]
    img = top / "images" / "sub_a"
    assert pairs[0].images == (str((img / "1.png").resolve()),) and pairs[0].prompt == "Q0?"
    assert pairs[1].images == (str((img / "1.png").resolve()), str((img / "2.png").resolve()))
    assert pairs[1].prompt == "Image-1:\nImage-2:\nQ1?"
    assert pairs[2].images == () and not pairs[2].is_multimodal
    assert {p.category for p in pairs} == {"sub_a", "sub_b", "sub_c"}
    assert [p.chosen for p in pairs[6:]] == ["cb0", "cb1", "cc0", "cc1", "cc0"]


def test_mmpr_subsets_and_ignoring_repeat_time(tmp_path):
    top = _mmpr_layout(tmp_path)
    pairs, stats = run("mmpr", top / "meta.json", subsets=["sub_b", "sub_c"], use_repeat_time=False)
    assert stats == {"rows": 7, "pairs": 7, "skipped": {}}
    assert [p.id for p in pairs][-2:] == ["mmpr:sub_c:0", "mmpr:sub_c:1"]
    with pytest.raises(ConfigError, match="subsets not in .*: sub_z"):
        run("mmpr", top, subsets=["sub_z"])


def test_mmpr_missing_annotation_and_bad_repeat_time(tmp_path):
    top = _mmpr_layout(tmp_path)
    (top / "meta.json").write_text(json.dumps({"x": {"root": "", "annotation": "gone.jsonl", "repeat_time": 1}}))
    with pytest.raises(DataError, match="subset 'x': annotation gone.jsonl not found"):
        run("mmpr", top)
    (top / "meta.json").write_text(json.dumps(
        {"x": {"root": "", "annotation": "annotations/sub_b.jsonl", "repeat_time": 0}}))
    with pytest.raises(DataError, match="repeat_time must be a positive number"):
        run("mmpr", top)


# ------------------------------------------------------------------------------------- MM-RLHF


def _mm_rlhf_layout(tmp_path: Path) -> Path:
    root = tmp_path / "MM-RLHF"
    put_png(root / "short" / "a.jpg")
    put_png(root / "mcq" / "m.png", (0, 0, 255))
    for i in range(1, 13):  # frame_1 .. frame_12: natural order differs from string order
        put_png(root / "video" / "v1" / f"frame_{i}.jpg", (i * 20, 0, 0))
    (root / "video" / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    return root


def test_mm_rlhf_pairs_file_with_video_frames(tmp_path):
    root = _mm_rlhf_layout(tmp_path)
    base = {"chosen_reason": "correct", "rejected_reason": "wrong"}
    write_jsonl(root / "dpo_pairs.jsonl", [
        {"id": "q1", "image": "short/a.jpg", "prompt": "<image>\nWhat colour?", "chosen": "Red.",
         "rejected": "Blue.", **base},                                                            # pair
        {"id": "q1", "image": "short/a.jpg", "prompt": "<image>\nWhat colour?", "chosen": "Red.",
         "rejected": "Green.", **base},                                                           # pair
        {"id": "v7", "video": "video/v1", "prompt": "What happens?", "chosen": "It darkens.",
         "rejected": "Nothing.", **base},                                                         # 4 frames
        {"id": "v8", "video": "video/missing", "prompt": "P?", "chosen": "a", "rejected": "b", **base},
        {"id": "v9", "video": "video/clip.mp4", "prompt": "P?", "chosen": "a", "rejected": "b", **base},
        {"id": "n1", "prompt": "P?", "chosen": "a", "rejected": "b", **base},                   # no media
    ])
    pairs, stats = run("mm-rlhf", root / "dpo_pairs.jsonl", max_frames=4)
    assert stats == {"rows": 6, "pairs": 3, "skipped": {
        "missing image or video": 1, "video file (only folders of frames are read)": 1, "video not found": 1}}
    assert [p.id for p in pairs] == ["mm-rlhf:q1:0", "mm-rlhf:q1:1", "mm-rlhf:v7:2"]
    assert [p.category for p in pairs] == ["short", "short", "video"]
    assert pairs[0].prompt == "What colour?"
    frames = [Path(f).name for f in pairs[2].images]
    assert frames == ["frame_1.jpg", "frame_4.jpg", "frame_8.jpg", "frame_12.jpg"]  # indices 0, 3, 7, 11


def _annotation(row_id, outputs, ranking, helpfulness=None, image="mcq/m.png", video=None):
    n = len(outputs)
    return {"id": row_id, "question": "Which answer is right?", "answer": "", "image": image, "video": video,
            "models_output": outputs, "faithfulness": [2] * n, "helpfulness": helpfulness or [1] * n,
            "ethical": [3] * n, "final_ranking": ranking, "score_reasons": [""] * n, "ranking_reason": ""}


def test_mm_rlhf_annotation_file_ranks_to_pairs(tmp_path):
    root = _mm_rlhf_layout(tmp_path)
    write_jsonl(root / "data.jsonl", [
        # ranks 2,1,3,1: outputs 1 and 3 tie -> 6 - 1 = 5 ordered pairs
        _annotation("a0", ["o0", "o1", "o2", "o3"], [2, 1, 3, 1], helpfulness=[3, 1, 2, 2]),
        _annotation("a1", ["x", "y", "z"], [1, 1, 1]),                 # all tied
        _annotation("a2", ["x", "y", "z"], [1, 2]),                    # one rank short
        _annotation("a3", ["x", "y"], ["2", "1"], image=None, video="video/v1"),  # numeric strings, frames
    ])
    pairs, stats = run("mm-rlhf", root / "data.jsonl", max_frames=2)
    assert stats == {"rows": 4, "pairs": 5 + 1, "skipped": {"all responses tied": 1, "unreadable final_ranking": 1}}
    got = {p.id: (p.chosen, p.rejected) for p in pairs}
    assert got == {
        "mm-rlhf:a0-0-1": ("o1", "o0"), "mm-rlhf:a0-0-2": ("o0", "o2"), "mm-rlhf:a0-0-3": ("o3", "o0"),
        "mm-rlhf:a0-1-2": ("o1", "o2"), "mm-rlhf:a0-2-3": ("o3", "o2"),
        "mm-rlhf:a3-0-1": ("y", "x"),
    }
    assert pairs[0].category == "mcq" and pairs[0].images == (str((root / "mcq" / "m.png").resolve()),)
    assert [Path(f).name for f in pairs[-1].images] == ["frame_1.jpg", "frame_12.jpg"]

    # The helpfulness column instead (higher is better): 3,1,2,2 -> outputs 2 and 3 tie.
    pairs, stats = run("mm-rlhf", root / "data.jsonl", score="helpfulness")
    a0 = {p.id: (p.chosen, p.rejected) for p in pairs if p.id.startswith("mm-rlhf:a0")}
    assert a0 == {"mm-rlhf:a0-0-1": ("o0", "o1"), "mm-rlhf:a0-0-2": ("o0", "o2"), "mm-rlhf:a0-0-3": ("o0", "o3"),
                  "mm-rlhf:a0-1-2": ("o2", "o1"), "mm-rlhf:a0-1-3": ("o3", "o1")}
    # a1, a2 and a3 have all-equal helpfulness ([1] * n): every one ties.
    assert stats["skipped"] == {"all responses tied": 3}
    with pytest.raises(ConfigError, match="score must be one of"):
        run("mm-rlhf", root / "data.jsonl", score="overall")


# ---------------------------------------------------------------------------------------- MMIF


def human(value: str) -> dict:
    return {"from": "human", "value": value}


def gpt(value: str) -> dict:
    return {"from": "gpt", "value": value}


def test_mmif_sharegpt_rows_with_history(tmp_path):
    put_png(tmp_path / "mmif" / "imgs" / "a.png")
    put_png(tmp_path / "mmif" / "imgs" / "b.png", (0, 255, 0))
    rows = [
        {"conversations": [human("<image>\nDescribe it in exactly three words.")],
         "chosen": gpt("Red square shape."), "rejected": gpt("A red square on white."), "images": ["imgs/a.png"]},
        {"conversations": [human("<image>What is it?"), gpt("A square."), human("Answer in one word: colour?")],
         "chosen": gpt("Red."), "rejected": gpt("It is red."), "images": ["imgs/a.png"]},
        {"conversations": [human("<image><image>Compare.")], "chosen": gpt("x"), "rejected": gpt("y"),
         "images": ["imgs/a.png"]},                                                 # 2 placeholders, 1 image
        {"conversations": [{"from": "system", "value": "Be brief."}, human("<image>Hi")],
         "chosen": gpt("x"), "rejected": gpt("y"), "images": ["imgs/a.png"]},        # system prompt
        {"conversations": [human("<image>Hi"), gpt("Hello")], "chosen": gpt("x"), "rejected": gpt("y"),
         "images": ["imgs/a.png"]},                                                 # ends with gpt
        {"conversations": [human("<image>Hi")], "chosen": human("x"), "rejected": gpt("y"),
         "images": ["imgs/b.png"]},                                                 # chosen not from gpt
    ]
    (tmp_path / "mmif" / "mmif_dpo.json").write_text(json.dumps(rows), encoding="utf-8")
    pairs, stats = run("mmif", tmp_path / "mmif" / "mmif_dpo.json")
    assert stats == {"rows": 6, "pairs": 2, "skipped": {
        "<image> placeholders do not match images": 1,
        "conversation must alternate user/assistant and end with the user": 1,
        "malformed chosen": 1, "system prompt (not supported)": 1}}
    first, second = pairs
    assert (first.id, first.prompt, first.history) == ("mmif:0", "Describe it in exactly three words.", ())
    assert first.images == (str((tmp_path / "mmif" / "imgs" / "a.png").resolve()),)
    assert second.prompt == "Answer in one word: colour?"
    assert second.history == (("user", "What is it?"), ("assistant", "A square."))
    assert (second.chosen, second.rejected) == ("Red.", "It is red.")

    # The pairs survive the pair format: written, read back and validated (images decoded).
    save_pairs(pairs, tmp_path / "out" / "pairs.jsonl")
    back = load_pairs(tmp_path / "out" / "pairs.jsonl")
    assert [(p.id, p.history, p.prompt) for p in back] == [(p.id, p.history, p.prompt) for p in pairs]


# ---------------------------------------------------------------------------------- OmniAlign-V


def test_omni_align_subset_files_and_image_root(tmp_path):
    top = tmp_path / "OmniAlign-V-DPO"
    put_png(top / "images" / "chart" / "c1.png")
    put_png(top / "images" / "chart" / "c2.png", (0, 255, 0))
    put_png(tmp_path / "outside.png")
    write_jsonl(top / "chart.jsonl", [
        {"image": "images/chart/c1.png", "prompt": "<image>\nSummarise the chart.", "chosen": "Long answer.",
         "rejected": "Short."},                                                          # pair
        {"image": ["images/chart/c1.png", "images/chart/c2.png"], "prompt": "Compare the charts.",
         "chosen": "Detailed.", "rejected": "Same."},                                    # pair, 2 images
    ])
    write_jsonl(top / "knowledge.jsonl", [
        {"image": "images/chart/c2.png", "prompt": "Explain.", "chosen": "Because.", "rejected": "No."},  # pair
        {"image": "images/k/none.png", "prompt": "Explain.", "chosen": "a", "rejected": "b"},  # not found
        {"image": "images/chart/c2.png", "prompt": "Explain.", "chosen": "", "rejected": "b"},  # empty chosen
        {"image": "../outside.png", "prompt": "Explain.", "chosen": "a", "rejected": "b"},  # outside root
    ])
    (top / "README.md").write_text("not data")
    ctx = SourceContext("omni-align", image_root=str(top))
    pairs, stats = run("omni-align", top, ctx)
    assert stats == {"rows": 6, "pairs": 3, "skipped": {
        "empty chosen": 1, "image not found": 1, OUTSIDE_ROOT: 1}}
    assert [(p.id, p.category) for p in pairs] == [
        ("omni-align:chart:0", "chart"), ("omni-align:chart:1", "chart"), ("omni-align:knowledge:0", "knowledge")]
    assert pairs[0].prompt == "Summarise the chart." and len(pairs[1].images) == 2

    # One subset file on its own; without a root the outside image is accepted.
    pairs, stats = run("omni-align", top / "knowledge.jsonl")
    assert stats == {"rows": 4, "pairs": 2, "skipped": {"empty chosen": 1, "image not found": 1}}
    assert pairs[1].images == (os.path.realpath(tmp_path / "outside.png"),)
