"""Combining reward models (paper Appendix B, Table 7) and routing by modality.

Members are any `RewardSource` (`score_groups(groups) -> list[list[float]]`): the project's
`Scorer`, another `Ensemble` or a `ModalityRouter`. Everything here works on that one method, so
members are never re-batched, and the package never imports torch.

Combined score of response x with members m = 1..M:

    s(x) = sum_m w_m * z_m(x),   z_m(x) = (r_m(x) - mu_m) / sigma_m  if normalize  else r_m(x)

with mu_m / sigma_m the mean / population std of member m's rewards over every validation
response (chosen and rejected), and weights (always summing to 1):

* ``mean``        w_m = 1 / M                                 (needs no validation data)
* ``accuracy``    w_m = acc_m / sum_k acc_k                    acc = validation pairwise accuracy
* ``confidence``  w_m = max(g_m, 0) / sum_k max(g_k, 0)        g = mean validation margin
                                                               z_w - z_l (r_w - r_l if not normalize)

Pairwise accuracy counts ties as wrong (`metrics.pair_accuracy`). A member with a negative mean
margin ranks worse than chance on validation; it gets weight 0 rather than a negative weight.
The uncertainty returned with every ensemble score is the population std across members of
z_m(x) — member disagreement, unweighted.

Layout: `combine` (stats, weights, `Ensemble`, `fit`), `router` (`ModalityRouter`), `storage`
(`ensemble.json`, member paths, loading with an injected `loader(path) -> RewardSource`).
"""

from .combine import METHODS, Ensemble, EnsembleError, MemberStats, Method, fit, member_stats, member_weights, sample_validation
from .router import ModalityRouter
from .storage import ENSEMBLE_FILE, FORMAT_VERSION, Loader, is_ensemble_dir, load_combined

__all__ = [
    "ENSEMBLE_FILE",
    "FORMAT_VERSION",
    "METHODS",
    "Ensemble",
    "EnsembleError",
    "Loader",
    "MemberStats",
    "Method",
    "ModalityRouter",
    "fit",
    "is_ensemble_dir",
    "load_combined",
    "member_stats",
    "member_weights",
    "sample_validation",
]
