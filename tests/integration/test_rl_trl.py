"""TRL's real GRPOTrainer driven for two steps: a tiny random policy, a tiny random multimodal reward
model behind our hybrid reward. What TRL logs as its reward is what the adapter computed, each
prompt's generations reached the RM as one group with its image, and the policy's weights moved."""

from __future__ import annotations

import pytest
import torch
from helpers.tiny_models import (
    solid_image,
    tiny_causal_lm_dir,
    tiny_qwen25vl_dir,
    tiny_reward_model_dir,
)

from basereward.rl.trl import trl_reward


@pytest.fixture
def fresh_accelerate_state():
    """TRL's trainer initialises accelerate's process-wide state (and environment) its own way;
    later tests build their own Accelerator, so both are restored afterwards."""
    import os

    env = dict(os.environ)
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    os.environ.clear()
    os.environ.update(env)


@pytest.mark.slow  # importing TRL alone takes ~10 s on 2 cores (imported here, not at collection)
def test_grpo_trainer_two_steps_with_the_hybrid_reward(tmp_path, fresh_accelerate_state):
    trl = pytest.importorskip("trl", reason="TRL is the optional `rl` extra: pip install -e '.[rl]'")
    datasets = pytest.importorskip("datasets")
    from transformers import TrainerCallback

    policy = tiny_causal_lm_dir(tmp_path, "policy")
    rm_dir = tiny_reward_model_dir(tmp_path / "rm", tiny_qwen25vl_dir(tmp_path))
    images = []
    for i in range(2):
        images.append(str(tmp_path / f"{i}.png"))
        solid_image(56, 56, i).save(images[-1])
    rows = [{"prompt": [{"role": "user", "content": f"What colour is square {i}?"}], "reward_images": [images[i % 2]],
             "answer": "red"} for i in range(4)]

    func = trl_reward(str(rm_dir))
    seen_groups = []
    inner = func.source.score_groups

    def spy(groups):
        seen_groups.append([(g.prompt, len(g.responses), g.images) for g in groups])
        return inner(groups)

    func.source.score_groups = spy

    class Snapshot(TrainerCallback):
        before = None

        def on_train_begin(self, args, state, control, model=None, **kw):
            Snapshot.before = {n: p.detach().clone() for n, p in model.named_parameters()}

    args = trl.GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=4,
                          max_completion_length=8, max_steps=2, learning_rate=1e-3, logging_steps=1,
                          report_to="none", use_cpu=True, save_strategy="no", seed=0, disable_tqdm=True)
    trainer = trl.GRPOTrainer(model=str(policy), reward_funcs=[func], args=args,
                              train_dataset=datasets.Dataset.from_list(rows), callbacks=[Snapshot()])
    trainer.train()

    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logs) == len(func.history) == len(seen_groups) == 2
    for log, ours, groups in zip(logs, func.history, seen_groups):
        # TRL's reward is our hybrid reward, and our metrics came through its log_metric
        assert log["rewards/basereward_hybrid/mean"] == pytest.approx(ours["reward_mean"], abs=1e-6)
        assert log["basereward/images_to_rm"] == ours["images_to_rm"] == 1.0
        assert 0.0 < log["reward"] <= 1.0
        # one prompt per step: its 4 generations (a random policy never says "red") went to the RM as
        # one group, with that prompt's image
        ((prompt, n, imgs),) = groups
        assert n == ours["samples_to_rm"] == 4
        assert imgs == (images[int(prompt.split()[-1].rstrip("?")) % 2],)
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(Snapshot.before[n], after[n].detach()) for n in Snapshot.before)
