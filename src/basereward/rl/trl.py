"""TRL `GRPOTrainer` reward function that carries each prompt's images to the reward model.

    from basereward.rl.trl import trl_reward
    trainer = GRPOTrainer(model=..., reward_funcs=[trl_reward("runs/demo/model")], train_dataset=ds, ...)

TRL calls every reward function as `f(prompts=, completions=, completion_ids=, **columns)`, with
every dataset column but `prompt` as a keyword (one value per sample, a prompt's row repeated
for each of its generations), plus `trainer_state`, `log_metric` and `log_extra`. This adapter
reads the images from the first of these columns present: `reward_images` (images the reward
model sees but the policy does not, for a text-only policy: TRL hands `image`/`images` to the
policy's processor), `images` (a list per row), `image` (one per row), else the image parts of a
conversational prompt; and the ground truth from `ground_truth`, `answer`, `solution` or
`label` (or the columns you name). Samples of the same prompt and images are scored as one
group. It returns one float per sample (`None` for the rule reward without a ground truth: TRL
then leaves this function out for that sample) and logs `basereward/*` metrics through
`log_metric`. TRL itself is not imported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from basereward.errors import BaseRewardError
from basereward.rl.client import open_reward_source
from basereward.rl.rewards import check_kind
from basereward.rl.samples import RewardBatch, Sample, reward_samples
from basereward.rl.text import completion_text, prompt_text_and_images

IMAGE_COLUMNS = ("reward_images", "images", "image")
ANSWER_COLUMNS = ("ground_truth", "answer", "solution", "label")
_TRL_KEYWORDS = ("trainer_state", "log_metric", "log_extra", "environments")


def _first_present(columns: dict[str, Any], names: Sequence[str]) -> str | None:
    return next((n for n in names if n in columns), None)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class TRLReward:
    """A `reward_funcs` entry for `trl.GRPOTrainer` (see the module docstring)."""

    def __init__(self, source: Any = None, *, reward: str = "hybrid", answer_column: str | None = None,
                 image_column: str | None = None, name: str | None = None, **source_kwargs: Any):
        self.reward = check_kind(reward)
        if source is None and reward != "rule":
            raise BaseRewardError(f"the {reward} reward needs a reward model (a model directory or server URLs)")
        self.source = None if source is None else open_reward_source(source, **source_kwargs)
        self.answer_column, self.image_column = answer_column, image_column
        # TRL names a reward function by `__name__` in its logs ("rewards/<name>/mean").
        self.__name__ = name or f"basereward_{reward}"
        self.history: list[dict[str, float]] = []
        """Per call: the step, `RewardBatch.stats()` (mean reward, rule-match rate, images sent)."""

    def _images(self, columns: dict[str, Any], prompt_images: list[list[Any]], n: int) -> list[tuple[Any, ...]]:
        name = self.image_column or _first_present(columns, IMAGE_COLUMNS)
        if self.image_column and self.image_column not in columns:
            raise BaseRewardError(f"the dataset has no {self.image_column!r} column (image_column)")
        if name is None:
            return [tuple(p) for p in prompt_images]
        values = columns[name]
        if len(values) != n:
            raise BaseRewardError(f"column {name!r} has {len(values)} values for {n} completions")
        return [tuple(_as_list(v)) for v in values]

    def _answers(self, columns: dict[str, Any], n: int) -> list[Any]:
        if self.reward == "model":
            return [None] * n
        name = self.answer_column or _first_present(columns, ANSWER_COLUMNS)
        if name is None or name not in columns:
            looked = [self.answer_column] if self.answer_column else list(ANSWER_COLUMNS)
            raise BaseRewardError(f"the {self.reward} reward needs a ground-truth column; the dataset has none of "
                                  f"{looked} (columns: {sorted(columns)}); pass answer_column= or use reward='model'")
        return list(columns[name])

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: Any = None,
                 **kwargs: Any) -> list[float | None]:
        trl_kw = {k: kwargs.pop(k) for k in _TRL_KEYWORDS if k in kwargs}
        n = len(prompts)
        if len(completions) != n:
            raise BaseRewardError(f"{len(completions)} completions for {n} prompts")
        parsed = [prompt_text_and_images(p) for p in prompts]
        images = self._images(kwargs, [imgs for _, imgs in parsed], n)
        answers = self._answers(kwargs, n)
        samples = [Sample(text, completion_text(c), imgs, gt)
                   for (text, _), c, imgs, gt in zip(parsed, completions, images, answers)]
        batch = reward_samples(samples, self.reward, self.source)
        self._log(batch, trl_kw)
        return batch.rewards

    def _log(self, batch: RewardBatch, trl_kw: dict[str, Any]) -> None:
        stats = batch.stats()
        state = trl_kw.get("trainer_state")
        entry = {"step": float(getattr(state, "global_step", len(self.history))), **stats}
        self.history.append(entry)
        log_metric = trl_kw.get("log_metric")
        if log_metric is not None:
            for key in ("images_to_rm", "samples_to_rm", "rule_match", "rm_reward_mean"):
                if key in stats:
                    log_metric(f"basereward/{key}", stats[key])


def trl_reward(source: Any = None, *, reward: str = "hybrid", **kwargs: Any) -> TRLReward:
    """A GRPOTrainer reward function: `source` is a model or ensemble directory, reward server
    URL(s), or any RewardSource; `reward` is "hybrid" (default), "model" or "rule"."""
    return TRLReward(source, reward=reward, **kwargs)
