"""The held-out distribution and the training generator's variety options: wording disjoint from
training, determinism, padding on both sides alike, held-out colour/shape combinations never in
training, every category present, answers still true to the re-rendered pictures, and the
report function on a hand-made reward source."""

from __future__ import annotations

import collections
import re

import numpy as np
import pytest

from basereward.data import synthetic as S
from basereward.data.pairs import load_pairs
from basereward.data.schema import PreferencePair
from basereward.data.synthetic import phrases
from basereward.data.synthetic.combos import HELDOUT_COMBOS, key_combos, used_combos
from basereward.data.synthetic.heldout import HELDOUT_BANK, make_heldout_example
from basereward.data.synthetic.paraphrases import TRAIN_BANK
from basereward.data.synthetic.render import COLOUR_NAMES, PLURAL, SHAPES
from basereward.eval.visual_split import report_line, visual_report

N = 400
SHAPE_CATEGORIES = ("hallucination/object", "hallucination/color", "hallucination/count",
                    "hallucination/existence", "reasoning/spatial", "general/description")
VARIED = S.Variety(paraphrase=True, pad=0.3, layout=True, exclude_heldout_combos=True)


def _strings(bank) -> set[str]:
    """Every template and fixed phrase of a bank (yes/no pairs, relations, photo captions, padding)."""
    out: set[str] = set()
    for value in bank.values():
        for item in value.values() if isinstance(value, dict) else value:
            out |= set(item) if isinstance(item, tuple) else {item}
    return out


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z{}]+", text.lower()))


@pytest.fixture(scope="module")
def heldout():
    cats = S.assign_categories(N, 2)
    return [make_heldout_example(2, i, c) for i, c in enumerate(cats)]


@pytest.fixture(scope="module")
def varied():
    cats = S.assign_categories(300, 0)
    return [S.make_example(0, i, c, variety=VARIED) for i, c in enumerate(cats)]


def test_no_template_shared_between_the_banks():
    held, train = _strings(HELDOUT_BANK), _strings(TRAIN_BANK)
    assert held and train
    assert not held & train and not train & held
    # Not even after lowercasing and dropping punctuation.
    assert not {_norm(t) for t in held} & {_norm(t) for t in train}
    # The training bank holds every template the default generator uses, so "not in the training
    # bank" means "never used in training".
    default = {t for name in dir(phrases) if name.isupper() and isinstance(getattr(phrases, name), tuple)
               for item in getattr(phrases, name) for t in (item if isinstance(item, tuple) else (item,))}
    assert default and default <= train


def test_heldout_texts_use_no_training_template(heldout):
    # Every held-out prompt is one of the held-out question templates filled in; none starts like
    # a training question (the first three words of each training question template).
    starts = {" ".join(_norm(t).split()[:3]) for k, v in TRAIN_BANK.items() if k.endswith("_q") or "_q_" in k
              for t in v if "{" not in " ".join(t.split()[:3])}
    assert starts
    for ex in heldout:
        assert " ".join(_norm(ex.prompt).split()[:3]) not in starts, ex.prompt


def test_neutral_sentences_carry_no_fact():
    facts = set(COLOUR_NAMES) | set(SHAPES) | set(PLURAL.values()) | {
        "yes", "no", "not", "one", "two", "three", "four", "five", "left", "right", "above", "below", "bar"}
    for sentence in (*HELDOUT_BANK["pad"], *TRAIN_BANK["pad"]):
        assert not set(re.findall(r"[a-z]+", sentence.lower())) & facts, sentence
        assert not re.search(r"\d", sentence)


def test_deterministic_by_seed(tmp_path):
    a = S.generate_heldout(str(tmp_path / "a"), 24, seed=5, progress=False)
    b = S.generate_heldout(str(tmp_path / "b"), 24, seed=5, progress=False)
    assert (tmp_path / "a" / "pairs.jsonl").read_bytes() == (tmp_path / "b" / "pairs.jsonl").read_bytes()
    for pa, pb in zip(a, b):
        assert np.array_equal(np.asarray(_load(pa.images[0])), np.asarray(_load(pb.images[0])))
    c = S.generate_heldout(str(tmp_path / "c"), 24, seed=6, progress=False)
    assert [p.chosen for p in a] != [p.chosen for p in c]
    assert load_pairs(tmp_path / "a" / "pairs.jsonl") == a
    # The varied training generator is deterministic too, and Variety() is the default generator.
    for i, cat in enumerate(S.assign_categories(16, 3)):
        x, y = S.make_example(3, i, cat, variety=VARIED), S.make_example(3, i, cat, variety=VARIED)
        assert (x.prompt, x.chosen, x.rejected) == (y.prompt, y.chosen, y.rejected)
        assert np.array_equal(np.asarray(x.image), np.asarray(y.image))
        d, e = S.make_example(3, i, cat), S.make_example(3, i, cat, variety=S.Variety())
        assert (d.prompt, d.chosen, d.rejected, d.meta) == (e.prompt, e.chosen, e.rejected, e.meta)
        assert np.array_equal(np.asarray(d.image), np.asarray(e.image))


def _load(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def test_padding_on_both_sides_at_equal_rates(heldout, varied):
    for examples, expected in ((heldout, 0.5), (varied, 0.3)):
        sides = collections.Counter(side for ex in examples for side in ex.meta["padding"])
        n = len(examples)
        assert abs(sides["chosen"] / n - expected) < 0.08 and abs(sides["rejected"] / n - expected) < 0.08
        assert abs(sides["chosen"] - sides["rejected"]) / n < 0.08
        only = collections.Counter(tuple(sorted(ex.meta["padding"])) for ex in examples)
        assert only[("chosen",)] > 0.1 * n and only[("rejected",)] > 0.1 * n
    # The sentence is really there, before or after the answer.
    pads = HELDOUT_BANK["pad"]
    for ex in heldout:
        for side, where in ex.meta["padding"].items():
            text = getattr(ex, side)
            assert any((text.startswith(p) if where == "before" else text.endswith(p)) for p in pads)
    # Length alone is near chance.
    longer = np.mean([len(ex.chosen) > len(ex.rejected) for ex in heldout])
    assert 0.4 < longer < 0.6


def test_heldout_combos_never_in_the_varied_training_generator(varied):
    heldout_names = {f"{c} {s}" for s, c in HELDOUT_COMBOS} | {f"{c} {PLURAL[s]}" for s, c in HELDOUT_COMBOS}
    for ex in varied:
        assert not used_combos(ex.category, ex.meta) & HELDOUT_COMBOS
        text = f"{ex.prompt} {ex.chosen} {ex.rejected}"
        assert not any(re.search(rf"\b{name}\b", text) for name in heldout_names), text
        assert not any(r.text in heldout_names for r in S.example_regions(ex, ex.image.size[0]))
    # The default generator does use them (so the check above can fail), ...
    default = [S.make_example(0, i, c) for i, c in enumerate(S.assign_categories(300, 0))]
    assert sum(bool(used_combos(ex.category, ex.meta) & HELDOUT_COMBOS) for ex in default) > 30
    # ... and leaving them out keeps the labels balanced: yes chosen half the time, the true count
    # uniform (a redraw keeps the first draw's label).
    many = [S.make_example(1, i, c, variety=S.Variety(exclude_heldout_combos=True))
            for i, c in enumerate(S.assign_categories(700, 1, ["hallucination/existence", "hallucination/count"]))]
    yes = [ex.meta["present"] for ex in many if ex.category == "hallucination/existence"]
    counts = [ex.meta["true"] for ex in many if ex.category == "hallucination/count"]
    assert abs(np.mean(yes) - 0.5) < 0.07
    assert abs(np.mean(counts) - 2.5) < 0.2


def test_every_category_present_and_every_shape_question_on_a_heldout_combo(heldout):
    cats = collections.Counter(ex.category for ex in heldout)
    assert set(cats) == set(S.CATEGORIES)
    assert min(cats[c] for c in SHAPE_CATEGORIES) >= 40
    for ex in heldout:
        if ex.category in SHAPE_CATEGORIES:
            assert key_combos(ex.category, ex.meta) & HELDOUT_COMBOS
            assert ex.meta["heldout_combos"]
    # The combination sits in the chosen and in the rejected answer alike (colour: about half each).
    colour = [ex for ex in heldout if ex.category == "hallucination/color"]
    in_true = np.mean([(ex.meta["objects"][0]["shape"], ex.meta["true"]) in HELDOUT_COMBOS for ex in colour])
    assert 0.3 < in_true < 0.7
    assert abs(np.mean([ex.meta["present"] for ex in heldout if ex.category == "hallucination/existence"]) - 0.5) < 0.15


def test_heldout_pictures_differ_from_training_and_answers_stay_true(heldout):
    assert {ex.image.size[0] for ex in heldout} == {160, 288, 320}
    assert {ex.meta["texture"] for ex in heldout if "objects" in ex.meta} == {"gradient", "noisy", "dotted", "vignette"}
    for ex in heldout:
        meta = ex.meta
        if "objects" in meta:
            for o in meta["objects"]:  # the object's interior has its (shaded) colour
                x, y = o["center"]
                assert np.abs(np.asarray(ex.image.getpixel((round(x), round(y)))) - o["rgb"]).max() <= 2
        if ex.category == "reasoning/spatial":
            (ax, ay), (bx, by) = meta["objects"][0]["center"], meta["objects"][1]["center"]
            rel = {"left": bx - ax, "right": ax - bx, "above": by - ay, "below": ay - by}[meta["true"]]
            assert rel >= 0.12 * ex.image.size[0]
        if "bars" in meta:  # bar tops where the values say
            for b in meta["bars"]:
                assert b["top"] == pytest.approx(meta["baseline"] - b["value"] * meta["px_per_unit"], abs=1)
                col = np.asarray(ex.image.getpixel(((b["x0"] + b["x1"]) // 2, b["top"] + 2)))
                assert np.abs(col - S.COLOURS[b["colour"]]).max() == 0


def test_training_wording_varies_relations_polarity_and_lead_ins():
    from basereward.data.synthetic.paraphrases import TRAIN_LEADS, TRAIN_RELATIONS

    cats = S.assign_categories(600, 4, ["reasoning/spatial", "hallucination/existence", "hallucination/color"])
    examples = [S.make_example(4, i, c, variety=S.Variety(paraphrase=True)) for i, c in enumerate(cats)]
    spatial = [ex for ex in examples if ex.category == "reasoning/spatial"]
    used = collections.Counter()
    for ex in spatial:
        # One wording style for both answers: the true relation's k-th phrase in the chosen answer,
        # the fake relation's k-th phrase in the rejected one, nothing else differs.
        k = next(k for k in range(5) if TRAIN_RELATIONS[ex.meta["true"]][k] in ex.chosen
                 and ex.chosen.replace(TRAIN_RELATIONS[ex.meta["true"]][k], TRAIN_RELATIONS[ex.meta["fake"]][k], 1)
                 == ex.rejected)
        used[k] += 1
    assert len(used) == 5  # every wording is drawn
    # Existence answers are not all "Yes"/"No" first: polarity is carried by other words too.
    firsts = collections.Counter(ex.chosen.split()[0].strip(",.:").lower() for ex in examples
                                 if ex.category == "hallucination/existence")
    assert firsts["yes"] + firsts["no"] < 0.7 * sum(firsts.values())
    # A lead-in goes before both answers of about a third of the pairs, the answer's first letter
    # lowered ("I" kept).
    led = [ex for ex in examples if any(ex.chosen.startswith(lead) for lead in TRAIN_LEADS)]
    assert 0.25 < len(led) / len(examples) < 0.42
    for ex in led:
        lead = next(lead for lead in TRAIN_LEADS if ex.chosen.startswith(lead))
        assert ex.rejected.startswith(lead)
        rest = ex.chosen[len(lead):]
        assert rest[0].islower() or rest.startswith("I ") or rest[0].isdigit(), ex.chosen
    # The default generator has none of this (its output is pinned elsewhere); one of its spatial
    # templates happens to open like the first lead-in.
    default = [S.make_example(4, i, c) for i, c in enumerate(cats[:100])]
    assert not any(ex.chosen.startswith(TRAIN_LEADS[1:]) for ex in default)


class ImageReader:
    """Needs the pair's own image: right with it ("/img/<prompt>.png"), a tie (wrong) without."""

    def score_groups(self, groups):
        return [[0.0, 0.0] if g.images[0] != f"/img/{g.prompt}.png" else [1.0, -1.0 if g.prompt[0] == "a" else 2.0]
                for g in groups]


def test_visual_report_by_hand():
    # Category a: 3 pairs, all right; category b: 2 pairs, all wrong (the source prefers rejected).
    pairs = [PreferencePair(id=f"{c}{k}", prompt=f"{c}{k}", chosen="x", rejected="y", images=(f"/img/{c}{k}.png",),
                            category=c) for c, n in (("a", 3), ("b", 2)) for k in range(n)]
    got = visual_report(ImageReader(), pairs)
    assert got["pairs"] == 5
    assert got["accuracy"] == pytest.approx(3 / 5) and got["shuffled"] == 0.0
    assert got["image_effect_points"] == pytest.approx(60.0)
    assert got["per_category"] == {"a": 1.0, "b": 0.0}
    assert got["per_category_shuffled"] == {"a": 0.0, "b": 0.0}
    # Wilson 95%: 3 of 5 -> [0.2307, 0.8824], 0 of 5 -> [0, 0.4345]; the per-pair differences
    # (1, 1, 1, 0, 0): mean 0.6, sd sqrt(0.3), 0.6 +- 1.96 * 0.5477 / sqrt(5) = [0.1199, 1.0801 -> 1].
    ci = got["interval95"]
    assert ci["accuracy"] == pytest.approx((0.23072, 0.88238), abs=1e-4)
    assert ci["shuffled"] == pytest.approx((0.0, 0.43448), abs=1e-4)
    assert ci["image_effect_points"] == pytest.approx((11.9909, 100.0), abs=1e-3)
    assert report_line(got) == "60.0% / 0.0% shuffled; a 100.0, b 0.0"


def test_shift_takes_each_factor_from_the_training_generator_when_turned_off():
    from basereward.data.synthetic.combos import HELDOUT_COMBOS, used_combos
    from basereward.data.synthetic.heldout import Shift, make_heldout_example
    from basereward.data.synthetic.layouts import HELDOUT_LAYOUT, TRAIN_LAYOUT

    cats = S.assign_categories(48, 2)
    default = [make_heldout_example(2, i, c) for i, c in enumerate(cats)]
    assert [(e.prompt, e.chosen) for e in default] == [
        (e.prompt, e.chosen) for e in (make_heldout_example(2, i, c, Shift()) for i, c in enumerate(cats))]
    assert {e.image.size[0] for e in default} <= set(HELDOUT_LAYOUT.sizes)
    assert any(e.meta["heldout_combos"] for e in default) and any(e.meta["padding"] for e in default)

    plain = [make_heldout_example(2, i, c, Shift(layout=False, combos=False, padding=False)) for i, c in enumerate(cats)]
    assert {e.image.size[0] for e in plain} <= set(TRAIN_LAYOUT.sizes)
    assert not any(e.meta["padding"] for e in plain)
    assert not any(used_combos(e.category, e.meta) & HELDOUT_COMBOS for e in plain)
    assert [e.category for e in plain] == cats

    reworded = [make_heldout_example(2, i, c, Shift(wording=False)) for i, c in enumerate(cats)]
    pads = [s for e in reworded for s in TRAIN_BANK["pad"] if s in e.chosen + " " + e.rejected]
    assert pads and not any(s in e.chosen + e.rejected for e in reworded for s in HELDOUT_BANK["pad"])
    # Same facts and pictures, other words: the images are the held-out distribution's.
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(default, reworded))
    assert sum(a.prompt != b.prompt for a, b in zip(default, reworded)) > 40
