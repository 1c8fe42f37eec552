"""The metrics module against numbers worked out by hand in the comments."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from basereward import metrics
from basereward.metrics import (
    accuracy_by_key,
    accuracy_interval,
    calibration,
    calibration_bins,
    correct,
    from_sums,
    length_bias,
    pair_accuracy,
    pair_sums,
    paired_difference_interval,
    pearson,
    reward_stats,
)

# Four pairs (lengths in words):
#   a: r_w=2, r_l=0, len 2 vs 4 -> chosen shorter, correct
#   b: r_w=1, r_l=3, len 3 vs 1 -> chosen longer, wrong
#   c: r_w=3, r_l=1, len 5 vs 2 -> chosen longer, correct
#   d: r_w=0, r_l=-2, len 1 vs 1 -> equal length, correct
CHOSEN_R, REJECTED_R = [2.0, 1.0, 3.0, 0.0], [0.0, 3.0, 1.0, -2.0]
LEN_C, LEN_R = [2, 3, 5, 1], [4, 1, 2, 1]


def test_ties_count_as_wrong():
    # 1 > 0 right, 0 = 0 tie (wrong), 2 < 3 wrong -> 1 of 3.
    assert correct([1.0, 0.0, 2.0], [0.0, 0.0, 3.0]).tolist() == [True, False, False]
    assert pair_accuracy([1.0, 0.0, 2.0], [0.0, 0.0, 3.0]) == pytest.approx(1 / 3)
    assert pair_accuracy([5.0] * 4, [5.0] * 4) == 0.0  # a constant model scores 0, not 0.5
    assert pair_accuracy([], []) is None
    with pytest.raises(ValueError, match="2 chosen rewards but 1 rejected"):
        pair_accuracy([1.0, 2.0], [0.0])


def test_accuracy_by_key():
    # x: pairs 0 (1>0 right), 2 (tie, wrong) -> 1/2; y: pair 1 (2>1 right) -> 1/1;
    # "" is reported as "(none)": pairs 3 (0<1 wrong), 4 (3>2 right), 5 (1<4 wrong) -> 1/3.
    got = accuracy_by_key([1, 2, 5, 0, 3, 1], [0, 1, 5, 1, 2, 4], ["x", "y", "x", "", "", ""])
    assert got == {
        "(none)": {"accuracy": pytest.approx(1 / 3), "n": 3},
        "x": {"accuracy": 0.5, "n": 2},
        "y": {"accuracy": 1.0, "n": 1},
    }
    assert list(got) == ["(none)", "x", "y"]  # sorted
    assert accuracy_by_key([1], [0], [""], unlabelled="?") == {"?": {"accuracy": 1.0, "n": 1}}
    with pytest.raises(ValueError, match="1 keys for 2 pairs"):
        accuracy_by_key([1, 2], [0, 0], ["x"])


def test_reward_stats_match_table_13_by_hand():
    s = reward_stats(CHOSEN_R, REJECTED_R)
    # chosen 2 1 3 0: mean 1.5, squared deviations sum 5; rejected 0 3 1 -2: mean 0.5, sum 13.
    assert s["mean_chosen"] == 1.5 and s["mean_rejected"] == 0.5 and s["gap"] == 1.0
    assert s["std_chosen"] == pytest.approx(math.sqrt(5 / 4))
    assert s["std_rejected"] == pytest.approx(math.sqrt(13 / 4))
    assert s["accuracy"] == 0.75 and s["n_pairs"] == 4


def test_pearson_by_hand():
    # rewards (1, 2, 3) against lengths (1, 2, 4):
    # dx = (-1, 0, 1), dy = (-4/3, -1/3, 5/3): sum dx*dy = 3, sum dx^2 = 2, sum dy^2 = 14/3.
    assert pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(3 / math.sqrt(2 * 14 / 3))
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1], [2, 3]) is None and pearson([1], [1]) is None


def test_length_bias_by_hand():
    b = length_bias(CHOSEN_R, REJECTED_R, LEN_C, LEN_R)
    assert b["chosen_shorter"] == {"n": 1, "accuracy": 1.0}  # pair a
    assert b["chosen_longer"] == {"n": 2, "accuracy": 0.5}  # b wrong, c right
    assert b["equal_length"] == 1 and b["n_pairs"] == 4 and b["unit"] == "words"
    assert b["mean_length_chosen"] == 11 / 4 and b["mean_length_rejected"] == 2.0
    assert b["pearson_reward_length"] == pytest.approx(statistics.correlation(CHOSEN_R + REJECTED_R, LEN_C + LEN_R))
    # An unknown length (NaN) leaves its pair out: only a and b remain.
    partial = length_bias(CHOSEN_R, REJECTED_R, [2, 3, np.nan, 1], [4, 1, 2, np.nan], unit="chars")
    assert partial["n_pairs"] == 2 and partial["unit"] == "chars"
    assert partial["chosen_shorter"] == {"n": 1, "accuracy": 1.0}
    assert partial["chosen_longer"] == {"n": 1, "accuracy": 0.0}
    none = length_bias([1.0], [0.0], [np.nan], [np.nan])
    assert none["n_pairs"] == 0 and none["chosen_shorter"] == {"n": 0, "accuracy": None}


def test_calibration_bins_and_ece_by_hand():
    c = calibration_bins([0.05, 0.15, 0.15, 0.95, 0.55, 1.0], [0, 1, 0, 1, 1, 1])
    by_bin = {round(b["lo"] * 10): b for b in c["bins"] if b["n"]}
    assert sorted(by_bin) == [0, 1, 5, 9]
    assert by_bin[1]["accuracy"] == 0.5 and by_bin[1]["confidence"] == pytest.approx(0.15)
    assert by_bin[9]["n"] == 2  # p = 1.0 falls in the last bin
    # |0 - .05| + 2|.5 - .15| + |1 - .55| + 2|1 - .975| over 6 pairs.
    assert c["ece"] == pytest.approx((0.05 + 0.7 + 0.45 + 0.05) / 6)
    assert len(c["bins"]) == 10 and c["n"] == 6
    assert calibration_bins([], [])["ece"] is None


def test_calibration_of_constant_margin_is_exact():
    # Every pair has margin ln 3: shown chosen-first p = 0.75, y = 1; rejected-first p = 0.25,
    # y = 0. Either way |y - p| = 0.25, so ECE = 0.25 whatever the random order.
    chosen = [0.1 * k + math.log(3) for k in range(40)]
    rejected = [0.1 * k for k in range(40)]
    c = calibration(chosen, rejected, seed=5)
    assert c["ece"] == pytest.approx(0.25) and c["seed"] == 5
    swapped = int(metrics.randomized_order(40, 5).sum())
    assert c["bins"][2]["n"] == swapped and c["bins"][7]["n"] == 40 - swapped


def test_calibration_randomises_order_deterministically():
    chosen, rejected = [float(k % 7) for k in range(200)], [float(k % 5) for k in range(200)]
    a, b = calibration(chosen, rejected, seed=3), calibration(chosen, rejected, seed=3)
    assert a == b
    low = sum(x["n"] for x in a["bins"][:5])
    assert 0 < low < 200  # both p < 0.5 and p >= 0.5 occur


def test_pair_sums_by_hand_and_across_shards():
    # d = r_w - r_l = (0, 2, -1): softplus(-d) = ln 2, ln(1 + e^-2), ln(1 + e); one correct (the tie is wrong).
    s = pair_sums([1.0, 2.0, 0.0], [1.0, 0.0, 1.0])
    assert s["loss_sum"] == pytest.approx(math.log(2) + math.log(1 + math.exp(-2)) + math.log(1 + math.e))
    assert (s["correct"], s["gap_sum"], s["count"]) == (1.0, 1.0, 3.0)
    # Summing shards then dividing equals computing on everything (unequal shard sizes).
    r_w, r_l = [0.3, -1.0, 2.0, 0.5, 0.5], [0.1, 0.0, -1.0, 0.5, 2.0]
    shards = [pair_sums(r_w[:2], r_l[:2]), pair_sums(r_w[2:], r_l[2:])]
    total = {k: sum(sh[k] for sh in shards) for k in metrics.SUM_KEYS}
    whole = from_sums(pair_sums(r_w, r_l))
    assert from_sums(total) == pytest.approx(whole)
    assert from_sums([total[k] for k in metrics.SUM_KEYS]) == pytest.approx(whole)
    # d = (0.2, -1, 3, 0, -1.5): two strictly positive, sum 0.7.
    assert whole["accuracy"] == pytest.approx(2 / 5) and whole["reward_gap"] == pytest.approx(0.7 / 5)
    assert from_sums(pair_sums([0.0], [0.0]))["loss"] == pytest.approx(math.log(2))
    assert from_sums(pair_sums([], [])) == {"loss": None, "accuracy": None, "reward_gap": None, "count": 0}
    # Large margins stay finite (no overflow in exp).
    assert pair_sums([-1000.0], [1000.0])["loss_sum"] == pytest.approx(2000.0)


def test_prefers_longer_by_hand():
    # lengths (c, r): (5, 2) longer=chosen wins; (1, 9) longer=rejected wins (r > c);
    # (3, 3) equal, left out; (8, 4) longer=chosen loses; (2, 7) longer=rejected ties -> not a win.
    chosen = [1.0, 0.0, 9.0, -1.0, 0.5]
    rejected = [0.0, 2.0, 0.0, 3.0, 0.5]
    lc, lr = [5, 1, 3, 8, 2], [2, 9, 3, 4, 7]
    assert metrics.prefers_longer(chosen, rejected, lc, lr) == 2 / 4
    assert metrics.prefers_longer([1.0], [0.0], [3], [3]) is None


def test_accuracy_interval_is_wilsons_by_hand():
    # 8 of 10, z = 1.96: p = 0.8, denominator 1 + 3.8415/10 = 1.38415, centre (0.8 + 0.19208) / 1.38415
    # = 0.71676, half-width 1.96 * sqrt(0.016 + 0.0096040) / 1.38415 = 0.22658 -> [0.4902, 0.9433].
    lo, hi = accuracy_interval([1.0] * 8 + [0.0] * 2, [0.0] * 8 + [1.0] * 2)
    assert (lo, hi) == pytest.approx((0.49016, 0.94332), abs=1e-4)
    # A tie is wrong here as everywhere: 0 of 1 -> [0, 0.7935] (centre = half-width = 3.8415/2 / 4.8415).
    assert accuracy_interval([1.0], [1.0]) == pytest.approx((0.0, 0.79345), abs=1e-4)
    assert accuracy_interval([], []) is None
    # 280 of 400 (70%): +-4.5 points, the noise of one held-out distribution run.
    lo, hi = accuracy_interval([1.0] * 280 + [0.0] * 120, [0.0] * 280 + [1.0] * 120)
    assert 0.65 < lo < 0.66 and 0.74 < hi < 0.75


def test_paired_difference_interval_by_hand():
    # Differences (1, 0, 1, 0): mean 0.5, sample sd sqrt(1/3) = 0.57735, standard error 0.28868,
    # 0.5 +- 1.96 * 0.28868 = [-0.0658, 1.0658] -> the upper end clipped to 1.
    got = paired_difference_interval([True, True, True, False], [False, True, False, False])
    assert got["difference"] == pytest.approx(0.5)
    assert (got["lo"], got["hi"]) == pytest.approx((-0.06580, 1.0), abs=1e-4)
    # The same verdicts on both sides: no difference and no spread.
    same = paired_difference_interval([True, False, True], [True, False, True])
    assert same == {"difference": 0.0, "lo": 0.0, "hi": 0.0}
    assert paired_difference_interval([True], [False]) is None
    with pytest.raises(ValueError, match="same pairs"):
        paired_difference_interval([True, False], [True])
