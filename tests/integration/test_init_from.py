"""`train.init_from`: a run starts from a saved model's weights (tiny random causal LM, CPU).

What is asserted: a model started from a saved Naive-RM scores exactly as the saved one; a judge
started from it carries its backbone tensors but not its head; tensors taken over stay in the
saved model even when the new run keeps them frozen (the saved model reloads as trained); a
model on other base weights or another backbone is refused with one error.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers.tiny_models import tiny_causal_lm_dir

from basereward.config import BackboneConfig, Config, DataConfig, ModelConfig, TrainConfig
from basereward.data.schema import Group, PreferencePair
from basereward.errors import ConfigError
from basereward.models.reward_model import RewardModel
from basereward.scoring import Scorer
from basereward.training.loop import train

PAIRS = [PreferencePair(id=f"p{i}", prompt=f"Is {i} even?", chosen="yes" if i % 2 == 0 else "no",
                        rejected="no" if i % 2 == 0 else "yes") for i in range(8)]
GROUPS = [Group(prompt="Is 4 even?", responses=("yes", "no", "maybe so"))]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return tiny_causal_lm_dir(tmp_path_factory.mktemp("init"), name="qwen2")


def _cfg(lm_dir, out, layers: int, paradigm: str = "naive", init_from: str = "", steps: int = 3) -> Config:
    bb = BackboneConfig(name="causal-lm", path=str(lm_dir), dtype="float32", attn_implementation="eager",
                        max_length=128, train_lm_layers=layers)
    tc = TrainConfig(lr=1e-2, head_lr=1e-2, global_batch_size=4, micro_batch_size=2, max_steps=steps,
                     warmup_ratio=0.0, output_dir=str(out), init_from=init_from)
    return Config(model=ModelConfig(backbone=bb, paradigm=paradigm), data=DataConfig(), train=tc)


def _scores(model: RewardModel) -> list[float]:
    return [x for s in Scorer(model.eval(), batch_size=4).score_groups(GROUPS) for x in s]


@pytest.fixture(scope="module")
def source(lm_dir, tmp_path_factory):
    """A Naive-RM whose top 2 layers and head trained for 3 steps, saved."""
    out = tmp_path_factory.mktemp("source")
    train(_cfg(lm_dir, out, layers=2), PAIRS, progress=False)
    return out / "model"


def test_a_started_model_scores_as_the_saved_one(lm_dir, source, tmp_path):
    cfg = _cfg(lm_dir, tmp_path, layers=2)
    fresh = RewardModel(cfg.model)
    assert _scores(fresh) != pytest.approx(_scores(RewardModel.from_pretrained(source)))
    taken = fresh.init_from(source)
    assert taken["head"] is True and taken["backbone_tensors"] > 0
    assert _scores(fresh) == pytest.approx(_scores(RewardModel.from_pretrained(source)), abs=1e-6)


def test_a_judge_takes_the_backbone_but_not_the_head(lm_dir, source, tmp_path):
    cfg = _cfg(lm_dir, tmp_path, layers=2, paradigm="grm")
    torch.manual_seed(0)
    judge = RewardModel(cfg.model)
    head_before = {k: v.clone() for k, v in judge.head.state_dict().items()}
    taken = judge.init_from(source)
    assert taken["head"] is False
    saved = RewardModel.from_pretrained(source)
    mine = dict(judge.backbone.named_parameters())
    for name, tensor in saved.trainable_backbone_state().items():
        assert torch.equal(mine[name], tensor), name
    assert all(torch.equal(head_before[k], v) for k, v in judge.head.state_dict().items())


def test_tensors_kept_frozen_are_still_saved_and_reload(lm_dir, source, tmp_path):
    # The new run trains only the top layer: the layer below it comes from `source` and stays
    # frozen, so it is not trainable here, yet the saved model must carry it.
    cfg = _cfg(lm_dir, tmp_path / "run", layers=1, init_from=str(source))
    model = RewardModel(cfg.model)
    result = train(cfg, PAIRS, model=model, progress=False)
    assert result["init_from"] == {"model": str(source), "backbone_tensors": result["init_from"]["backbone_tensors"],
                                   "head": True}
    saved = RewardModel.from_pretrained(source).trainable_backbone_state()
    mine = dict(model.backbone.named_parameters())
    frozen = [n for n in saved if not mine[n].requires_grad]
    assert frozen, "the test needs a tensor that the second run keeps frozen"
    assert all(torch.equal(mine[n], saved[n]) for n in frozen)  # unchanged by training
    reloaded = RewardModel.from_pretrained(tmp_path / "run" / "model")
    assert _scores(reloaded) == pytest.approx(_scores(model), abs=1e-6)
    written = json.loads((tmp_path / "run" / "model" / "model_config.json").read_text())["backbone_tensors"]
    assert set(frozen) <= set(written)


def test_a_missing_model_other_base_weights_or_backbone_are_refused(lm_dir, source, tmp_path):
    with pytest.raises(ConfigError, match="train.init_from: .*not a basereward model directory"):
        RewardModel(_cfg(lm_dir, tmp_path, layers=2).model).init_from(tmp_path)
    other_lm = tiny_causal_lm_dir(tmp_path, name="other", seed=1)
    cfg = _cfg(other_lm, tmp_path, layers=2)
    with pytest.raises(ConfigError, match="base weights"):
        RewardModel(cfg.model).init_from(source)
    # A model saved from another backbone (its config says so; nothing else is read first).
    other = tmp_path / "other-backbone"
    shutil.copytree(source, other)
    meta = json.loads((other / "model_config.json").read_text())
    meta["model"]["backbone"].update(name="mini-vl", path="")
    (other / "model_config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="'mini-vl' model; this run trains 'causal-lm'"):
        RewardModel(_cfg(lm_dir, tmp_path, layers=2).model).init_from(other)
