"""Generative reward models: judge prompts, answer parsing, StableReinforce, test-time scaling.

The modules exported here are pure (strings, numbers, tensors); none of them loads a model.

* `prompts`: `grm_prompt` / `longcot_prompt` (user turns), `ANSWER_TOKENS`.
* `parse`: `parse_verdict(text) -> Verdict(choice, format_ok, reason, think)`.
* `stable_reinforce`: `policy_loss`, `policy_loss_stats`, `filter_advantages`, `final_reward`,
  `attempts_needed`, `select_for_rl` (R1-Reward's StableReinforce and its data rule).
* `voting`: `vote`, `vote_until`, `accuracy_vs_k`, `accuracy_vs_k_both_orders`.
"""

from .parse import REASONS, Verdict, parse_verdict, read_choice
from .prompts import ANSWER_TOKENS, PROMPT_STYLES, grm_prompt, longcot_prompt
from .stable_reinforce import (
    LOG_RATIO_MAX,
    LOG_RATIO_MIN,
    attempts_needed,
    filter_advantages,
    final_reward,
    policy_loss,
    policy_loss_stats,
    select_for_rl,
)
from .voting import EarlyStopVote, accuracy_vs_k, accuracy_vs_k_both_orders, choice_of, vote, vote_until

__all__ = [
    "ANSWER_TOKENS", "LOG_RATIO_MAX", "LOG_RATIO_MIN", "PROMPT_STYLES", "REASONS", "EarlyStopVote", "Verdict",
    "accuracy_vs_k", "accuracy_vs_k_both_orders", "attempts_needed", "choice_of", "filter_advantages", "final_reward", "grm_prompt",
    "longcot_prompt", "parse_verdict", "policy_loss", "policy_loss_stats", "read_choice", "select_for_rl",
    "vote", "vote_until",
]
