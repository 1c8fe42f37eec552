"""The reward in the RL loop: reward functions, one client (in-process or HTTP), framework adapters.

* `rewards`: rule / model / hybrid / pairwise rewards as plain functions (torch-free).
* `client`: `open_reward_source(dir | url(s) | source)`; `HttpRewardSource` for `basereward serve`.
* `samples`: a batch of (prompt, images, completion, ground truth) -> rewards, grouped per prompt.
* adapters: `trl` (GRPOTrainer `reward_funcs`), `verl` (`compute_score`), `openrlhf` (`reward_func`).
  None of them imports its framework; each takes the framework's call shape as it is.
"""

from .client import (
    HttpRewardSource,
    LocalRewardSource,
    RewardServerError,
    open_reward_source,
)
from .rewards import (
    REWARD_KINDS,
    PairwiseSource,
    hybrid_reward,
    model_reward,
    pairwise_reward,
    rule_match,
    rule_reward,
    sigmoid,
)
from .samples import RewardBatch, Sample, reward_samples

__all__ = [
    "REWARD_KINDS", "HttpRewardSource", "LocalRewardSource", "PairwiseSource", "RewardBatch", "RewardServerError",
    "Sample", "hybrid_reward", "model_reward", "open_reward_source", "pairwise_reward", "reward_samples",
    "rule_match", "rule_reward", "sigmoid",
]
