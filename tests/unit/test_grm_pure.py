"""grm/: StableReinforce, verdict parsing, judge prompts and voting, against numbers derived by hand."""

import itertools
import math

import pytest
import torch

from basereward.errors import BaseRewardError
from basereward.grm import (
    ANSWER_TOKENS,
    LOG_RATIO_MAX,
    REASONS,
    Verdict,
    accuracy_vs_k,
    accuracy_vs_k_both_orders,
    attempts_needed,
    filter_advantages,
    final_reward,
    grm_prompt,
    longcot_prompt,
    parse_verdict,
    policy_loss,
    policy_loss_stats,
    select_for_rl,
    vote,
    vote_until,
)

D = torch.float64


def t(x, dtype=D):
    return torch.tensor(x, dtype=dtype)


# ------------------------------------------------------------------ policy loss


@pytest.mark.parametrize("adv", [-1.0, -2.5])
def test_seed_instability_example(adv):
    # The old policy is far from the current one: log(pi / pi_old) = +20 on the only token, and the
    # advantage is negative. PPO's min picks ratio * A (the clipped branch is only -1.2|A|), so
    # plain PPO's loss is e^20 |A| ~ 4.9e8 |A|; the pre-clip caps the ratio at 1e3.
    new = t([[0.0]], D).requires_grad_()
    old = t([[-20.0]])
    mask = t([[1.0]])
    a = t([adv])
    plain = policy_loss(new, old, a, mask, pre_clip=False)
    assert plain.item() == pytest.approx(math.exp(20) * abs(adv), rel=1e-12)
    assert plain.item() > 4.8e8 * abs(adv)
    (g_plain,) = torch.autograd.grad(plain, new)
    assert g_plain.item() == pytest.approx(math.exp(20) * abs(adv), rel=1e-12)  # d(-r A)/d log pi = -A r

    new2 = t([[0.0]], D).requires_grad_()
    stable = policy_loss(new2, old, a, mask)
    assert stable.item() == pytest.approx(1e3 * abs(adv), rel=1e-12)
    assert stable.item() <= 1e3 * abs(adv) * (1 + 1e-12)
    (g_stable,) = torch.autograd.grad(stable, new2)
    assert g_stable.item() == 0.0  # beyond the clamp the token pushes nothing


def test_float32_overflow_is_prevented():
    # e^100 overflows float32 (max ~3.4e38): plain PPO gives inf, the pre-clipped loss stays 1e3.
    new, old, mask, a = t([[0.0]], torch.float32), t([[-100.0]], torch.float32), t([[1.0]], torch.float32), t([-1.0], torch.float32)
    assert math.isinf(policy_loss(new, old, a, mask, pre_clip=False).item())
    assert policy_loss(new, old, a, mask).item() == pytest.approx(1e3, rel=1e-5)


def test_positive_advantage_is_capped_by_ppo_clip_either_way():
    # ratio e^20 with A = 2: min(2 e^20, 1.2 * 2) = 2.4, so both losses are -2.4
    new, old, mask, a = t([[0.0]]), t([[-20.0]]), t([[1.0]]), t([2.0])
    assert policy_loss(new, old, a, mask, pre_clip=False).item() == pytest.approx(-2.4)
    assert policy_loss(new, old, a, mask).item() == pytest.approx(-2.4)


def test_lower_pre_clip_bound():
    # log ratio -20, A = 1: plain min(e^-20, 0.8) = e^-20; pre-clipped ratio is 1e-3
    new, old, mask, a = t([[0.0]]), t([[20.0]]), t([[1.0]]), t([1.0])
    assert policy_loss(new, old, a, mask, pre_clip=False).item() == pytest.approx(-math.exp(-20), rel=1e-9)
    assert policy_loss(new, old, a, mask).item() == pytest.approx(-1e-3, rel=1e-9)


def _hand_batch():
    # seq 0: ratios 1.0, 1.5 and a padded token (log ratio +50); A = +1
    # seq 1: ratio 0.5 and two padded tokens;                    A = -1
    log_r = t([[0.0, math.log(1.5), 50.0], [math.log(0.5), 50.0, -50.0]])
    old = t([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]])
    new = old + log_r
    mask = t([[1, 1, 0], [1, 0, 0]])
    return new, old, mask


def test_masked_mean_by_hand_and_padding_ignored():
    # token losses: -min(1*1, 1*1) = -1;  -min(1.5, 1.2) = -1.2;  -min(-0.5, 0.8 * -1) = 0.8
    # mean over the 3 unmasked tokens: (-1 - 1.2 + 0.8) / 3
    new, old, mask = _hand_batch()
    expected = (-1.0 - 1.2 + 0.8) / 3
    for adv in (t([1.0, -1.0]), t([[1.0], [-1.0]]), t([[1.0] * 3, [-1.0] * 3])):
        assert policy_loss(new, old, adv, mask).item() == pytest.approx(expected, rel=1e-12)
        assert policy_loss(new, old, adv, mask, pre_clip=False).item() == pytest.approx(expected, rel=1e-12)
    # whatever sits under the padding does not change the loss
    new2 = new.clone()
    new2[0, 2] = 1e4
    new2[1, 1:] = -1e4
    assert policy_loss(new2, old, t([1.0, -1.0]), mask).item() == pytest.approx(expected, rel=1e-12)
    # a boolean mask works the same
    assert policy_loss(new, old, t([1.0, -1.0]), mask.bool()).item() == pytest.approx(expected, rel=1e-12)


def test_pre_clip_is_a_no_op_inside_the_bounds():
    g = torch.Generator().manual_seed(0)
    old = torch.randn(4, 7, generator=g, dtype=D)
    new = old + torch.empty(4, 7, dtype=D).uniform_(-6.0, 6.0, generator=g)  # |log ratio| < ln 1e3 = 6.91
    adv = torch.randn(4, 1, generator=g, dtype=D)
    mask = (torch.rand(4, 7, generator=g) > 0.3).to(D)
    assert policy_loss(new, old, adv, mask).item() == pytest.approx(
        policy_loss(new, old, adv, mask, pre_clip=False).item(), rel=1e-12)


def test_empty_mask_gives_zero_with_a_graph():
    new = torch.zeros(2, 3, dtype=D, requires_grad=True)
    loss = policy_loss(new, torch.zeros(2, 3, dtype=D), t([1.0, -1.0]), torch.zeros(2, 3, dtype=D))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(new.grad, torch.zeros(2, 3, dtype=D))


def test_policy_loss_stats_by_hand():
    new, old, mask = _hand_batch()
    s = policy_loss_stats(new, old, t([1.0, -1.0]), mask)
    assert s["loss"] == pytest.approx((-1.0 - 1.2 + 0.8) / 3)
    assert s["clip_frac"] == pytest.approx(2 / 3)  # 1.5 and 0.5 lie outside [0.8, 1.2]
    assert s["mean_ratio"] == pytest.approx((1.0 + 1.5 + 0.5) / 3)
    assert s["pre_clip_frac"] == 0.0  # the +-50 log ratios are padding
    assert s["max_abs_log_ratio"] == pytest.approx(math.log(2))
    far = policy_loss_stats(t([[0.0, 0.0]]), t([[-20.0, 0.0]]), t([-1.0]), t([[1.0, 1.0]]))
    assert far["pre_clip_frac"] == 0.5
    assert far["mean_ratio"] == pytest.approx((1e3 + 1.0) / 2)
    assert LOG_RATIO_MAX == pytest.approx(math.log(1000))


@pytest.mark.parametrize("args", [
    (torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2), torch.ones(2, 3)),      # old shape
    (torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3)),      # advantages (3,) vs B=2
    (torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 2), torch.ones(2, 3)),   # advantages (2, 2)
    (torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2), torch.ones(2, 2)),      # mask shape
    (torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.ones(3)),               # not (B, T)
])
def test_policy_loss_shape_errors(args):
    with pytest.raises(BaseRewardError, match="policy_loss"):
        policy_loss(*args)


def test_clip_eps_range():
    with pytest.raises(BaseRewardError, match="clip_eps"):
        policy_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1), clip_eps=1.5)


# ------------------------------------------------------------------ advantage filter


def test_filter_removes_exactly_the_outlier():
    # sixteen 0s and one 17: mean 1, population var (16 * 1 + 16^2) / 17 = 16, std 4
    # z = -0.25 for the zeros (kept) and (17 - 1) / 4 = 4 > 3 for the outlier (set to 0)
    out = filter_advantages(t([0.0] * 16 + [17.0]))
    assert torch.allclose(out, t([-0.25] * 16 + [0.0], torch.float32))


def test_filter_keeps_the_boundary():
    # nine 0s and one 10: mean 1, var (9 + 81) / 10 = 9, std 3; the outlier's z = 9 / 3 = 3 exactly -> kept
    out = filter_advantages(t([0.0] * 9 + [10.0]))
    assert torch.allclose(out, t([-1 / 3] * 9 + [3.0], torch.float32))


def test_filter_on_the_papers_low_variance_batch():
    # 255 rewards of 1 and one 0 (the paper's example): p = 255/256, std = sqrt(p (1 - p)) = sqrt(255) / 256
    # z(0) = -(255/256) / std = -sqrt(255) = -15.97 -> filtered; z(1) = 1 / sqrt(255) = 0.0626 -> kept
    out = filter_advantages(t([1.0] * 255 + [0.0]))
    assert out[-1].item() == 0.0
    assert torch.allclose(out[:-1], torch.full((255,), 1 / math.sqrt(255)), rtol=1e-5)


def test_released_filter_differs_from_the_paper():
    # A = [6, 4, 6, 4]: mean 5, std 1, z = [1, -1, 1, -1]. Paper: |z| <= 3, all kept.
    # Released: keeps z in [mean - 3, mean + 3] = [2, 8] -> every entry is zeroed.
    a = t([6.0, 4.0, 6.0, 4.0])
    assert torch.allclose(filter_advantages(a), t([1.0, -1.0, 1.0, -1.0], torch.float32))
    assert torch.equal(filter_advantages(a, mode="released"), torch.zeros(4))
    # and the other way: sixteen 0s and one 34 -> mean 2, std 8, outlier z = 32 / 8 = 4.
    # Paper drops it (|z| > 3); released keeps it (4 lies in [2 - 3, 2 + 3] = [-1, 5]).
    b = t([0.0] * 16 + [34.0])
    paper, released = filter_advantages(b), filter_advantages(b, mode="released")
    assert paper[-1].item() == 0.0
    assert released[-1].item() == pytest.approx(4.0)
    assert torch.allclose(paper[:-1], torch.full((16,), -0.25))
    assert torch.allclose(released[:-1], torch.full((16,), -0.25))


def test_modes_agree_when_the_raw_mean_is_zero():
    a = t([3.0, -3.0, 1.0, -1.0, 0.5, -0.5])
    assert torch.allclose(filter_advantages(a), filter_advantages(a, mode="released"), atol=1e-6)


def test_filter_mask_and_degenerate_batches():
    a = t([[6.0, 4.0, 999.0], [6.0, 4.0, -999.0]])
    mask = t([[1, 1, 0], [1, 1, 0]])
    assert torch.allclose(filter_advantages(a, mask=mask), t([[1.0, -1.0, 0.0], [1.0, -1.0, 0.0]], torch.float32))
    same = filter_advantages(t([0.7] * 5))  # zero variance: z = 0, not NaN
    assert torch.equal(same, torch.zeros(5))
    assert filter_advantages(torch.zeros(0)).numel() == 0
    with pytest.raises(BaseRewardError, match="mode"):
        filter_advantages(a, mode="raw")
    with pytest.raises(BaseRewardError, match="mask shape"):
        filter_advantages(a, mask=torch.ones(2))


# ------------------------------------------------------------------ reward and difficulty


@pytest.mark.parametrize("result, consistency, fmt, expected", [
    (1, 1, 1, 2.0), (1, 0, 1, 1.5), (1, 1, 0, 1.5), (1, 0, 0, 1.0),
    (0, 1, 1, 0.5), (0, 0, 1, 0.5), (0, 1, 0, 0.0), (0, 0, 0, 0.0),
])
def test_final_reward_table(result, consistency, fmt, expected):
    assert final_reward(result, consistency, fmt) == pytest.approx(expected)


def test_final_reward_on_tensors():
    r = final_reward(t([1.0, 1.0, 0.0]), t([1.0, 0.0, 1.0]), t([1.0, 1.0, 1.0]))
    assert torch.allclose(r, t([2.0, 1.5, 0.5]))


def test_progressive_difficulty_rule():
    items = [
        [True],                   # right at the first attempt -> easy, cold start only
        [False, True],            # needed 2 attempts -> RL
        [False, False, True],     # needed 3 -> RL
        [False, False, False],    # never in 3 -> RL
        [True, False, False],     # right first (later misses do not matter) -> dropped
        [False, True, True],      # -> RL
    ]
    assert [attempts_needed(o) for o in items] == [1, 2, 3, None, 1, 2]
    assert select_for_rl(items) == [1, 2, 3, 5]
    # one correct answer out of three can be easy or hard: a count cannot express the rule
    assert select_for_rl([[True, False, False], [False, False, True]]) == [1]
    # only the first k attempts count
    assert attempts_needed([False, False, False, True], k=3) is None
    assert select_for_rl([[False, True]], k=1) == [0]


def test_progressive_difficulty_needs_k_attempts_to_say_never():
    with pytest.raises(BaseRewardError, match="cannot tell"):
        select_for_rl([[False, False]], k=3)
    with pytest.raises(BaseRewardError, match="k must be"):
        attempts_needed([True], k=0)


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize("text, choice, format_ok, reason, think", [
    ("<think>R2 names the red square.</think><answer>2</answer>", 2, True, "ok", "R2 names the red square."),
    ("  <think> a b </think>\n<answer> 1 </answer>\n", 1, True, "ok", "a b"),
    ("<think>a</think><answer>**2**</answer>", 2, True, "ok", "a"),
    ("<think>a</think><answer>Response 1.</answer>", 1, True, "ok", "a"),
    ("<think>a</think><answer>Overall Judgment: Answer 2 is better than Answer 1.</answer>", 2, True, "ok", "a"),
    ("<think>Response 1 errs; Response 2 is right.</think><answer>2</answer>", 2, True, "ok",
     "Response 1 errs; Response 2 is right."),
    # both numbers / none
    ("<think>a</think><answer>1 or 2</answer>", None, True, "ambiguous", "a"),
    ("<think>a</think><answer>neither</answer>", None, True, "no_choice", "a"),
    ("<think>a</think><answer>3</answer>", None, True, "no_choice", "a"),
    ("<think>a</think><answer>12</answer>", None, True, "no_choice", "a"),
    ("<think>a</think><answer>1.5</answer>", None, True, "no_choice", "a"),
    # tags and extra text
    ("<THINK>a</THINK><Answer>1</Answer>", 1, False, "tag_case", "a"),
    ("<think>a</think><answer>1</answer> Hope this helps", 1, False, "extra_text", "a"),
    ("Sure! <think>a</think><answer>2</answer>", 2, False, "extra_text", "a"),
    ("<think>a</think><think>b</think><answer>2</answer>", 2, False, "extra_text", "a"),
    ("<answer>1</answer>", 1, False, "missing_think", ""),
    ("<think>long reasoning <answer>1</answer>", 1, False, "missing_think", "long reasoning"),
    ("<think>a</think><answer>1</answer><answer>1</answer>", 1, False, "multiple_answer_tags", "a"),
    ("<think>a</think><answer>1</answer><answer>2</answer>", None, False, "ambiguous", "a"),
    ("<think>a</think><answer>2", 2, False, "unclosed_answer_tag", "a"),
    ("<think>a</think>\n1", 1, False, "missing_answer_tag", "a"),
    ("<think>Response 2 is better.</think>", 2, False, "missing_answer_tag", "Response 2 is better."),
    ("I prefer 2.", 2, False, "missing_answer_tag", "I prefer 2."),
    ("Response 1 is vague and Response 2 is wrong", None, False, "ambiguous",
     "Response 1 is vague and Response 2 is wrong"),
    ("", None, False, "empty", ""),
    ("  \n ", None, False, "empty", ""),
])
def test_parse_verdict(text, choice, format_ok, reason, think):
    v = parse_verdict(text)
    assert v == Verdict(choice, format_ok, reason, think)
    assert v.reason in REASONS


def test_verdict_is_frozen():
    v = parse_verdict("<think>a</think><answer>1</answer>")
    with pytest.raises(AttributeError):
        v.choice = 2


# ------------------------------------------------------------------ prompts


@pytest.mark.parametrize("make", [grm_prompt, longcot_prompt])
@pytest.mark.parametrize("style", ["compact", "r1"])
def test_prompt_holds_inputs_in_order(make, style):
    p = make("What colour is the square?", "It is red.", "It is blue.", style=style)
    i_q, i_1, i_2 = p.index("What colour is the square?"), p.index("It is red."), p.index("It is blue.")
    assert i_q < i_1 < i_2
    assert "1" in p and "2" in p


def test_prompt_does_not_substitute_inside_responses():
    p = grm_prompt("q {r1}", "{r2} {question}", "x}{", style="r1")
    assert "q {r1}" in p and "{r2} {question}" in p and "x}{" in p
    assert p.count("{") == 4  # exactly the four literal braces of the inputs


def test_longcot_prompt_asks_for_the_tags_the_parser_reads():
    for style in ("compact", "r1"):
        p = longcot_prompt("q", "a", "b", style=style)
        assert "<think>" in p and "</think>" in p and "<answer>" in p and "</answer>" in p
    # round trip: the answer texts the prompts ask for parse to the matching choice
    for i, token in enumerate(ANSWER_TOKENS):
        assert parse_verdict(f"<think>x</think><answer>{token}</answer>").choice == i + 1


def test_compact_prompts_are_short():
    # scaffolding only (empty inputs), characters: a budget guard for the 128-384 token CPU judge
    assert len(grm_prompt("", "", "")) < 120
    assert len(longcot_prompt("", "", "")) < 200
    assert len(longcot_prompt("", "", "", style="r1")) > len(longcot_prompt("", "", ""))


def test_prompt_errors():
    with pytest.raises(BaseRewardError, match="style"):
        grm_prompt("q", "a", "b", style="long")
    with pytest.raises(BaseRewardError, match="r2 must be a string"):
        longcot_prompt("q", "a", None)


# ------------------------------------------------------------------ voting


def test_vote_by_hand():
    assert vote([1, 1, 2]) == (1, pytest.approx(2 / 3))
    assert vote([2, None, 2, 1]) == (2, pytest.approx(2 / 3))
    assert vote([1, 2]) == (None, 0.5)
    assert vote([None, None]) == (None, 0.0)
    assert vote([]) == (None, 0.0)
    assert vote([parse_verdict("<think>a</think><answer>2</answer>"), Verdict(None, False, "empty", "")]) == (2, 1.0)


def test_confidence_weighting_can_flip_the_majority():
    # counts say 2 (two votes to one); answer-token probabilities say 1: 0.9 vs 0.3 + 0.4 = 0.7
    assert vote([1, 2, 2])[0] == 2
    choice, agreement = vote([1, 2, 2], weights=[0.9, 0.3, 0.4])
    assert choice == 1
    assert agreement == pytest.approx(0.9 / 1.6)


@pytest.mark.parametrize("samples, weights", [
    ([3], None), ([True], None), (["1"], None), ([1, 2], [1.0]), ([1], [-0.1]), ([1], [float("nan")]),
])
def test_vote_errors(samples, weights):
    with pytest.raises(BaseRewardError):
        vote(samples, weights)


def _sampler(seq):
    it = iter(seq)
    calls = []

    def draw():
        calls.append(1)
        return next(it)
    return draw, calls


def test_vote_until_by_hand():
    draw, calls = _sampler([1, 2, 1, 1, 2])
    r = vote_until(draw, 5)
    assert (r.choice, r.samples_used, r.agreement, r.choices) == (1, 4, 0.75, (1, 2, 1, 1))
    assert len(calls) == 4  # the fifth sample is never generated
    assert vote_until(_sampler([2, 2, 2, 1, 1])[0], 5).samples_used == 3
    tie = vote_until(_sampler([1, 2, None, 1, 2])[0], 5)
    assert (tie.choice, tie.samples_used) == (None, 5)
    assert vote_until(_sampler([1, 2, 2, 1])[0], 4).choice is None  # k = 4 needs 3 votes
    assert vote_until(_sampler([2])[0], 1).samples_used == 1
    with pytest.raises(BaseRewardError, match="k must be"):
        vote_until(lambda: 1, 0)


@pytest.mark.parametrize("k", [3, 4, 5])
def test_early_stop_equals_full_vote_on_every_sequence(k):
    need = k // 2 + 1
    for seq in itertools.product([1, 2, None], repeat=k):
        r = vote_until(_sampler(seq)[0], k)
        assert r.choice == vote(seq)[0], seq
        first = next((i + 1 for i in range(k) if max(seq[:i + 1].count(1), seq[:i + 1].count(2)) >= need), k)
        assert r.samples_used == first, seq


def test_accuracy_vs_k_by_hand():
    samples = [
        [2, 1, 1, 2, 2],        # label 1: k=1 wrong, k=2 tie (wrong), k=3 right, k=5 wrong (2 has 3)
        [2, 2, 1, 1, 1],        # label 2: right, right, right, wrong (1 has 3)
        [1, None, None, 2, 1],  # label 1: right at every k
    ]
    labels = [1, 2, 1]
    acc = accuracy_vs_k(samples, labels, [1, 2, 3, 5])
    assert acc == {1: pytest.approx(2 / 3), 2: pytest.approx(2 / 3), 3: 1.0, 5: pytest.approx(1 / 3)}
    # weighting by confidence rescues the first item at k = 5: 1 gets 1.8, 2 gets 0.3
    w = [[0.1, 0.9, 0.9, 0.1, 0.1], [1.0] * 5, [1.0] * 5]
    assert accuracy_vs_k(samples, labels, [5], weights=w) == {5: pytest.approx(2 / 3)}


def test_accuracy_vs_k_both_orders_by_hand():
    # Votes for the chosen response: "1" when it is shown first, "2" when it is shown second.
    first = [[1, 1, 2], [1, 1, 1], [2, None, 2]]
    second = [[1, 2, 2], [1, 1, 1], [2, 2, None]]
    # item 0: k=1: +1 (first) -1 (second) = 0, tie -> wrong; k=2: 2 + 0 -> right; k=3: 1 + 1 -> right
    # item 1: always "1" (pure position bias): +k - k = 0 at every k -> wrong
    # item 2: k=1: -1 + 1 = 0 -> wrong; k=2: -1 + 2 = 1 -> right; k=3: -2 + 2 = 0 -> wrong
    acc = accuracy_vs_k_both_orders(first, second, [1, 2, 3])
    assert acc == {1: 0.0, 2: pytest.approx(2 / 3), 3: pytest.approx(1 / 3)}
    with pytest.raises(BaseRewardError, match="has 3 samples"):
        accuracy_vs_k_both_orders(first, second, [4])
    with pytest.raises(BaseRewardError, match="in the other"):
        accuracy_vs_k_both_orders(first, second[:2], [1])


def test_accuracy_vs_k_errors():
    with pytest.raises(BaseRewardError, match="has 2 samples"):
        accuracy_vs_k([[1, 2]], [1], [3])
    with pytest.raises(BaseRewardError, match="labels must be"):
        accuracy_vs_k([[1]], [0], [1])
    with pytest.raises(BaseRewardError, match="labels for"):
        accuracy_vs_k([[1], [2]], [1], [1])
