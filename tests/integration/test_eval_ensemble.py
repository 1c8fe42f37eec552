"""End to end through the CLI with tiny random models: eval on the real RM-Bench files and a pair
file, ensembles (one member == the member; mean of two), modality routing, and the report."""

from __future__ import annotations

import json

import pytest
from helpers.tiny_models import (
    solid_image,
    tiny_causal_lm_dir,
    tiny_qwen25vl_dir,
    tiny_reward_model_dir,
)

from basereward.cli import main
from basereward.data.pairs import load_pairs, save_pairs
from basereward.data.schema import PreferencePair
from basereward.eval import format_table
from basereward.eval.benchmarks import rm_bench
from basereward.load import load_scorer


def _model(tmp, backbone_dir, name, arch, seed):
    return tiny_reward_model_dir(tmp / name, backbone_dir, arch, seed)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evalens")
    text_dir = tiny_causal_lm_dir(tmp)
    vl_dir = tiny_qwen25vl_dir(tmp)
    models = {
        "text_a": _model(tmp, text_dir, "text_a", "causal-lm", 1),
        "text_b": _model(tmp, text_dir, "text_b", "causal-lm", 2),
        "vl": _model(tmp, vl_dir, "vl", "qwen2.5-vl", 3),
    }
    (tmp / "img").mkdir()
    pairs = []
    for i in range(6):
        images = ()
        if i % 2:
            p = tmp / "img" / f"{i}.png"
            solid_image(56, 56, i).save(p)
            images = (str(p),)
        pairs.append(PreferencePair(f"q{i}", f"prompt {i}", f"chosen {i} text", f"rejected {i}", images,
                                    source="a" if i < 3 else "b", category="x" if i % 2 else "y"))
    save_pairs(pairs, tmp / "pairs.jsonl")
    save_pairs([p for p in pairs if not p.images], tmp / "text_pairs.jsonl")
    return tmp, models


def test_eval_rm_bench_end_to_end(ws, capsys, shared_data_path):
    tmp, models = ws
    data = shared_data_path("rm-bench")
    out = tmp / "eval" / "rm-bench.json"
    assert main(["eval", "--model", str(models["text_a"]), "--bench", "rm-bench", "--data", str(data),
                 "--output", str(out), "--limit", "12"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["benchmark"] == "rm_bench" and metrics["num_items"] == 12
    assert set(metrics["domains"]) <= {"chat", "code", "safety"} and metrics["domains"]
    for key in ("easy", "normal", "hard", "total"):
        assert 0.0 <= metrics[key] <= 1.0
    # The per-item file holds the model's own scores of the first 12 items, and the saved metrics
    # are exactly what the benchmark's definition gives on them.
    items = rm_bench.load(str(data))[:12]
    lines = [json.loads(x) for x in out.with_name("rm-bench.scores.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == [i.id for i in items]
    scores = [x["scores"] for x in lines]
    direct = load_scorer(models["text_a"]).score_groups([i.group for i in items])
    for got, want in zip(scores, direct):
        assert got == pytest.approx(want, abs=1e-5)
    recomputed = rm_bench.metrics(items, scores)
    meta = ("benchmark", "num_items", "definition", "truncation")
    assert {k: v for k, v in metrics.items() if k not in meta} == recomputed
    # 12 items x 6 responses (3 chosen + 3 rejected styles), none cut at the default limits.
    assert metrics["truncation"] == [{"name": "text_a", "sequences": 72, "prompt": 0, "response": 0}]
    assert capsys.readouterr().out == format_table(metrics) + "\n" + (
        "truncated (text_a): 0 of 72 prompts cut (model.backbone.max_prompt_length), 0 of 72 responses lost their "
        f"end (model.backbone.max_length)\nwrote {out}\n")


def test_one_member_ensemble_scores_like_member_and_mean_of_two(ws):
    tmp, models = ws
    pairs = load_pairs(tmp / "text_pairs.jsonl")
    a = load_scorer(models["text_a"]).score(pairs)
    b = load_scorer(models["text_b"]).score(pairs)
    assert main(["ensemble", "--members", str(models["text_a"]), "--output", str(tmp / "ens1")]) == 0
    one = load_scorer(tmp / "ens1").score(pairs)
    assert one == a
    assert main(["ensemble", "--members", str(models["text_a"]), str(models["text_b"]), "--output", str(tmp / "ens2")]) == 0
    two = load_scorer(tmp / "ens2").score(pairs)
    for (ca, ra), (cb, rb), (c2, r2) in zip(a, b, two):
        assert c2 == pytest.approx((ca + cb) / 2, abs=1e-6) and r2 == pytest.approx((ra + rb) / 2, abs=1e-6)
    # z-normalised ensemble: validation statistics recorded per member.
    assert main(["ensemble", "--members", str(models["text_a"]), str(models["text_b"]), "--method", "mean",
                 "--normalize", "--val", str(tmp / "text_pairs.jsonl"), "--output", str(tmp / "ens3")]) == 0
    spec = json.loads((tmp / "ens3" / "ensemble.json").read_text())
    assert [m["weight"] for m in spec["members"]] == [0.5, 0.5]
    assert all(m["stats"]["std"] > 0 for m in spec["members"])
    assert len(load_scorer(tmp / "ens3").score(pairs)) == len(pairs)


def test_router_sends_text_to_text_model_and_images_to_vl(ws):
    tmp, models = ws
    pairs = load_pairs(tmp / "pairs.jsonl")
    assert main(["ensemble", "--members", str(models["vl"]), "--text-model", str(models["text_a"]),
                 "--output", str(tmp / "router")]) == 0
    router = load_scorer(tmp / "router")
    got = router.score(pairs)
    text = load_scorer(models["text_a"]).score([p for p in pairs if not p.images])
    vl = load_scorer(models["vl"]).score([p for p in pairs if p.images])
    it_t, it_v = iter(text), iter(vl)
    expected = [next(it_v) if p.images else next(it_t) for p in pairs]
    for g, e in zip(got, expected):
        assert g == pytest.approx(e, abs=1e-6)
    assert router.routing_report()["text"] == 3 and router.routing_report()["multimodal"] == 3


def test_eval_pairs_then_report(ws):
    tmp, models = ws
    out = tmp / "eval" / "pairs.json"
    assert main(["eval", "--model", str(models["text_a"]), "--bench", "pairs", "--data", str(tmp / "text_pairs.jsonl"),
                 "--output", str(out)]) == 0
    assert main(["report", str(out), "--out", str(tmp / "report"), "--pairs", str(tmp / "text_pairs.jsonl")]) == 0
    md = (tmp / "report" / "report.md").read_text()
    pngs = [line.split("(")[-1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert pngs and all((tmp / "report" / p).is_file() for p in pngs)
    # The report reads the eval's per-item scores: its statistics agree with the eval's metrics.
    metrics = json.loads(out.read_text())
    rec = json.loads((tmp / "report" / "report.json").read_text())["benchmarks"]["pairs"]
    assert rec["headline"]["accuracy"] == metrics["accuracy"]
    assert rec["reward_stats"]["accuracy"] == pytest.approx(metrics["accuracy"])
    assert rec["reward_stats"]["gap"] == pytest.approx(metrics["mean_margin"])
    assert rec["reward_stats"]["n_pairs"] == metrics["num_pairs"] == 3
    assert rec["length_bias"]["n_pairs"] == 3  # texts joined on id from the pair file


def test_score_writes_rewards_and_the_accuracy_table(ws, capsys):
    tmp, models = ws
    out, summary = tmp / "score" / "text.jsonl", tmp / "score" / "summary.json"
    assert main(["score", "--model", str(models["text_a"]), "--pairs", str(tmp / "text_pairs.jsonl"),
                 "--output", str(out), "--summary", str(summary)]) == 0
    pairs = load_pairs(tmp / "text_pairs.jsonl")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == [p.id for p in pairs]
    for line, (c, r) in zip(lines, load_scorer(models["text_a"]).score(pairs)):
        assert (line["chosen_reward"], line["rejected_reward"]) == pytest.approx((c, r), abs=1e-6)
    # The text pairs are q0, q2, q4, all of category "y": the summary counts them from the rewards.
    right = sum(x["chosen_reward"] > x["rejected_reward"] for x in lines)
    # Wilson 95% intervals of k right of 3 (z = 1.96): [0, 0.5615], [0.0615, 0.7923],
    # [0.2077, 0.9385], [0.4385, 1].
    wilson = {0: [0.0, 0.56151], 1: [0.06149, 0.79234], 2: [0.20766, 0.93851], 3: [0.43849, 1.0]}[right]
    want = {"accuracy": right / 3, "n": 3, "interval95": pytest.approx(wilson, abs=1e-4)}
    truncation = [{"name": "text_a", "sequences": 6, "prompt": 0, "response": 0}]  # 3 pairs, nothing cut
    written = json.loads(summary.read_text())
    memory = written.pop("memory")  # measured, so only its shape is checked
    assert memory["peak_rss_mb"] > 0
    assert written == {"overall": want, "y": want, "truncation": truncation}
    printed = capsys.readouterr().out.splitlines()
    pct = f"{100 * right / 3:7.1f}%"
    lo, hi = written["overall"]["interval95"]  # checked against the hand values above
    span = f"{100 * lo:5.1f}-{100 * hi:.1f}%"
    assert printed[:3] == ["category  accuracy      n  95% interval", f"overall  {pct}      3  {span}",
                           f"y        {pct}      3  {span}"]
    assert printed[-1] == f"wrote 3 scores to {out}"
