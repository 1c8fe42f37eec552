"""Generative judges on the real backbone classes (tiny random causal LM, CPU).

Checks: KV-cached sampling equals transformers' own greedy `generate`; the judge's verdict log-odds
read from a batch equal a hand computation through the LM head; both-order scoring is
antisymmetric and cancels position bias; `basereward train` with model.paradigm=grm lowers the SFT
loss, saves, reloads and scores through the one interface (eval-ready).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers.tiny_models import tiny_causal_lm_dir

from basereward.cli import main
from basereward.config import BackboneConfig, JudgeConfig, ModelConfig, load_config
from basereward.data.pairs import save_pairs
from basereward.data.schema import Group, PreferencePair
from basereward.errors import ConfigError
from basereward.grm.judge import (
    GenerativeJudge,
    JudgeCollator,
    chosen_second,
    difference_trace,
    judge_target,
)
from basereward.load import load_scorer
from basereward.models.generation import answer_token_ids, lm_head_weight, sample
from basereward.models.reward_model import RewardModel


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return tiny_causal_lm_dir(tmp_path_factory.mktemp("grm"), name="qwen2")


def _model(lm_dir, paradigm="grm", **judge):
    bb = BackboneConfig(name="causal-lm", path=str(lm_dir), dtype="float32", attn_implementation="eager",
                        max_length=256)
    torch.manual_seed(0)
    return RewardModel(ModelConfig(backbone=bb, paradigm=paradigm, judge=JudgeConfig(**judge))).eval()


def test_cached_sampling_equals_transformers_greedy_generate(lm_dir):
    from transformers import AutoModelForCausalLM

    model = _model(lm_dir)
    bb = model.backbone
    group = Group(prompt="which colour is the sky", responses=())
    got = sample(bb, group, lead="<think>", n=3, max_new_tokens=10, temperature=0)
    assert len({tuple(s.token_ids) for s in got}) == 1  # greedy: the n rows agree
    batch = bb.collate([Group(prompt=group.prompt, responses=("<think>",))])
    ids = batch["input_ids"][0].tolist()
    tok = bb.collator.tokenizer
    # The prompt ends with the lead: everything before the template's end-of-turn tokens.
    end = ids.index(tok.convert_tokens_to_ids("<|im_end|>"), len(ids) - 4)
    ref = AutoModelForCausalLM.from_pretrained(str(lm_dir), dtype=torch.float32, attn_implementation="eager")
    out = ref.generate(torch.tensor([ids[:end]]), max_new_tokens=10, do_sample=False, eos_token_id=None,
                       pad_token_id=0)
    assert out[0, end:].tolist()[: len(got[0].token_ids)] == got[0].token_ids
    # The tiny model's head is untied: read from the checkpoint, equal to transformers' lm_head.
    assert torch.equal(lm_head_weight(bb), ref.lm_head.weight.detach())
    # Sampling is seeded.
    a = sample(bb, group, lead="<think>", n=2, max_new_tokens=6, temperature=1.0, seed=3)
    b = sample(bb, group, lead="<think>", n=2, max_new_tokens=6, temperature=1.0, seed=3)
    assert [s.token_ids for s in a] == [s.token_ids for s in b]


def test_verdict_log_odds_by_hand_and_order_symmetry(lm_dir):
    model = _model(lm_dir)
    bb = model.backbone
    judge = GenerativeJudge(model, batch_size=4)
    group = Group(prompt="2+2?", responses=("four", "five, definitely"))
    one, two = answer_token_ids(bb.collator.tokenizer)
    # By hand: the full sequence "<answer>1</answer>" through the decoder and the LM head; the
    # verdict is predicted at the token before it.
    from basereward.grm.judge import judge_group

    jg = judge_group("grm", group, "four", "five, definitely", judge_target("grm", 1))
    batch = bb.collate([jg])
    ids = batch["input_ids"][0].tolist()
    pos = len(ids) - 1 - ids[::-1].index(one)
    with torch.no_grad():
        h = bb.model(input_ids=batch["input_ids"]).last_hidden_state[0, pos - 1]
        logp = torch.log_softmax(h @ lm_head_weight(bb).T, -1)
    forward = float(logp[one] - logp[two])
    with torch.no_grad():
        h2 = bb.model(input_ids=bb.collate([judge_group("grm", group, "five, definitely", "four",
                                                        judge_target("grm", 1))])["input_ids"]).last_hidden_state
    ids2 = bb.collate([judge_group("grm", group, "five, definitely", "four", judge_target("grm", 1))])["input_ids"][0].tolist()
    pos2 = len(ids2) - 1 - ids2[::-1].index(one)
    logp2 = torch.log_softmax(h2[0, pos2 - 1] @ lm_head_weight(bb).T, -1)
    backward = float(logp2[one] - logp2[two])
    scores = judge.score_groups([group])[0]
    assert scores[0] == pytest.approx((forward - backward) / 2, abs=1e-4)
    assert scores[1] == pytest.approx(-scores[0], abs=1e-6)
    # Three responses: each is scored against both others; rewards sum to zero.
    three = judge.score_groups([Group(prompt="2+2?", responses=("four", "five", "4"))])[0]
    assert sum(three) == pytest.approx(0.0, abs=1e-5) and len(three) == 3


def test_judge_collator_balances_order_and_targets(lm_dir):
    model = _model(lm_dir)
    pairs = [Group(prompt=f"q{i}", responses=(f"good {i}", f"bad {i}")) for i in range(200)]
    swaps = [chosen_second(g, 0) for g in pairs]
    assert 70 < sum(swaps) < 130  # about half show the chosen response second
    batch = JudgeCollator(model.collator, "grm", 0)(pairs[:6])
    assert batch["answer_sign"].tolist() == [(-1.0 if s else 1.0) for s in swaps[:6]]
    assert judge_target("longcot-grm", 2, "a red cube", "a blue cube").endswith("<answer>2</answer>")
    assert "red" in difference_trace("a red cube", "a blue cube") and "blue" in difference_trace("a red cube", "a blue cube")


def test_judge_keys_need_a_generative_paradigm():
    with pytest.raises(ConfigError, match="model.judge.samples: model.paradigm=naive does not use it"):
        load_config(None, ["model.judge.samples=3"])


@pytest.mark.parametrize("paradigm", ["grm", "longcot-grm"])
def test_cli_trains_a_judge_that_scores_through_the_interface(lm_dir, tmp_path, paradigm):
    pairs = [PreferencePair(id=f"p{i}", prompt=f"Is {i} even?", chosen="yes" if i % 2 == 0 else "no",
                            rejected="no" if i % 2 == 0 else "yes") for i in range(8)]
    save_pairs(pairs, tmp_path / "pairs.jsonl")
    out = tmp_path / "run"
    cfg = tmp_path / "judge.yaml"
    cfg.write_text("model:\n  backbone:\n    name: causal-lm\n")
    rc = main(["train", str(cfg), f"model.backbone.path={lm_dir}",
               "model.backbone.dtype=float32", "model.backbone.max_length=256", f"model.paradigm={paradigm}",
               "model.judge.max_new_tokens=8", f"data.train=[{tmp_path / 'pairs.jsonl'}]",
               f"data.validation={tmp_path / 'pairs.jsonl'}", f"train.output_dir={out}",
               "train.global_batch_size=4", "train.micro_batch_size=2", "train.max_steps=6", "train.lr=3e-3",
               "train.warmup_ratio=0"])
    assert rc == 0
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in steps if "loss" in s]
    assert len(losses) == 6 and losses[-1] < losses[0]  # the SFT loss of the judge's turn falls
    source = load_scorer(out / "model")
    assert isinstance(source, GenerativeJudge) and source.paradigm == paradigm
    scores = source.score([pairs[0], pairs[1]])
    assert len(scores) == 2 and all(len(s) == 2 for s in scores)
    assert all(s[0] == pytest.approx(-s[1], abs=1e-6) for s in scores)
    assert "validation" in json.loads((out / "result.json").read_text())


def test_stable_reinforce_loop_updates_the_judge_and_logs_dynamics(lm_dir, tmp_path):
    import math

    from basereward.grm.parse import Verdict
    from basereward.grm.rl import (
        RLConfig,
        plot_dynamics,
        rl_train,
        rule_consistency,
        select_pairs,
    )

    model = _model(lm_dir, paradigm="longcot-grm")
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    pairs = [PreferencePair(id=f"p{i}", prompt=f"Is {i} even?", chosen="yes", rejected="no") for i in range(3)]
    recs = rl_train(model, pairs, RLConfig(steps=2, batch=2, rollouts=3, max_new_tokens=6, lr=1e-3), tmp_path,
                    progress=False)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == recs and len(recs) == 2
    for r in recs:
        assert math.isfinite(r["policy_loss"]) and 0 <= r["accuracy"] <= 1 and r["response_tokens"] > 0
    # The weights move exactly when some step's rollouts earned different rewards (equal rewards
    # give zero advantages, a zero loss gradient and no AdamW update).
    changed = any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)
    assert changed == any(r["reward_std"] > 0 for r in recs)
    kept, counts = select_pairs(model, pairs, k=3, max_new_tokens=4, progress=False)
    assert counts["candidates"] == 3 and counts["kept"] == len(kept) == 3 - counts["easy_first_try"]
    assert plot_dynamics({"full": recs}, tmp_path / "dyn.png").is_file()
    v = lambda think, choice: Verdict(choice=choice, format_ok=True, reason="ok", think=think)
    assert rule_consistency(None, v("Response 2 is vague; response 1 names the colour.", 1)) == 1.0
    assert rule_consistency(None, v("Response 1 is vague; Response 2 names it.", 1)) == 0.0
    assert rule_consistency(None, v("no names", 1)) == 0.0


@pytest.mark.parametrize("arch", ["qwen2.5-vl", "qwen2-vl"])
def test_qwen_vl_sampling_with_an_image_equals_transformers_generate(tmp_path, arch):
    """M-RoPE positions of generated tokens continue after the image as transformers places them."""
    from helpers.tiny_models import solid_image, tiny_qwen2vl_dir, tiny_qwen25vl_dir
    from transformers import AutoModelForImageTextToText

    make = tiny_qwen25vl_dir if arch == "qwen2.5-vl" else tiny_qwen2vl_dir
    d = make(tmp_path)
    img = tmp_path / "img.png"
    solid_image(84, 56, seed=1).save(img)
    bb_cfg = BackboneConfig(name=arch, path=str(d), dtype="float32", attn_implementation="eager", max_length=512)
    model = RewardModel(ModelConfig(backbone=bb_cfg, paradigm="longcot-grm")).eval()
    bb = model.backbone
    group = Group(prompt="what colour is it", responses=(), images=(str(img),))
    got = sample(bb, group, lead="<think>", n=2, max_new_tokens=8, temperature=0)
    from basereward.models.generation import _prompt_length

    batch = bb.collate([Group(prompt=group.prompt, responses=("<think>",), images=group.images)])
    n = _prompt_length(bb.collator.tokenizer, batch)
    ref = AutoModelForImageTextToText.from_pretrained(str(d), dtype=torch.float32, attn_implementation="eager").eval()
    out = ref.generate(input_ids=batch["input_ids"][:, :n], attention_mask=torch.ones(1, n, dtype=torch.long),
                       pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"],
                       max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0,
                       output_scores=True, return_dict_in_generate=True)
    tokens = out.sequences[0, n:].tolist()
    assert got[0].token_ids == tokens[: len(got[0].token_ids)]
    assert got[0].token_ids == got[1].token_ids
    ref_lp = sum(float(torch.log_softmax(sc[0].float(), -1)[t]) for sc, t in zip(out.scores, got[0].token_ids))
    assert got[0].log_prob == pytest.approx(ref_lp, abs=5e-3)
    # The rule `sample` continues positions by (the prompt's largest M-RoPE position + 1, then + 1
    # per token) is what the model's own get_rope_index gives the whole sequence on every axis.
    _, _, positions = bb.generation_prompt(batch, n)
    full = torch.tensor([batch["input_ids"][0, :n].tolist() + tokens])
    whole = bb.rope_positions(full, torch.ones_like(full), [batch["image_grid_thw"]], [0])  # (3, 1, T)
    assert torch.equal(whole[:, 0, :n], positions[:, 0])
    want = int(positions.max()) + 1 + torch.arange(len(tokens))
    assert all(torch.equal(whole[axis, 0, n:], want) for axis in range(3))
    assert int(positions.max()) + 1 < n  # the image really shifts them: not a 1-D continuation


def test_verdict_weight_adds_the_verdict_bt_loss(lm_dir, tmp_path):
    # Same init, same batches; a random tiny judge has verdict log-odds near 0, so the added term
    # 2 * mean(-log sigmoid(odds)) is close to 2 ln 2 at the first step.
    pairs = [PreferencePair(id=f"p{i}", prompt=f"Is {i} even?", chosen="yes", rejected="no") for i in range(4)]
    save_pairs(pairs, tmp_path / "pairs.jsonl")
    cfg = tmp_path / "judge.yaml"
    cfg.write_text("model:\n  backbone:\n    name: causal-lm\n")
    first = {}
    for w in (0.0, 2.0):
        out = tmp_path / f"w{w}"
        assert main(["train", str(cfg), f"model.backbone.path={lm_dir}", "model.backbone.dtype=float32",
                     "model.backbone.max_length=256", "model.paradigm=grm", f"model.judge.verdict_weight={w}",
                     f"data.train=[{tmp_path / 'pairs.jsonl'}]", f"train.output_dir={out}",
                     "train.global_batch_size=4", "train.micro_batch_size=2", "train.max_steps=1"]) == 0
        first[w] = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert first[2.0] - first[0.0] == pytest.approx(2 * math.log(2), abs=0.2)


def test_voting_cli_in_both_orders_equals_the_library(lm_dir, tmp_path):
    from basereward.grm.judge import sampled_verdicts
    from basereward.grm.voting import accuracy_vs_k_both_orders

    model = _model(lm_dir, paradigm="longcot-grm")
    model.save_pretrained(tmp_path / "judge")
    pairs = [PreferencePair(id=f"p{i}", prompt=f"Is {i} even?", chosen="yes", rejected="no") for i in range(3)]
    save_pairs(pairs, tmp_path / "pairs.jsonl")
    assert main(["grm", "voting", "--model", str(tmp_path / "judge"), "--pairs", str(tmp_path / "pairs.jsonl"),
                 "--ks", "1", "3", "--max-new-tokens", "4", "--both-orders", "--out", str(tmp_path / "v.json")]) == 0
    got = json.loads((tmp_path / "v.json").read_text())
    assert got["both_orders"] is True and got["pairs"] == 3
    # The documented seeds (--seed 0): pair i with the chosen response first draws with seed i,
    # with it second with seed 100003 + i.
    first = [sampled_verdicts(model.backbone, p, True, 3, 4, 1.0, seed=i) for i, p in enumerate(pairs)]
    second = [sampled_verdicts(model.backbone, p, False, 3, 4, 1.0, seed=100_003 + i) for i, p in enumerate(pairs)]
    want = accuracy_vs_k_both_orders(first, second, [1, 3])
    assert got["accuracy_vs_k"] == {"1": want[1], "3": want[3]}
