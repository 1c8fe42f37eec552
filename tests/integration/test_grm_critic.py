"""Critic-RM on the real causal-LM backbone (tiny random model, CPU).

Checks: critiques are the critic's greedy continuation after the lead, appended in the documented
format; the critiqued pair file round-trips; CriticRM's scores equal the Scorer's on critiqued
texts built by hand; a response shared by several groups is critiqued once; a saved critic-RM
directory loads through `load_scorer` (and the `score` command) and scores identically.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers.tiny_models import tiny_causal_lm_dir

from basereward.cli import main
from basereward.config import BackboneConfig, ModelConfig
from basereward.data.pairs import load_pairs, save_pairs
from basereward.data.schema import Group, PreferencePair
from basereward.grm.critic import (
    CRITIC_LEAD,
    Critic,
    CriticRM,
    add_critiques,
    critique_prompt,
    with_critique,
)
from basereward.load import load_scorer
from basereward.models.generation import sample
from basereward.models.reward_model import RewardModel
from basereward.scoring.scorer import Scorer

MAX_NEW = 6


def _model(lm_dir, seed: int) -> RewardModel:
    bb = BackboneConfig(name="causal-lm", path=str(lm_dir), dtype="float32", attn_implementation="eager",
                        max_length=256)
    torch.manual_seed(seed)
    return RewardModel(ModelConfig(backbone=bb)).eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("critic")
    lm_dir = tiny_causal_lm_dir(root, name="qwen2")
    critic, rm = _model(lm_dir, 0), _model(lm_dir, 1)
    # The reward head's last layer starts at zero; give it weights so scores differ between texts.
    with torch.no_grad():
        for p in rm.head.parameters():
            p.normal_(0, 0.5)
    critic.save_pretrained(root / "critic")
    rm.save_pretrained(root / "rm")
    return root, critic, rm


PAIRS = [
    PreferencePair(id="a", prompt="Is 4 even?", chosen="yes", rejected="no", category="math"),
    PreferencePair(id="b", prompt="Is 4 even?", chosen="yes", rejected="maybe", category="math"),
    PreferencePair(id="c", prompt="What colour is the sky?", chosen="blue", rejected="green {r2}"),
]


def _by_hand(critic: RewardModel, prompt: str, response: str) -> str:
    asked = Group(prompt=critique_prompt(prompt, response), responses=())
    return sample(critic.backbone, asked, CRITIC_LEAD, n=1, max_new_tokens=MAX_NEW, temperature=0)[0].text.strip()


def test_critiqued_pairs_are_greedy_in_the_documented_format_and_round_trip(models, tmp_path):
    _, critic, _ = models
    out = add_critiques(critic, PAIRS, max_new_tokens=MAX_NEW)
    assert [p.id for p in out] == ["a", "b", "c"] and out[0].category == "math"
    for src, got in zip(PAIRS, out):
        for field in ("chosen", "rejected"):
            text = getattr(src, field)
            assert getattr(got, field) == f"{text}\n\nCritique: {_by_hand(critic, src.prompt, text)}"
    assert add_critiques(critic, PAIRS, max_new_tokens=MAX_NEW) == out  # deterministic (greedy)
    save_pairs(out, tmp_path / "critiqued.jsonl")
    assert load_pairs(tmp_path / "critiqued.jsonl") == out


def test_critic_rm_scores_equal_the_scorer_on_critiqued_texts_and_cache_shared_responses(models):
    _, critic, rm = models
    scorer = Scorer(rm, batch_size=4)
    crm = CriticRM(critic, scorer, max_new_tokens=MAX_NEW)
    groups = [p.to_group() for p in PAIRS]
    got = crm.score_groups(groups)
    by_hand = [Group(prompt=g.prompt, responses=tuple(with_critique(r, _by_hand(critic, g.prompt, r))
                                                      for r in g.responses)) for g in groups]
    assert got == Scorer(rm, batch_size=4).score_groups(by_hand)
    # "yes" to "Is 4 even?" appears in two groups: 6 responses, 5 distinct critiques.
    c = crm.counters()
    assert c["judgements"] == 5 and c["cache_hits"] == 1 and c["generated_tokens"] > 0
    assert c["seconds"] > 0 and c["scoring_seconds"] > 0
    # Scoring again generates nothing new; pairs score through the same interface.
    assert crm.score(PAIRS) == [tuple(s) for s in got]
    assert crm.counters()["judgements"] == 5 and crm.counters()["cache_hits"] == 7
    # The critique changes what the head sees, so the critic-RM is not the bare scorer.
    assert got != scorer.score_groups(groups)


def test_cache_is_bounded_and_keys_on_images(models):
    from helpers.tiny_models import solid_image

    _, critic, _ = models
    c = Critic(critic, max_new_tokens=2, cache_size=2)
    for r in ("a", "b", "c", "a"):
        c.critique(Group(prompt="q", responses=()), r)
    assert c.judgements == 4 and c.cache_hits == 0  # "a" was evicted (least recently used)
    assert len(c._cache) == 2
    # Images enter the key by content (a copy of an image is the same key), paths as they are.
    from basereward.grm.critic import _image_key

    im1, im2 = solid_image(8, 8, seed=1), solid_image(8, 8, seed=2)
    assert _image_key(im1) == _image_key(im1.copy()) and _image_key(im1) != _image_key(im2)
    assert _image_key("/x/y.png") == "/x/y.png"


def test_saved_critic_rm_loads_through_load_scorer_and_the_score_command(models, tmp_path):
    root, critic, rm = models
    out = tmp_path / "crm"
    assert main(["grm", "critic-rm", "--critic", str(root / "critic"), "--scorer", str(root / "rm"),
                 "--output", str(out), "--max-new-tokens", str(MAX_NEW)]) == 0
    spec = json.loads((out / "critic_rm.json").read_text())
    assert spec["kind"] == "critic-rm" and not spec["critic"].startswith("/")  # relative: the folder moves
    loaded = load_scorer(out, batch_size=4, device="cpu")
    assert isinstance(loaded, CriticRM) and loaded.critic.max_new_tokens == MAX_NEW
    expected = CriticRM(critic, Scorer(rm, batch_size=4), max_new_tokens=MAX_NEW).score(PAIRS)
    assert loaded.score(PAIRS) == expected
    # The normal commands use it unchanged.
    save_pairs(PAIRS, tmp_path / "pairs.jsonl")
    assert main(["score", "--model", str(out), "--pairs", str(tmp_path / "pairs.jsonl"),
                 "--output", str(tmp_path / "scores.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "scores.jsonl").read_text().splitlines()]
    flat = [x for pair in expected for x in pair]
    # The command scores in batches of 16, `expected` in batches of 4: float32 sums in another
    # order may differ by a few units in the last place (seen: 1.9e-6 on a reward of 6.07).
    assert [x for r in rows for x in (r["chosen_reward"], r["rejected_reward"])] == pytest.approx(flat, abs=1e-5)
    # A task router between the bare RM and the critic-RM, fitted and saved by the CLI, loads through
    # load_scorer and scores each group with the source its key routes to.
    assert main(["grm", "route", "--sources", str(root / "rm"), str(out), "--names", "naive", "critic",
                 "--val", str(tmp_path / "pairs.jsonl"), "--output", str(tmp_path / "router"),
                 "--min-pairs", "1"]) == 0
    router = load_scorer(tmp_path / "router", batch_size=4, device="cpu")
    report = json.loads((tmp_path / "router" / "routing.json").read_text())
    assert (tmp_path / "router" / "routing.md").is_file() and report["n_pairs"] == 3
    groups = [p.to_group() for p in PAIRS]
    sources = {"naive": Scorer(rm, batch_size=4), "critic": loaded}
    assert isinstance(router.sources[1], CriticRM)
    got = [x for row in router.score_groups(groups) for x in row]
    want = [x for g in groups for x in sources[router.route_of(g)].score_groups([g])[0]]
    assert got == pytest.approx(want, abs=1e-5)  # batched vs one at a time: padding moves the last digits


def test_critique_command_writes_the_file_add_critiques_makes(models, tmp_path):
    root, critic, _ = models
    save_pairs(PAIRS, tmp_path / "pairs.jsonl")
    assert main(["grm", "critique", "--critic", str(root / "critic"), "--pairs", str(tmp_path / "pairs.jsonl"),
                 "--out", str(tmp_path / "c.jsonl"), "--max-new-tokens", str(MAX_NEW)]) == 0
    assert load_pairs(tmp_path / "c.jsonl") == add_critiques(critic, PAIRS, max_new_tokens=MAX_NEW)
