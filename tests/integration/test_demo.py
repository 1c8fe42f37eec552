"""`basereward demo`: its evaluation on a fake reward source (hand-derived numbers), then the
README's demo path end to end in miniature (`--quick`, needs ../shared), checked on the results it
returns and saves."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from basereward.data.pairs import load_pairs
from basereward.data.schema import PreferencePair
from basereward.data.sources.hh_rlhf import HH_FILE
from basereward.demo import evaluate_splits, run_demo
from basereward.metrics import pair_accuracy
from basereward.models.reward_model import RewardModel
from basereward.scoring import Scorer

SPLITS = ("visual held-out (seed 2)", "visual held-out, images shuffled", "HH-RLHF harmless validation")


class ImageReader:
    """A reward source that needs the image: with the pair's own image (`/img/<prompt>.png`) it
    prefers "yes" responses for prompts starting with "a" and "no" responses otherwise; with
    another image every response scores 0 (a tie: wrong). Text-only groups: reward = length."""

    def score_groups(self, groups):
        out = []
        for g in groups:
            if not g.images:
                out.append([float(len(r)) for r in g.responses])
            elif g.images[0] != f"/img/{g.prompt}.png":
                out.append([0.0] * len(g.responses))
            else:
                good = "yes" if g.prompt.startswith("a") else "no"
                out.append([1.0 if r.startswith(good) else -1.0 for r in g.responses])
        return out


def test_evaluate_splits_by_hand():
    # 5 "a" pairs (all right) and 3 "b" pairs (the source prefers the rejected "no"): 5/8.
    heldout = [
        PreferencePair(id=f"{c}{k}", prompt=f"{c}{k}", chosen=f"yes {k}", rejected=f"no {k}",
                       images=(f"/img/{c}{k}.png",), category=c)
        for c, n in (("a", 5), ("b", 3)) for k in range(n)
    ]
    # Lengths 4 vs 2 (right), 1 vs 3 (wrong), 2 vs 2 (tie: wrong), 5 vs 1 (right): 2/4.
    hh = [PreferencePair(id=f"h{i}", prompt="p", chosen=c, rejected=r)
          for i, (c, r) in enumerate([("long", "no"), ("a", "abc"), ("ab", "cd"), ("hello", "x")])]
    got = evaluate_splits(ImageReader(), heldout, hh)
    # Shuffled, no pair keeps its own image: every pair ties, accuracy 0.
    assert got["accuracy"] == {SPLITS[0]: 5 / 8, SPLITS[1]: 0.0, SPLITS[2]: 0.5}
    assert got["image_effect_points"] == pytest.approx(62.5)
    assert got["per_category"] == {"a": 1.0, "b": 0.0}


@pytest.mark.slow
def test_quick_demo_aligns_trains_evaluates_and_saves(tmp_path, shared_data_path):
    from basereward.load import load_scorer
    from basereward.scoring.interface import score_pairs

    shared_data_path(f"hh-rlhf/{HH_FILE}")  # the demo writes its HH-RLHF split from this file
    out = tmp_path / "demo"
    results = run_demo(out_dir=str(out), quick=True, overrides=["train.seed=3"])

    # What is saved is what is returned (paths written as strings).
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results, default=str))

    counts = results["counts"]
    assert (counts["heldout"], counts["hh_val"], counts["train_visual"]) == (32, 16, 64)
    # mini-vl trains on the visual pairs and the word scenes (text-only binding curriculum) alone.
    assert counts["train_pairs"] == counts["train_visual"] + counts["word_scenes"] == 64 + 32
    scenes = load_pairs(out / "data" / "word-scenes" / "pairs.jsonl")
    assert len(scenes) == 32 and not any(p.images for p in scenes)
    acc = results["accuracy"]
    assert set(acc) == set(SPLITS)
    # Accuracies are whole pairs out of the split sizes.
    for split, n in zip(SPLITS, (32, 32, 16)):
        assert acc[split] * n == pytest.approx(round(acc[split] * n))
    assert results["image_effect_points"] == pytest.approx(100 * (acc[SPLITS[0]] - acc[SPLITS[1]]))
    # Per-category accuracies, weighted by the categories' sizes in the saved held-out file,
    # give back the overall held-out accuracy.
    sizes = Counter(p.category for p in load_pairs(out / "data" / "synth-heldout" / "pairs.jsonl"))
    assert set(results["per_category"]) == set(sizes)
    weighted = sum(results["per_category"][c] * n for c, n in sizes.items()) / sum(sizes.values())
    assert weighted == pytest.approx(acc[SPLITS[0]])

    # The training pairs come with their counterfactual twins: the same texts, answers swapped.
    train_pairs = load_pairs(out / "data" / "synth-train" / "pairs.jsonl")
    assert any((a.prompt, a.chosen, a.rejected) == (b.prompt, b.rejected, b.chosen) and a.images != b.images
               for a, b in zip(train_pairs, train_pairs[1:]))

    # The saved router is what was evaluated: image pairs go to the saved mini-vl model, the
    # text-only HH pairs to the text RM, and each scores as the model alone does.
    model = RewardModel.from_pretrained(out / "model")
    text_model = RewardModel.from_pretrained(out / "text-model")
    assert text_model.backbone.cfg.mini_vl.projector == "mlp"
    # The demo scores under its training precision (demo.yaml: bf16 autocast where the CPU has
    # native bf16), as `--precision bf16-where-fast` does.
    precision = "bf16-where-fast"
    router = load_scorer(out / "router", batch_size=32, precision=precision)
    hh_val = load_pairs(out / "data" / "hh-rlhf" / "hh_val.jsonl")[:16]
    text = Scorer(text_model, batch_size=32, precision=precision).score(hh_val)
    routed = score_pairs(router, hh_val)
    assert [s for pair in routed for s in pair] == pytest.approx([s for pair in text for s in pair], abs=1e-5)
    assert acc[SPLITS[2]] == pair_accuracy([c for c, _ in text], [r for _, r in text])
    heldout = load_pairs(out / "data" / "synth-heldout" / "pairs.jsonl")
    own = Scorer(model, batch_size=32, precision=precision).score(heldout)
    assert acc[SPLITS[0]] == pair_accuracy([c for c, _ in own], [r for _, r in own])
    assert results["router"]["routing"]["text"] >= 16

    # The alignment stage ran on the generator's grounded captions (and, with the demo's
    # align_zoom, on one zoomed-out copy of each) and its vocabulary was saved.
    assert (out / "data" / "synth-train" / "regions.jsonl").is_file()
    assert model.backbone.cfg.mini_vl.align_zoom > 0
    assert results["train"]["alignment"]["align_images"] == 2 * 64
    assert model.backbone.cfg.mini_vl.projector == "words" and "star" in model.backbone.image_words


@pytest.mark.slow
def test_quick_single_model_demo_mixes_text_pairs_in(tmp_path, shared_data_path):
    from basereward.data.synthetic import Variety
    from basereward.data.synthetic.paraphrases import TRAIN_BANK

    shared_data_path(f"hh-rlhf/{HH_FILE}")
    out = tmp_path / "single"
    results = run_demo(out_dir=str(out), quick=True, text_rm=False, variety=Variety())

    counts = results["counts"]
    assert counts["train_pairs"] > counts["train_visual"] == 64  # the HH-RLHF text pairs are mixed in
    assert "router" not in results and not (out / "router").exists() and not (out / "text-model").exists()
    # The plain generator: no padding sentence of the training bank.
    train_pairs = load_pairs(out / "data" / "synth-train" / "pairs.jsonl")
    assert not any(pad in pair.chosen + pair.rejected for pair in train_pairs for pad in TRAIN_BANK["pad"])
    # The saved model is the one evaluated: re-scoring the HH split (text only) gives its accuracy.
    hh_val = load_pairs(out / "data" / "hh-rlhf" / "hh_val.jsonl")[:16]
    scores = Scorer(RewardModel.from_pretrained(out / "model"), batch_size=32).score(hh_val)
    assert pair_accuracy([c for c, _ in scores], [r for _, r in scores]) == results["accuracy"][SPLITS[2]]
