"""Prefix-shared group scoring on Qwen2.5-VL / Qwen2-VL equals per-sample scoring (CPU, float32).

Each group's prefix (chat template + image tokens + prompt) runs once on a key/value cache and its
responses run on top with M-RoPE positions continued after the prefix; rewards and gradients must
equal running every full sequence on its own (the full path, itself checked against plain
transformers calls in test_qwen_vl.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ -> `helpers`

from helpers.tiny_models import (
    QWEN_VL_CHAT_TEMPLATE,
    mixed_groups,
    solid_image,
    tiny_qwen2vl_dir,
    tiny_qwen25vl_dir,
)

from basereward.config import (
    BackboneConfig,
    HeadConfig,
    ModelConfig,
    QwenVLConfig,
    load_config,
)
from basereward.data.schema import Group
from basereward.errors import ConfigError
from basereward.losses import bradley_terry
from basereward.models.qwen_vl import Qwen25VLBackbone
from basereward.models.reward_model import RewardModel
from basereward.scoring.scorer import Scorer, pack_batches

ARCHS = ["qwen2.5-vl", "qwen2-vl"]
TOL = 1e-4
LONG = " ".join(f"w{i}" for i in range(60))


def groups() -> list[Group]:
    """Sizes 3, 2, 1 (mixed_groups: one image, two images of different sizes, no image), a prompt
    the rule cuts with an over-long response, and a group of 8 rollouts on one image."""
    img = solid_image(84, 56, 4)
    return [
        *mixed_groups(),
        Group(f"Summarise: {LONG}", ("Words.", f"All of them: {LONG} {LONG}"), (solid_image(56, 56, 5),)),
        Group("How many cats?", tuple(f"There are {k} cats{'.' * k}" for k in range(8)), (img,)),
    ]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen_vl_prefix")
    return {"qwen2.5-vl": tiny_qwen25vl_dir(root), "qwen2-vl": tiny_qwen2vl_dir(root)}


def model(path, arch="qwen2.5-vl", share=True, pooling="last", freeze_vision=True, **kw) -> RewardModel:
    bb = BackboneConfig(name=arch, path=str(path), dtype="float32", attn_implementation=kw.pop("attn", "eager"),
                        max_length=kw.pop("max_length", 96), max_prompt_length=kw.pop("max_prompt_length", 64),
                        qwen_vl=QwenVLConfig(share_prefix=share, freeze_vision=freeze_vision), **kw)
    torch.manual_seed(0)  # same head weights for every model built here
    return RewardModel(ModelConfig(backbone=bb, head=HeadConfig(pooling=pooling, zero_init_last=False)))


def per_sample(m: RewardModel, gs) -> torch.Tensor:
    """Every response alone, through the full-sequence path."""
    return torch.cat([m(m.collate([Group(g.prompt, (r,), g.images, g.history)])) for g in gs for r in g.responses])


@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("arch", ARCHS)
def test_group_scoring_equals_per_sample(dirs, arch, pooling):
    shared = model(dirs[arch], arch, pooling=pooling).eval()
    full = model(dirs[arch], arch, share=False, pooling=pooling).eval()
    gs = groups()
    batch = shared.collate(gs)
    assert batch["prefix_ids"].shape[0] == len(gs) and batch["resp_ids"].shape[0] == 16
    assert batch["resp_ids"].shape[1] < batch["input_ids"].shape[1]  # the responses alone are shorter
    assert batch["truncated_prompt"].any() and batch["truncated_response"].any()
    with torch.no_grad():
        got, want = shared(batch), per_sample(full, gs)
        assert full(batch).sub(want).abs().max() < TOL  # the layout keys do not change the full path
    assert shared.backbone.unshared_batches == 0
    assert got.shape == want.shape == (16,) and want.std() > 1e-3  # rewards differ: equality is not trivial
    assert (got - want).abs().max().item() < TOL, (got, want)


@pytest.mark.parametrize("arch", ARCHS)
def test_response_positions_continue_after_the_image(dirs, arch):
    """The positions the language model receives for the responses are those `get_rope_index`
    gives the full sequences; with an image they are not the 1-D continuation prefix_len + j."""
    bb = model(dirs[arch], arch).backbone.eval()
    gs = mixed_groups()
    batch = bb.collate(gs)
    seen = []
    hook = bb.model.language_model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw["position_ids"].clone()), with_kwargs=True)
    with torch.no_grad():
        bb(batch)
    hook.remove()
    prefix_pos, resp_pos = seen  # (3, G, Tp), (3, N, Tr)
    grids = torch.split(batch["image_grid_thw"], batch["images_per_group"].tolist())
    seq_group = batch["seq_group"].tolist()
    want = bb.rope_positions(batch["input_ids"], batch["attention_mask"], grids, seq_group)  # (3, N, T)
    p_len = batch["prefix_mask"].sum(1)
    for n, g in enumerate(seq_group):
        p, r = int(p_len[g]), int(batch["resp_mask"][n].sum())
        assert torch.equal(prefix_pos[:, g, :p], want[:, n, :p])
        assert torch.equal(resp_pos[:, n, :r], want[:, n, p: p + r])
        naive = torch.arange(p, p + r)
        assert torch.equal(resp_pos[0, n, :r], naive) == (not gs[g].images)


@pytest.mark.parametrize("arch", ARCHS)
def test_pair_gradients_equal_unshared_forward(dirs, arch):
    """Training on pairs with the vision tower unfrozen: same loss and gradients (vision included)
    with the image and the prompt's prefix shared by chosen and rejected."""
    pairs = [Group("What colour is the square?", ("It is red.", "Blue, I think."), (solid_image(64, 48, 1),)),
             Group(f"Summarise: {LONG}", ("Words.", "A list of numbered words."), (solid_image(56, 84, 2),)),
             Group("Tell me a joke.", ("The quick brown fox.", "No."))]
    grads, losses = [], []
    for share in (True, False):
        m = model(dirs[arch], arch, share=share, freeze_vision=False).train()
        batch = m.collate(pairs)
        assert m.backbone._shared(batch) == share
        r = m(batch).view(-1, 2)  # (pairs, [chosen, rejected])
        loss = bradley_terry(r[:, 0], r[:, 1]).mean()
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert abs(losses[0] - losses[1]) < 1e-5
    assert grads[0].keys() == grads[1].keys()
    assert any(n.startswith("backbone.model.visual.") for n in grads[0])
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4), n


# A ChatML variant whose turns open with "role: ": the prompt part ends in a space, which the
# byte-level BPE glues to each response's first word, so a group's prefix ids differ per response.
BOUNDARY_TEMPLATE = QWEN_VL_CHAT_TEMPLATE.replace("{{ message['role'] }}\n", "{{ message['role'] }}: ").replace(
    "<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant: {% endif %}")


def test_prefix_ids_differing_at_the_boundary_fall_back_to_full(dirs):
    m, full = model(dirs["qwen2.5-vl"]).eval(), model(dirs["qwen2.5-vl"], share=False).eval()
    for x in (m, full):
        x.backbone.collator.tokenizer.chat_template = BOUNDARY_TEMPLATE
    gs = [Group("Is it a cat?", ("The answer is yes", "no"), (solid_image(56, 56, 1),)), mixed_groups()[2]]
    batch = m.collate(gs)
    assert "prefix_ids" not in batch
    with torch.no_grad():
        got = m(batch)
        assert m.backbone.unshared_batches == 1
        assert (got - per_sample(full, gs)).abs().max().item() < TOL
    assert "prefix_ids" in m.collate(gs[1:])  # one response per group always shares


def test_where_sharing_is_off(dirs, tmp_path):
    """Gradient checkpointing and sliding-window layers run the full path (not counted as fallbacks)."""
    ckpt = model(dirs["qwen2.5-vl"], gradient_checkpointing=True).backbone
    assert not ckpt.shares_prefix() and ckpt.prefix_blocker == ""
    batch = ckpt.collate(mixed_groups()[:1])
    assert ckpt(batch).shape[1] == batch["input_ids"].shape[1] and ckpt.unshared_batches == 0
    assert not model(dirs["qwen2.5-vl"], share=False).backbone.shares_prefix()
    # The same checkpoint with its second layer on a sliding window.
    windowed = tmp_path / "windowed"
    windowed.mkdir()
    for f in dirs["qwen2.5-vl"].iterdir():
        (windowed / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((windowed / "config.json").read_text())
    text = cfg["text_config"]
    text.update(use_sliding_window=True, sliding_window=8, layer_types=["full_attention", "sliding_attention"])
    (windowed / "config.json").write_text(json.dumps(cfg))
    bb = model(windowed).backbone
    assert bb.prefix_blocker == "1 sliding-window attention layers" and not bb.shares_prefix()
    with torch.no_grad():
        assert bb(batch).shape[1] == batch["input_ids"].shape[1] and bb.unshared_batches == 0


def test_scorer_groups_of_different_sizes(dirs):
    """Through the Scorer (sorted, packed batches of whole groups) the rewards equal per-sample."""
    gs = groups()
    m = model(dirs["qwen2-vl"], "qwen2-vl")
    want = [x for row in Scorer(model(dirs["qwen2-vl"], "qwen2-vl", share=False), batch_size=1,
                                device="cpu").score_groups([Group(g.prompt, (r,), g.images) for g in gs
                                                            for r in g.responses]) for x in row]
    order = list(range(len(gs)))
    # A token budget changes which groups share a batch, never a reward.
    assert len(list(pack_batches(order, gs, 16, token_budget=1000))) > len(list(pack_batches(order, gs, 16)))
    for bs, budget in ((3, 0), (16, 0), (16, 1000)):
        scorer = Scorer(m, batch_size=bs, device="cpu", token_budget=budget)
        got = [x for row in scorer.score_groups(gs) for x in row]
        torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=TOL, rtol=0)
    assert m.backbone.unshared_batches == 0


def test_capability_and_config(dirs):
    assert Qwen25VLBackbone.capabilities.prefix_sharing
    cfg = load_config(None, ["model.backbone.name=qwen2-vl", "model.backbone.qwen_vl.share_prefix=false"])
    assert cfg.model.backbone.qwen_vl.share_prefix is False
    assert load_config(None, ["model.backbone.name=qwen2.5-vl"]).model.backbone.qwen_vl.share_prefix is True
    with pytest.raises(ConfigError, match=r"qwen_vl\.share_prefix: backbone 'mini-vl' does not use it"):
        load_config(None, ["model.backbone.qwen_vl.share_prefix=false"])
