"""Load whatever reward source a directory holds: a saved model or an ensemble / router.

It sits above both `scoring` (the `Scorer` of one model) and `ensemble` (combinations, which take
this function as their member loader, so nested ensembles load too): neither imports the other.
"""

from __future__ import annotations

from pathlib import Path

from .ensemble import is_ensemble_dir, load_combined
from .scoring import RewardSource


def load_scorer(path: str | Path, batch_size: int = 16, device: str | None = None,
                progress: bool = False, token_budget: int = 0, precision: str = "auto") -> RewardSource:
    """A `Scorer` for a saved model directory, the combined source of an ensemble / router directory,
    or the `CriticRM` of a critic-RM directory. `token_budget` (0 = none) also bounds each batch's
    padded tokens (sequences x the longest), for Naive-RM scorers; `precision`: the Naive-RM
    scorers' autocast (`Scorer`)."""
    if is_ensemble_dir(str(path)):
        return load_combined(str(path), loader=lambda p: load_scorer(p, batch_size, device, progress, token_budget,
                                                                         precision))
    if (Path(path) / "critic_rm.json").is_file():  # grm/critic.py: a critic + the RM trained on its critiques
        from .grm.critic import load_critic_rm
        from .scoring.scorer import default_device

        return load_critic_rm(path, lambda p: load_scorer(p, batch_size, device, progress, token_budget, precision),
                              device=device or default_device())
    from .models.reward_model import RewardModel
    from .scoring.scorer import default_device

    model = RewardModel.from_pretrained(path)
    return source_for_model(model, batch_size=batch_size, device=device or default_device(), progress=progress,
                            name=Path(path).name, token_budget=token_budget, precision=precision)


def source_for_model(model, batch_size: int = 16, device=None, progress: bool = False, name: str = "",
                     token_budget: int = 0, precision: str = "auto") -> RewardSource:
    """The reward source of one loaded model: the `Scorer` of a Naive-RM, the `GenerativeJudge` of a
    grm / longcot-grm model (model.paradigm)."""
    if model.cfg.paradigm == "naive":
        from .scoring.scorer import Scorer

        return Scorer(model, batch_size=batch_size, device=device, progress=progress, name=name,
                      token_budget=token_budget, precision=precision)
    from .grm.judge import GenerativeJudge

    return GenerativeJudge(model, batch_size=batch_size, device=device, progress=progress, name=name)
