"""Reward metrics on plain numbers: the one definition of each (numpy only, no torch, no I/O).

A pair is *correct* when r(chosen) > r(rejected) strictly: a tie counts as wrong, so a constant
reward model scores 0, not 0.5. Every pair accuracy in the project (CLI, eval, ensembles,
reports, training validation, the demo) is computed here.

* `pair_accuracy` / `accuracy_by_key`: overall and per key (category, source, subset, ...).
* `reward_stats`: the paper's Table 13 — mean and population std of chosen and of rejected
  rewards, gap = mean chosen - mean rejected.
* `length_bias`: Pearson r between reward and length over all responses (chosen and rejected
  pooled); accuracy on pairs whose chosen response is shorter / longer (equal lengths counted,
  not scored). Unknown lengths are NaN and leave their pair out. `prefers_longer`: how often
  the longer response of a pair wins, whichever side it is on.
* `calibration`: p = sigmoid(r_first - r_second) with each pair's order randomised by a seeded
  coin (so p < 0.5 occurs), y = 1 when the first-listed response is the chosen one; ten
  equal-width bins over [0, 1] (the last includes 1); ECE = sum_b (n_b / N) |mean y_b - mean p_b|.
* `accuracy_interval`: the Wilson score interval of a pair accuracy (95% by default): on 400
  pairs near 70% it spans about +-4.5 points, on a 54-pair category about +-12.
* `paired_difference_interval`: mean and normal-approximation interval of the per-pair difference
  of two verdicts on the same pairs (e.g. accuracy minus accuracy with images shuffled).
* `pair_sums` / `from_sums`: validation sums (Bradley-Terry loss, correct, gap, count) that are
  added across processes first and divided once (never average per-process means).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

N_BINS = 10
UNLABELLED = "(none)"
SUM_KEYS = ("loss_sum", "correct", "gap_sum", "count")


def _pair_arrays(chosen: Sequence[float], rejected: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(chosen, dtype=np.float64).reshape(-1)
    r = np.asarray(rejected, dtype=np.float64).reshape(-1)
    if c.shape != r.shape:
        raise ValueError(f"{c.size} chosen rewards but {r.size} rejected rewards")
    return c, r


def correct(chosen: Sequence[float], rejected: Sequence[float]) -> np.ndarray:
    """(N,) bools: r(chosen) > r(rejected) strictly (ties are wrong)."""
    c, r = _pair_arrays(chosen, rejected)
    return c > r


def pair_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float | None:
    """Fraction of pairs with r(chosen) > r(rejected) strictly; None when there are no pairs."""
    ok = correct(chosen, rejected)
    return float(ok.mean()) if ok.size else None


Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95% intervals


def accuracy_interval(chosen: Sequence[float], rejected: Sequence[float], z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval (lo, hi) of the pair accuracy; None when there are no pairs.

    With k correct of n, p = k / n: centre (p + z^2 / 2n) / (1 + z^2 / n), half-width
    z sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n). Unlike p +- z sqrt(p (1 - p) / n) it stays
    inside [0, 1] and keeps its coverage near 0 and 1 and on small n."""
    ok = correct(chosen, rejected)
    return _wilson(int(ok.sum()), ok.size, z) if ok.size else None


def _wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * float(np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference_interval(ok_a: Sequence[bool], ok_b: Sequence[bool], z: float = Z95) -> dict[str, float] | None:
    """{"difference", "lo", "hi"}: the mean of ok_a - ok_b over the same pairs (two verdicts on each
    pair, e.g. with the real and with shuffled images) and its interval, mean +- z * sd / sqrt(n)
    (sample sd of the per-pair differences; clipped to [-1, 1]). None for fewer than two pairs."""
    a = np.asarray(ok_a, dtype=np.float64).reshape(-1)
    b = np.asarray(ok_b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"{a.size} verdicts against {b.size}: a paired difference needs the same pairs")
    if a.size < 2:
        return None
    d = a - b
    mean, half = float(d.mean()), z * float(d.std(ddof=1)) / float(np.sqrt(d.size))
    return {"difference": mean, "lo": max(-1.0, mean - half), "hi": min(1.0, mean + half)}


def accuracy_by_key(
    chosen: Sequence[float], rejected: Sequence[float], keys: Sequence[str], unlabelled: str = UNLABELLED,
    interval: bool = False,
) -> dict[str, dict[str, Any]]:
    """`{key: {"accuracy": a, "n": n}}` over the pairs sharing each key, keys sorted; with
    `interval`, also "interval95": [lo, hi], the key's `accuracy_interval`.

    An empty key (e.g. a pair without a category) is reported as `unlabelled`.
    """
    ok = correct(chosen, rejected)
    if len(keys) != ok.size:
        raise ValueError(f"{len(keys)} keys for {ok.size} pairs")
    labels = np.asarray([k or unlabelled for k in keys], dtype=object)
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(set(labels.tolist())):
        mask = labels == key
        out[key] = {"accuracy": float(ok[mask].mean()), "n": int(mask.sum())}
        if interval:
            out[key]["interval95"] = list(_wilson(int(ok[mask].sum()), int(mask.sum())))
    return out


def reward_stats(chosen: Sequence[float], rejected: Sequence[float]) -> dict[str, float]:
    """Paper Table 13: mean and population std of chosen and of rejected rewards, gap, accuracy."""
    c, r = _pair_arrays(chosen, rejected)
    return {
        "n_pairs": int(c.size),
        "mean_chosen": float(c.mean()),
        "std_chosen": float(c.std()),
        "mean_rejected": float(r.mean()),
        "std_rejected": float(r.std()),
        "gap": float(c.mean() - r.mean()),
        "accuracy": float(np.mean(c > r)),
    }


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation, or None when it is undefined (< 2 points or a constant variable)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denom) if denom > 0 else None


def _masked_accuracy(mask: np.ndarray, ok: np.ndarray) -> dict[str, Any]:
    n = int(mask.sum())
    return {"n": n, "accuracy": float(ok[mask].mean()) if n else None}


def length_bias(chosen, rejected, len_chosen, len_rejected, unit: str = "words") -> dict[str, Any]:
    """Reward-length correlation and accuracy split by whether the chosen response is shorter."""
    c, r = _pair_arrays(chosen, rejected)
    lc, lr = _pair_arrays(len_chosen, len_rejected)
    known = ~(np.isnan(lc) | np.isnan(lr))
    c, r, lc, lr = c[known], r[known], lc[known], lr[known]
    ok = c > r
    return {
        "unit": unit,
        "n_pairs": int(c.size),
        "pearson_reward_length": pearson(np.concatenate([c, r]), np.concatenate([lc, lr])),
        "mean_length_chosen": float(lc.mean()) if c.size else None,
        "mean_length_rejected": float(lr.mean()) if c.size else None,
        "chosen_shorter": _masked_accuracy(lc < lr, ok),
        "chosen_longer": _masked_accuracy(lc > lr, ok),
        "equal_length": int((lc == lr).sum()),
    }


def prefers_longer(chosen, rejected, len_chosen, len_rejected) -> float | None:
    """Among pairs of unequal length, the fraction whose longer response gets the strictly
    higher reward: the length-bias signature (None when every pair has equal lengths)."""
    c, r = _pair_arrays(chosen, rejected)
    lc, lr = _pair_arrays(len_chosen, len_rejected)
    unequal = lc != lr
    if not unequal.any():
        return None
    long_r = np.where(lc > lr, c, r)[unequal]
    short_r = np.where(lc > lr, r, c)[unequal]
    return float((long_r > short_r).mean())


def randomized_order(n: int, seed: int = 0) -> np.ndarray:
    """(n,) bools: True where a pair is shown rejected-first. Deterministic for a seed."""
    return np.random.default_rng(seed).random(n) < 0.5


def sigmoid(d: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warning for large |d|.
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(d, dtype=np.float64)))


def calibration_bins(p: Sequence[float], y: Sequence[float], n_bins: int = N_BINS) -> dict[str, Any]:
    """Reliability bins and ECE of predicted probabilities `p` against 0/1 outcomes `y`."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = idx == b
        n = int(mask.sum())
        conf = float(p[mask].mean()) if n else None
        acc = float(y[mask].mean()) if n else None
        if n:
            ece += n / p.size * abs(acc - conf)
        bins.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "n": n, "confidence": conf, "accuracy": acc})
    return {"n": int(p.size), "ece": ece if p.size else None, "bins": bins}


def calibration(chosen, rejected, seed: int = 0, n_bins: int = N_BINS) -> dict[str, Any]:
    """Calibration of sigmoid(r_first - r_second) with each pair's order randomised (seeded)."""
    c, r = _pair_arrays(chosen, rejected)
    swap = randomized_order(c.size, seed)
    first, second = np.where(swap, r, c), np.where(swap, c, r)
    result = calibration_bins(sigmoid(first - second), (~swap).astype(np.float64), n_bins)
    result["seed"] = seed
    return result


def pair_sums(chosen: Sequence[float], rejected: Sequence[float]) -> dict[str, float]:
    """Validation sums over pairs: Bradley-Terry loss, correct pairs, reward gap and count.

    loss_sum = sum softplus(-(r_w - r_l)) (= -log sigmoid, ln 2 per tied pair). Add the dicts of
    every process, then `from_sums` divides once.
    """
    c, r = _pair_arrays(chosen, rejected)
    d = c - r
    return {
        "loss_sum": float(np.logaddexp(0.0, -d).sum()),
        "correct": float((d > 0).sum()),
        "gap_sum": float(d.sum()),
        "count": float(d.size),
    }


def from_sums(sums: dict[str, float] | Sequence[float]) -> dict[str, float | None]:
    """Mean loss, accuracy and reward gap from (possibly cross-process summed) `pair_sums`.

    Accepts the dict or its values in `SUM_KEYS` order; None when the count is 0.
    """
    loss_sum, n_correct, gap_sum, count = (
        [float(sums[k]) for k in SUM_KEYS] if isinstance(sums, dict) else [float(v) for v in sums]
    )
    if count <= 0:
        return {"loss": None, "accuracy": None, "reward_gap": None, "count": 0}
    return {"loss": loss_sum / count, "accuracy": n_correct / count, "reward_gap": gap_sum / count,
            "count": int(count)}
