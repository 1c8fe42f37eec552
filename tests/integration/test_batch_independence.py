"""A reward is a function of (prompt, images, response) alone, on every backbone.

The same item is scored alone, with different partners in pairs, in whole groups of mixed
lengths and in one big call with different batch sizes; prompts and responses are long enough
that the truncation rule cuts some of them (prompt text from the left, responses at their end).
Every way must give the same reward to float tolerance: in GRPO a rollout's reward must not
depend on its siblings, and a benchmark's numbers must not depend on how items were grouped.
"""

from __future__ import annotations

import random

import pytest
import torch
from helpers.tiny_models import (
    solid_image,
    tiny_causal_lm_dir,
    tiny_qwen2vl_dir,
    tiny_qwen25vl_dir,
)

from basereward.config import BackboneConfig, HeadConfig, MiniVLConfig, ModelConfig
from basereward.data.schema import Group
from basereward.models.reward_model import RewardModel
from basereward.scoring.scorer import Scorer
from basereward.scoring.truncation import truncation_lines

TOL = 1e-4


def _words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


def _items(with_images: bool) -> list[tuple[str, tuple, str]]:
    """(prompt, images, response): 3 prompts (one far over the prompt budget) x 4 responses
    (one far over the room left), so the rule cuts prompts and responses."""
    img = (solid_image(56, 56, 1),) if with_images else ()
    img2 = (solid_image(56, 84, 2), solid_image(56, 56, 3)) if with_images else ()
    prompts = [("What is shown here?", img), (_words("context", 80) + " Which is right?", img), ("Tell a joke.", img2)]
    responses = ["Yes.", "A red square on a plain background.", _words("long", 120), "no"]
    return [(p, imgs, r) for p, imgs in prompts for r in responses]


def _score(model: RewardModel, groups: list[Group], batch_size: int = 64) -> list[list[float]]:
    return Scorer(model, batch_size=batch_size, device="cpu").score_groups(groups)


def _check(model: RewardModel, with_images: bool) -> None:
    items = _items(with_images)
    alone = [_score(model, [Group(p, (r,), imgs)])[0][0] for p, imgs, r in items]
    alone_t = torch.tensor(alone)
    assert alone_t.std() > 1e-4  # rewards really differ, so equality below is not trivial

    # Pairs with shuffled partners of the same prompt (a partner may be the over-long response).
    rng = random.Random(0)
    for _ in range(2):
        got = [0.0] * len(items)
        by_prompt: dict[int, list[int]] = {}
        for i in range(len(items)):
            by_prompt.setdefault(i // 4, []).append(i)
        for members in by_prompt.values():
            rng.shuffle(members)
            for a, b in zip(members[::2], members[1::2]):
                p, imgs, _ = items[a]
                got[a], got[b] = _score(model, [Group(p, (items[a][2], items[b][2]), imgs)])[0]
        torch.testing.assert_close(torch.tensor(got), alone_t, atol=TOL, rtol=0)

    # Whole groups, all at once, with small and large batches (the scorer sorts and packs).
    groups = [Group(items[4 * g][0], tuple(items[4 * g + k][2] for k in range(4)), items[4 * g][1]) for g in range(3)]
    for bs in (4, 8, 64):
        flat = [x for row in _score(model, groups, batch_size=bs) for x in row]
        torch.testing.assert_close(torch.tensor(flat), alone_t, atol=TOL, rtol=0)

    # The rule cut exactly the long prompt (its 4 sequences) and the long response (under each of
    # the 3 prompts), and the scorer reports it.
    scorer = Scorer(model, batch_size=5, device="cpu", name="m")
    scorer.score_groups(groups)
    assert scorer.truncated == {"sequences": 12, "prompt": 4, "response": 3}
    assert truncation_lines(scorer) == ["truncated (m): 4 of 12 prompts cut (model.backbone.max_prompt_length), "
                                        "3 of 12 responses lost their end (model.backbone.max_length)"]


def _model(backbone: BackboneConfig) -> RewardModel:
    torch.manual_seed(0)
    return RewardModel(ModelConfig(backbone=backbone, head=HeadConfig(zero_init_last=False))).eval()


@pytest.mark.parametrize("arch", ["qwen2.5-vl", "qwen2-vl"])
def test_qwen_vl_reward_does_not_depend_on_batch_partners(tmp_path, arch):
    path = tiny_qwen25vl_dir(tmp_path) if arch == "qwen2.5-vl" else tiny_qwen2vl_dir(tmp_path)
    _check(_model(BackboneConfig(name=arch, path=str(path), dtype="float32", attn_implementation="eager",
                                 max_length=96, max_prompt_length=64)), with_images=True)


def test_causal_lm_reward_does_not_depend_on_batch_partners(tmp_path):
    path = tiny_causal_lm_dir(tmp_path, name="qwen2", arch="qwen2")
    _check(_model(BackboneConfig(name="causal-lm", path=str(path), dtype="float32", attn_implementation="eager",
                                 max_length=80, max_prompt_length=40)), with_images=False)


@pytest.mark.slow
@pytest.mark.parametrize("share_prefix", [True, False])
def test_mini_vl_reward_does_not_depend_on_batch_partners(share_prefix):
    _check(_model(BackboneConfig(name="mini-vl", max_length=80, max_prompt_length=40,
                                 mini_vl=MiniVLConfig(lm_layers=2, image_grid=2, share_prefix=share_prefix))),
           with_images=True)


def test_scorer_precision_bf16_autocasts_on_cpu_and_stays_close(tmp_path):
    path = tiny_causal_lm_dir(tmp_path, name="qwen2", arch="qwen2")
    model = _model(BackboneConfig(name="causal-lm", path=str(path), dtype="float32", attn_implementation="eager",
                                  max_length=80, max_prompt_length=40))
    groups = [Group(p, (r,), ()) for p, _, r in _items(with_images=False)]
    fp32 = torch.tensor(Scorer(model, device="cpu").score_groups(groups)).flatten()
    assert torch.equal(torch.tensor(Scorer(model, device="cpu", precision="no").score_groups(groups)).flatten(), fp32)
    bf16 = torch.tensor(Scorer(model, device="cpu", precision="bf16").score_groups(groups)).flatten()
    assert not torch.equal(bf16, fp32)  # the autocast really ran
    assert (bf16 - fp32).abs().max() < 0.1 * fp32.std()
    with pytest.raises(ValueError, match="precision must be one of"):
        Scorer(model, precision="fp8")
    from basereward.cli import PRECISION_CHOICES
    from basereward.scoring.scorer import PRECISIONS

    assert PRECISION_CHOICES == PRECISIONS  # `score` / `eval --precision` offer exactly the Scorer's
