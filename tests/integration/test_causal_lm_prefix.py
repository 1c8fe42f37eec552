"""Prefix-shared group scoring on the `causal-lm` backbone equals per-sample scoring (CPU, float32).

Each group's prefix (chat template + prompt) runs once on a key/value cache and its responses run
on top; rewards and gradients must equal running every full sequence on its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ -> `helpers`

from helpers.tiny_models import tiny_causal_lm_dir  # noqa: E402

from basereward.config import (  # noqa: E402
    BackboneConfig,
    CausalLMConfig,
    HeadConfig,
    ModelConfig,
    load_config,
)
from basereward.data.schema import Group  # noqa: E402
from basereward.errors import ConfigError  # noqa: E402
from basereward.losses import bradley_terry  # noqa: E402
from basereward.models.causal_lm import CausalLMBackbone  # noqa: E402
from basereward.models.reward_model import RewardModel  # noqa: E402

TOL = 1e-4
LONG = " ".join(f"w{i}" for i in range(50))
GROUPS = [
    # Mixed response lengths: one token-ish to a long sentence, in one group.
    Group("Which is larger, six times seven or forty?",
          ("six times seven is 42", "forty", "They are equal, I think, but let me check that again slowly.")),
    Group(f"Summarise: {LONG}", ("Words.", "A long list of numbered words, w0 to w49.")),  # prompt cut below
    Group("Tell me a joke.", ("The quick brown fox jumps over the lazy dog.",)),
    Group("What is my cat called?", ("Tom.", "Rex."), history=(("user", "My cat is Tom."), ("assistant", "Nice!"))),
]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal_lm_prefix")
    return {
        "qwen2": tiny_causal_lm_dir(root, name="qwen2", arch="qwen2"),  # chat template
        "llama": tiny_causal_lm_dir(root, name="llama", arch="llama", chat_template=False, pad_token=False),  # ChatML
    }


def model(dirs, arch, share=True, pooling="last", **kw) -> RewardModel:
    bb = BackboneConfig(name="causal-lm", path=str(dirs[arch]), dtype="float32", attn_implementation="sdpa",
                        max_length=kw.pop("max_length", 64), max_prompt_length=kw.pop("max_prompt_length", 40),
                        causal_lm=CausalLMConfig(share_prefix=share), **kw)
    torch.manual_seed(0)  # same head weights for every model built here
    return RewardModel(ModelConfig(backbone=bb, head=HeadConfig(pooling=pooling, zero_init_last=False)))


def per_sample(m: RewardModel, groups) -> torch.Tensor:
    """Every response alone, through the full-sequence path."""
    out = []
    for g in groups:
        for r in g.responses:
            batch = m.collate([Group(g.prompt, (r,), history=g.history)])
            out.append(m(batch))
    return torch.cat(out)


@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("arch", ["qwen2", "llama"])  # the tokenizer's chat template / the ChatML fallback
def test_group_scoring_equals_per_sample(dirs, arch, pooling):
    shared, full = model(dirs, arch, pooling=pooling), model(dirs, arch, share=False, pooling=pooling)
    shared.eval(), full.eval()
    batch = shared.collate(GROUPS)
    assert "prefix_ids" in batch and batch["prefix_ids"].shape[0] == len(GROUPS)
    assert batch["resp_ids"].shape[1] < batch["input_ids"].shape[1]  # the responses alone are shorter
    assert batch["truncated_prompt"].any() and not batch["truncated_prompt"].all()
    with torch.no_grad():
        got = shared(batch)
        want = per_sample(full, GROUPS)
        assert shared.backbone.unshared_batches == 0
        assert full(batch).sub(want).abs().max() < TOL  # the layout keys do not change the full path
    assert got.shape == want.shape == (8,)
    assert (got - want).abs().max().item() < TOL, (got, want)


def test_pair_gradients_equal_unshared_forward(dirs):
    """Training on a pair batch: same loss and gradients with the prompt's prefix shared."""
    pairs = [Group("Which is larger, six times seven or forty?", ("six times seven is 42", "forty")),
             Group(f"Summarise: {LONG}", ("Words.", "A long list of numbered words."))]
    grads, losses = [], []
    for share in (True, False):
        m = model(dirs, "qwen2", share=share).train()
        batch = m.collate(pairs)
        assert ("prefix_ids" in batch) and m.backbone.shares_prefix() == share
        r = m(batch).view(-1, 2)  # (pairs, [chosen, rejected])
        loss = bradley_terry(r[:, 0], r[:, 1]).mean()
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert abs(losses[0] - losses[1]) < 1e-5
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4), n


BOUNDARY_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% if not loop.last %}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}\nassistant: {% endif %}"
)


def test_prefix_ids_differing_at_the_boundary_fall_back_to_full(dirs):
    """A template whose prompt part ends in a space: byte-level BPE glues it to each response's
    first word, so the prefix ids differ per response and the batch runs in full (counted)."""
    m = model(dirs, "qwen2").eval()
    m.backbone.collator.tokenizer.chat_template = BOUNDARY_TEMPLATE
    full = model(dirs, "qwen2", share=False).eval()
    full.backbone.collator.tokenizer.chat_template = BOUNDARY_TEMPLATE
    groups = [Group("Is it a cat?", ("The answer is yes", "no")), GROUPS[2]]
    batch = m.collate(groups)
    assert "prefix_ids" not in batch and "resp_mask" not in batch
    with torch.no_grad():
        got = m(batch)
        assert m.backbone.unshared_batches == 1
        assert (got - per_sample(full, groups)).abs().max().item() < TOL
    # Identical prefix ids share again (one response per group always does).
    assert "prefix_ids" in m.collate([GROUPS[2]])


def test_prefix_layout_needs_identical_prefix_ids(dirs):
    col = model(dirs, "qwen2").backbone.collator
    same = col._prefix_layout([[1, 2, 3, 7], [1, 2, 3, 8, 9]], [1, 2], [2])
    assert same["prefix_ids"].tolist() == [[1, 2, 3]] and same["resp_ids"].tolist() == [[7, col.pad_id], [8, 9]]
    assert same["seq_group"].tolist() == [0, 0] and same["resp_mask"].tolist() == [[1, 0], [1, 1]]
    assert col._prefix_layout([[1, 2, 3, 7], [1, 2, 5, 6]], [1, 2], [2]) == {}  # boundary merged differently
    assert col._prefix_layout([[1, 2, 3], [1, 2, 3, 8]], [0, 1], [2]) == {}  # an empty response


def test_capability_and_config(dirs):
    assert CausalLMBackbone.capabilities.prefix_sharing
    assert model(dirs, "qwen2").backbone.shares_prefix()
    assert not model(dirs, "qwen2", share=False).backbone.shares_prefix()
    # Recomputation under gradient checkpointing has no KV cache: the full path, never counted.
    ckpt = model(dirs, "qwen2", gradient_checkpointing=True).backbone
    assert not ckpt.shares_prefix()
    ckpt(ckpt.collate(GROUPS[:1]))
    assert ckpt.unshared_batches == 0
    cfg = load_config(None, ["model.backbone.name=causal-lm", "model.backbone.causal_lm.share_prefix=false"])
    assert cfg.model.backbone.causal_lm.share_prefix is False
    with pytest.raises(ConfigError, match=r"causal_lm\.share_prefix: backbone 'mini-vl' does not use it"):
        load_config(None, ["model.backbone.causal_lm.share_prefix=false"])
