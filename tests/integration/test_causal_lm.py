"""The `causal-lm` backbone on tiny random Qwen2 / Llama checkpoints saved to disk (CPU, float32)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ -> `helpers`

from helpers.tiny_models import last_token_grads, solid_image, tiny_causal_lm_dir  # noqa: E402

from basereward.config import BackboneConfig, LoraConfig  # noqa: E402
from basereward.data.schema import Group  # noqa: E402
from basereward.errors import ConfigError, DataError  # noqa: E402
from basereward.models.backbone import build_backbone, last_token_index  # noqa: E402
from basereward.models.causal_lm import CausalLMBackbone  # noqa: E402

TOL = 1e-5
GROUPS = [
    Group("Which is larger, six times seven or forty?", ("six times seven is 42", "forty", "They are equal.")),
    Group("Tell me a joke.", ("The quick brown fox jumps over the lazy dog.", "no")),
]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal_lm")
    return {
        "qwen2": tiny_causal_lm_dir(root, name="qwen2", arch="qwen2"),
        "llama": tiny_causal_lm_dir(root, name="llama", arch="llama", chat_template=False, pad_token=False),
    }


def make(dirs, arch="qwen2", **kw):
    kw.setdefault("dtype", "float32")
    kw.setdefault("attn_implementation", "eager")
    return build_backbone(BackboneConfig(name="causal-lm", path=str(dirs[arch]), **kw))


def test_loads_base_model_from_dir(dirs):
    from transformers import Qwen2ForCausalLM

    bb = make(dirs)
    assert isinstance(bb, CausalLMBackbone)
    assert bb.hidden_size == 64
    assert type(bb.model).__name__ == "Qwen2Model"  # the decoder, no LM head
    assert bb.model.config._attn_implementation == "eager"
    full = Qwen2ForCausalLM.from_pretrained(dirs["qwen2"]).model.state_dict()
    for k, v in bb.model.state_dict().items():
        assert torch.equal(v, full[k]), k
    with pytest.raises(ConfigError, match="path"):
        build_backbone(BackboneConfig(name="causal-lm", path=""))


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_padded_batch_equals_single_unpadded_forward(dirs, arch, attn):
    bb = make(dirs, arch, attn_implementation=attn)
    batch = bb.collate(GROUPS)
    assert batch["group_sizes"].tolist() == [3, 2]
    mask = batch["attention_mask"]
    assert torch.equal(mask, mask.cummin(dim=1).values)  # right padding
    assert (mask.sum(1) < mask.shape[1]).any()  # some rows really are padded
    with torch.no_grad():
        hidden = bb(batch)  # (N, T, H), or (N, Tr, H) with the prefix shared
        last = hidden[torch.arange(hidden.shape[0]), last_token_index(bb.pool_mask(batch))]
        for i in range(hidden.shape[0]):
            ids = batch["input_ids"][i, : int(mask[i].sum())][None]  # (1, T_i), no padding
            single = bb.model(input_ids=ids).last_hidden_state[0, -1]
            assert (last[i] - single).abs().max().item() < TOL


def test_chat_template_and_response_lengths(dirs):
    bb = make(dirs)
    batch = bb.collate(GROUPS)
    tok = bb.collator.tokenizer
    mask = batch["attention_mask"]
    last = last_token_index(mask)
    responses = [r for g in GROUPS for r in g.responses]
    for i, r in enumerate(responses):
        text = tok.decode(batch["input_ids"][i, : int(mask[i].sum())])
        prompt = GROUPS[0 if i < 3 else 1].prompt
        # The tokenizer's ChatML template, ending on the end-of-turn token (trailing newline dropped).
        assert text == f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n{r}<|im_end|>"
        n = int(batch["response_lengths"][i])
        assert tok.decode(batch["input_ids"][i, last[i] + 1 - n : last[i] + 1]) == r + "<|im_end|>"


def test_chatml_fallback_system_prompt_and_eos_padding(dirs):
    bb = make(dirs, "llama", system_prompt="Be brief.")
    tok = bb.collator.tokenizer
    assert tok.chat_template is None and tok.pad_token is None
    batch = bb.collate(GROUPS)
    mask = batch["attention_mask"]
    assert bb.collator.pad_id == tok.eos_token_id
    assert (batch["input_ids"][mask == 0] == tok.eos_token_id).all()
    text = tok.decode(batch["input_ids"][1, : int(mask[1].sum())])
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
        f"{GROUPS[0].prompt}<|im_end|>\n<|im_start|>assistant\nforty<|im_end|>"
    )


def test_images_are_refused(dirs):
    bb = make(dirs)
    with pytest.raises(DataError, match="text-only"):
        bb.collate([Group("What is this?", ("a", "b"), (solid_image(56, 56),))])


@pytest.mark.parametrize("arch", ["qwen2", "llama"])  # chat template / ChatML fallback
def test_truncation_rule(dirs, arch):
    """Prompt part <= max_prompt_length, cut inside the prompt text only; the response keeps the rest."""
    long_prompt = " ".join(f"w{i}" for i in range(60))
    group = Group(long_prompt, ("The answer is 42",))
    full = make(dirs, arch).collate([group])
    n_resp = int(full["response_lengths"][0])
    ids = full["input_ids"][0].tolist()
    prefix, resp = ids[: len(ids) - n_resp], ids[len(ids) - n_resp :]
    tok = make(dirs, arch).collator.tokenizer
    head = len(tok(tok.decode(prefix).split(long_prompt)[0], add_special_tokens=False)["input_ids"])
    assert not full["truncated_prompt"].any() and not full["truncated_response"].any()
    for side in ("left", "right"):
        cut = make(dirs, arch, max_length=60, max_prompt_length=30, truncation_side=side).collate([group])
        got = cut["input_ids"][0].tolist()
        over = len(prefix) - 30
        # Hand-derived: `over` prompt-text tokens go, from the text's start (left) or end (right).
        end = head + _text_tokens(tok, long_prompt)  # the prompt text is prefix[head:end]
        want_prefix = prefix[:head] + prefix[head + over:] if side == "left" else prefix[: end - over] + prefix[end:]
        assert got == want_prefix + resp, side
        assert cut["truncated_prompt"].tolist() == [True] and cut["truncated_response"].tolist() == [False]
        assert cut["response_lengths"].tolist() == [n_resp]
    # A response longer than the room left keeps its first tokens and is reported.
    short = Group("Hi", (" ".join(f"r{i}" for i in range(40)),))
    whole = make(dirs, arch).collate([short])
    cut = make(dirs, arch, max_length=24, max_prompt_length=12).collate([short])
    n = int(whole["input_ids"].shape[1] - whole["response_lengths"][0])
    assert n <= 12 and cut["input_ids"].shape == (1, 24)
    assert cut["input_ids"][0].tolist() == whole["input_ids"][0, :24].tolist()
    assert cut["response_lengths"].tolist() == [24 - n]
    assert cut["truncated_prompt"].tolist() == [False] and cut["truncated_response"].tolist() == [True]
    # The template alone over the budget: one clear error, never a cut into the template.
    with pytest.raises(ConfigError, match="max_prompt_length=2"):
        make(dirs, arch, max_length=24, max_prompt_length=2).collate([short])


def _text_tokens(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def _grads(bb):
    batch = bb.collate(GROUPS)
    h = bb(batch)
    h[torch.arange(h.shape[0]), last_token_index(bb.pool_mask(batch))].pow(2).sum().backward()
    return {n for n, p in bb.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_freezing_variants(dirs):
    all_params = {n for n, _ in make(dirs).named_parameters()}
    assert _grads(make(dirs)) == all_params  # default: the whole LM trains
    frozen = make(dirs, freeze_lm=True)
    assert not any(p.requires_grad for p in frozen.parameters())
    top = make(dirs, train_lm_layers=1)
    trainable = {n for n, p in top.named_parameters() if p.requires_grad}
    assert trainable == {n for n in all_params if n.startswith("model.layers.1.")} | {"model.norm.weight"}
    assert _grads(top) == trainable
    none = make(dirs, train_lm_layers=0)
    assert not any(p.requires_grad for p in none.parameters())


def test_lora(dirs):
    bb = make(dirs, lora=LoraConfig(enabled=True, r=4, alpha=8))
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    # 2 layers x 7 target modules x (A, B)
    assert len(trainable) == 28 and all("lora_" in n for n in trainable)
    assert _grads(bb) == {n for n in trainable if "lora_B" in n}  # B starts at 0, so dL/dA = 0
    base = make(dirs)
    batch = base.collate(GROUPS)
    with torch.no_grad():
        assert (base(batch) - bb(batch)).abs().max() < TOL  # B = 0: adapters start as identity


def test_gradient_checkpointing_matches(dirs):
    plain, ckpt = make(dirs), make(dirs, gradient_checkpointing=True)
    assert all(layer.gradient_checkpointing for layer in ckpt.model.layers)
    batch = plain.collate(GROUPS)
    grads = last_token_grads((plain, ckpt), batch)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        # Recomputation reorders float32 sums; on AVX-512 kernels the embedding gradient (entries
        # ~0.4, summed over every position) differs from the plain run by a few 1e-5.
        assert torch.allclose(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-5), n


HISTORY = (("user", "My cat is called Tom."), ("assistant", "Nice name!"))


@pytest.mark.parametrize("arch", ["qwen2", "llama"])  # the tokenizer's chat template / the ChatML fallback
def test_multi_turn_prompt_is_rendered_as_messages(dirs, arch):
    bb = make(dirs, arch, system_prompt="Be brief.")
    group = Group("What is my cat called?", ("Tom.", "Rex."), history=HISTORY)
    batch = bb.collate([group])
    tok = bb.collator.tokenizer
    text = tok.decode(batch["input_ids"][0, : int(batch["attention_mask"][0].sum())])
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": HISTORY[0][1]},
                {"role": "assistant", "content": HISTORY[1][1]}, {"role": "user", "content": group.prompt},
                {"role": "assistant", "content": "Tom."}]
    if tok.chat_template:
        want = tok.apply_chat_template(messages, tokenize=False).rstrip("\n")
    else:
        want = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages).rstrip("\n")
    assert text == want
    # Over the prompt budget the OLDEST turn loses text first (left), the last question stays.
    ids = batch["input_ids"][0].tolist()
    n_prompt = len(ids) - int(batch["response_lengths"][0])
    cut = make(dirs, arch, system_prompt="Be brief.", max_length=n_prompt + 10, max_prompt_length=n_prompt - 3).collate([group])
    cut_text = tok.decode(cut["input_ids"][0, : int(cut["attention_mask"][0].sum())])
    assert cut["truncated_prompt"].tolist() == [True, True]
    assert "My cat is called Tom." not in cut_text and group.prompt in cut_text and cut_text.endswith("Tom.<|im_end|>")
