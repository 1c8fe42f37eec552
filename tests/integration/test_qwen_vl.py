"""Qwen2.5-VL / Qwen2-VL backbones on tiny random checkpoints saved to disk (CPU, float32).

The reference for every hidden state is the plain transformers call on ONE conversation:
`model(input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids)`, with the
image pad tokens expanded by hand as the HF processor does (grid.prod() // merge**2 per image).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ -> `helpers`

from helpers.tiny_models import (  # noqa: E402
    last_token_grads,
    solid_image,
    tiny_qwen2vl_dir,
    tiny_qwen25vl_dir,
)

from basereward.config import BackboneConfig, LoraConfig, MiniVLConfig, QwenVLConfig  # noqa: E402
from basereward.data.schema import Group  # noqa: E402
from basereward.errors import ConfigError  # noqa: E402
from basereward.models.backbone import (  # noqa: E402
    build_backbone,
    conversation_text,
    last_token_index,
)
from basereward.models.qwen_vl import (  # noqa: E402
    IMAGE_PLACEHOLDER,
    IMAGE_TOKEN,
    Qwen2VLBackbone,
    Qwen25VLBackbone,
)

ARCHS = ["qwen2.5-vl", "qwen2-vl"]
TOL = 1e-5


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen_vl")
    return {
        "qwen2.5-vl": tiny_qwen25vl_dir(root),
        "qwen2-vl": tiny_qwen2vl_dir(root),
        "qwen2.5-vl+template": tiny_qwen25vl_dir(root, name="tiny-qwen2.5-vl-tpl", chat_template=True),
    }


def make(dirs, arch="qwen2.5-vl", key=None, **kw):
    kw.setdefault("dtype", "float32")
    kw.setdefault("attn_implementation", "eager")
    # The full path (hidden states of whole sequences) is what these tests check; the shared
    # prefix path has its own tests (test_qwen_vl_prefix.py).
    section = QwenVLConfig(share_prefix=kw.pop("share_prefix", False),
                           **{k: kw.pop(k) for k in ("min_pixels", "max_pixels", "freeze_vision") if k in kw})
    return build_backbone(BackboneConfig(name=arch, path=str(dirs[key or arch]), qwen_vl=section, **kw))


def mixed_groups():
    """A 3-response group with one image, a 2-response group with two images of different sizes,
    and a text-only pair: every case the shared encoder must handle in one batch."""
    return [
        Group("What is in the picture?", ("A red square.", "Two dogs and a cat.", "no"), (solid_image(56, 84, 1),)),
        Group("Compare the two images.", ("The first is better", "second"), (solid_image(112, 56, 2), solid_image(70, 70, 3))),
        Group("Tell me a joke.", ("The answer is 42", "hmm, seven")),
    ]


def reference_last_hidden(bb, group, response, system=""):
    """Plain HF forward of one (prompt, images, response): the last token's hidden state (H,)."""
    tok, ip = bb.collator.tokenizer, bb.collator.image_processor
    prefix, resp = conversation_text(group.prompt, response, system, IMAGE_PLACEHOLDER * len(group.images))
    kw = {}
    if group.images:
        o = ip(images=list(group.images), size={"shortest_edge": 3136, "longest_edge": 401408}, return_tensors="pt")
        counts = (o["image_grid_thw"].prod(-1) // bb.spatial_merge_size**2).tolist()
        parts = prefix.split(IMAGE_TOKEN)
        prefix = parts[0] + "".join(IMAGE_TOKEN * k + p for k, p in zip(counts, parts[1:]))
        kw = dict(pixel_values=o["pixel_values"], image_grid_thw=o["image_grid_thw"])
    ids = tok(prefix + resp, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        out = bb.model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            mm_token_type_ids=(ids == bb.image_token_id).int(),
            **kw,
        ).last_hidden_state
    return out[0, -1]


# ----------------------------------------------------------------------------- loading


@pytest.mark.parametrize("arch", ARCHS)
def test_loads_saved_checkpoint_like_a_user_dir(dirs, arch):
    from transformers import (
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLForConditionalGeneration,
    )

    bb = make(dirs, arch)
    assert isinstance(bb, {"qwen2.5-vl": Qwen25VLBackbone, "qwen2-vl": Qwen2VLBackbone}[arch])
    assert bb.hidden_size == 64
    assert bb.model.config._attn_implementation == "eager"
    assert next(bb.model.parameters()).dtype == torch.float32
    assert not hasattr(bb.model, "lm_head")  # base model only: no LM head allocated
    # Every weight comes from the checkpoint (nothing silently re-initialised).
    full_cls = {"qwen2.5-vl": Qwen2_5_VLForConditionalGeneration, "qwen2-vl": Qwen2VLForConditionalGeneration}[arch]
    full = full_cls.from_pretrained(dirs[arch]).model.state_dict()
    for k, v in bb.model.state_dict().items():
        assert torch.equal(v, full[k]), k


def test_load_errors(dirs):
    with pytest.raises(ConfigError, match="path"):
        build_backbone(BackboneConfig(name="qwen2.5-vl", path=""))
    with pytest.raises(ConfigError, match="qwen2_vl"):  # a Qwen2.5-VL dir named as qwen2-vl
        build_backbone(BackboneConfig(name="qwen2-vl", path=str(dirs["qwen2.5-vl"])))
    with pytest.raises(ConfigError, match="bfloat17"):
        build_backbone(BackboneConfig(name="qwen2.5-vl", path=str(dirs["qwen2.5-vl"]), dtype="bfloat17"))


def test_keys_and_stages_it_does_not_have_are_config_errors(dirs):
    # mini-vl's section, even set in code (not through load_config): named key and backbone.
    with pytest.raises(ConfigError, match=r"mini_vl\.share_prefix: backbone 'qwen2\.5-vl' does not use it"):
        build_backbone(BackboneConfig(name="qwen2.5-vl", path=str(dirs["qwen2.5-vl"]),
                                      mini_vl=MiniVLConfig(share_prefix=False)))
    bb = make(dirs)
    caps = type(bb).capabilities
    assert caps.prefix_sharing and not (caps.alignment or caps.trunk_cache or caps.image_feature_cache)
    with pytest.raises(ConfigError, match=r"data\.alignment: backbone 'qwen2\.5-vl' has no alignment stage.*mini-vl"):
        bb.align([], seed=0)
    with pytest.raises(ConfigError, match=r"cache_trunk: backbone 'qwen2\.5-vl' has no frozen-trunk cache"):
        bb.enable_trunk_cache()
    assert bb.missing_alignment() == "" and not bb.uses_trunk_cache() and not bb.shares_prefix()
    assert bb.cache_image_features(["unused.png"], progress=False) is None  # an optional speed-up: a no-op here
    assert bb.metadata() == {}


def test_dtype_is_honoured(dirs):
    bb = make(dirs, dtype="bfloat16")
    assert {p.dtype for p in bb.parameters()} == {torch.bfloat16}
    batch = bb.collate(mixed_groups()[:1])
    with torch.no_grad():
        assert bb(batch).dtype == torch.bfloat16


# ----------------------------------------------------------------------------- collate


def test_collate_layout(dirs):
    bb = make(dirs)
    groups = mixed_groups()
    batch = bb.collate(groups)
    N = sum(len(g.responses) for g in groups)
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["input_ids"].shape[0] == N
    assert batch["group_sizes"].tolist() == [3, 2, 2]
    assert batch["images_per_group"].tolist() == [1, 2, 0]
    # Right padding: every row's mask is a run of ones then zeros.
    mask = batch["attention_mask"]
    assert torch.equal(mask, mask.cummin(dim=1).values)
    # Each group's images appear once (3 images), not once per response (7 sequences).
    grid = batch["image_grid_thw"]
    assert grid.shape == (3, 3)
    assert batch["pixel_values"].shape[0] == int(grid.prod(-1).sum())
    # Image tokens per sequence = sum over its group's images of t*h*w / merge^2.
    per_image = (grid.prod(-1) // 4).tolist()
    expected = [per_image[0]] * 3 + [per_image[1] + per_image[2]] * 2 + [0, 0]
    assert (batch["input_ids"] == bb.image_token_id).sum(1).tolist() == expected
    # response_lengths count exactly the response + <|im_end|> tokens at the end of each row.
    tok = bb.collator.tokenizer
    responses = [r for g in groups for r in g.responses]
    last = last_token_index(mask)
    for i, r in enumerate(responses):
        n = int(batch["response_lengths"][i])
        ids = batch["input_ids"][i, last[i] + 1 - n : last[i] + 1].tolist()
        assert tok.decode(ids) == r + "<|im_end|>"


def test_text_only_batch_has_empty_image_tensors(dirs):
    bb = make(dirs)
    batch = bb.collate([Group("hi", ("a", "b"))])
    assert batch["pixel_values"].shape == (0, 3 * 2 * 14 * 14)
    assert batch["image_grid_thw"].shape == (0, 3)
    with torch.no_grad():
        assert bb(batch).shape == (2, batch["input_ids"].shape[1], 64)


def test_min_and_max_pixels_are_respected(dirs):
    big = Group("x", ("a",), (solid_image(224, 224),))
    tiny = Group("x", ("a",), (solid_image(20, 20),))
    assert make(dirs).collate([big])["image_grid_thw"].tolist() == [[1, 16, 16]]
    bb = make(dirs, max_pixels=56 * 56)
    capped = bb.collate([big])
    assert capped["image_grid_thw"].tolist() == [[1, 4, 4]]
    assert (capped["input_ids"] == bb.image_token_id).sum() == 4  # 16 patches / 2x2 merge
    raised = make(dirs, min_pixels=112 * 112).collate([tiny])
    assert raised["image_grid_thw"].tolist() == [[1, 8, 8]]
    with pytest.raises(ConfigError, match="min_pixels"):
        make(dirs, min_pixels=10_000, max_pixels=5_000)


def test_image_paths_are_opened(dirs, tmp_path):
    bb = make(dirs)
    img = solid_image(56, 84, 7)
    img.save(tmp_path / "a.png")
    from_path = bb.collate([Group("q", ("a", "b"), (str(tmp_path / "a.png"),))])
    from_pil = bb.collate([Group("q", ("a", "b"), (img,))])
    for k in from_pil:
        assert torch.equal(from_path[k], from_pil[k]), k


def test_image_processor_runs_once_per_group(dirs):
    bb = make(dirs)
    calls = []
    real = bb.collator.image_processor

    class Counting:
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, images, **kw):
            calls.append(len(images))
            return real(images=images, **kw)

    bb.collator.image_processor = Counting()
    bb.collate(mixed_groups())
    assert calls == [1, 2]  # one call per group with images, with that group's images


def test_truncation_cuts_prompt_text_only_never_image_tokens(dirs):
    long_prompt = " ".join(f"w{i}" for i in range(40))
    group = Group(long_prompt, ("The answer is 42",), (solid_image(56, 56),))
    full = make(dirs).collate([group])
    n_img = int((full["input_ids"] == make(dirs).image_token_id).sum())
    n_resp = int(full["response_lengths"][0])
    ids = full["input_ids"][0].tolist()
    cut = make(dirs, max_length=n_img + 40, max_prompt_length=n_img + 20).collate([group])
    got = cut["input_ids"][0].tolist()
    assert len(got) == n_img + 20 + n_resp  # the prompt part is exactly at its budget
    assert got[-n_resp:] == ids[-n_resp:]  # the response is whole
    assert got.count(make(dirs).image_token_id) == n_img  # every image token stays
    tok = make(dirs).collator.tokenizer
    text = tok.decode(got[: len(got) - n_resp])
    assert "<|vision_start|>" in text and text.endswith("<|im_start|>assistant\n")
    assert long_prompt.endswith(text.split("<|vision_end|>")[1].split("<|im_end|>")[0])  # cut from the left
    assert cut["truncated_prompt"].tolist() == [True] and cut["truncated_response"].tolist() == [False]
    # Image tokens above the prompt budget: one clear error instead of a misaligned image.
    with pytest.raises(ConfigError, match="image"):
        make(dirs, max_length=n_img + 4, max_prompt_length=n_img).collate([Group("q", ("a",), (solid_image(56, 56),))])


def test_chat_template_is_used_when_present(dirs):
    bb = make(dirs, key="qwen2.5-vl+template")
    group = mixed_groups()[0]
    batch = bb.collate([group])
    text = bb.collator.tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()])
    # The template's default system turn, one vision block, and the response ending on <|im_end|>.
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>")
    assert text.endswith("<|im_start|>assistant\nA red square.<|im_end|>")
    # The template path renders exactly the ChatML of `conversation_text` with that system prompt.
    with torch.no_grad():
        h = bb(batch)
    ref = reference_last_hidden(bb, group, group.responses[0], system="You are a helpful assistant.")
    assert (h[0, last_token_index(batch["attention_mask"])[0]] - ref).abs().max() < TOL


# ----------------------------------------------------------------------------- shared encoding


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", ARCHS)
def test_shared_image_forward_equals_separate_hf_calls(dirs, arch, attn):
    bb = make(dirs, arch, attn_implementation=attn)
    groups = mixed_groups()
    batch = bb.collate(groups)
    with torch.no_grad():
        hidden = bb(batch)  # (N, T, H)
    assert hidden.shape == (*batch["input_ids"].shape, 64)
    last = hidden[torch.arange(hidden.shape[0]), last_token_index(batch["attention_mask"])]  # (N, H)
    refs = torch.stack([reference_last_hidden(bb, g, r) for g in groups for r in g.responses])
    assert (last - refs).abs().max().item() < TOL
    # Not vacuous: the responses differ, and 1-D positions (no M-RoPE) would change the result.
    assert (refs[0] - refs[1]).abs().max() > 1e-3
    with torch.no_grad():
        flat = bb.model.language_model(
            inputs_embeds=_inputs_embeds(bb, batch), attention_mask=batch["attention_mask"]
        ).last_hidden_state
    flat_last = flat[torch.arange(flat.shape[0]), last_token_index(batch["attention_mask"])]
    assert (flat_last[:5] - refs[:5]).abs().max() > 1e-3


def _inputs_embeds(bb, batch):
    """The embeddings `forward` builds, captured with a hook on the language model."""
    captured = {}
    handle = bb.model.language_model.register_forward_pre_hook(
        lambda m, args, kwargs: captured.update(kwargs), with_kwargs=True
    )
    try:
        bb(batch)
    finally:
        handle.remove()
    return captured["inputs_embeds"]


@pytest.mark.parametrize("arch", ARCHS)
def test_vision_tower_encodes_each_group_image_once(dirs, arch):
    bb = make(dirs, arch)
    pairs = [
        Group("What is this?", ("A square.", "A circle."), (solid_image(56, 84, 1),)),
        Group("And this?", ("Dogs.", "Cats."), (solid_image(112, 56, 2),)),
    ]
    batch = bb.collate(pairs)
    calls, rows = [], []

    def count(module, args, out):
        calls.append(1)
        rows.append(args[0].shape[0])  # patches given to the ViT

    handle = bb.model.visual.register_forward_hook(count)
    try:
        with torch.no_grad():
            bb(batch)
    finally:
        handle.remove()
    n_seq, n_groups = batch["input_ids"].shape[0], len(pairs)
    assert n_seq == 2 * n_groups
    # One vision call for the whole batch, over each group's image patches exactly once.
    patches_per_group = batch["image_grid_thw"].prod(-1).tolist()
    assert calls == [1] and rows == [sum(patches_per_group)]
    # ...and each sequence still sees its own group's image: responses of group 0 and group 1 with
    # the same text would differ only through the image.
    same_text = [Group("Q", ("Same.",), (solid_image(56, 84, 1),)), Group("Q", ("Same.",), (solid_image(56, 84, 2),))]
    with torch.no_grad():
        h = bb(bb.collate(same_text))
    assert (h[0, -1] - h[1, -1]).abs().max() > 1e-4


# ----------------------------------------------------------------------------- training knobs


def _trainable(module):
    return {n for n, p in module.named_parameters() if p.requires_grad}


def _grad_names(bb):
    batch = bb.collate(mixed_groups()[:2])
    bb.zero_grad(set_to_none=True)
    h = bb(batch)
    h[torch.arange(h.shape[0]), last_token_index(batch["attention_mask"])].pow(2).sum().backward()
    return {n for n, p in bb.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_default_freezes_vision_and_merger_and_trains_lm(dirs):
    bb = make(dirs)
    assert not _trainable(bb.model.visual)  # ViT and merger frozen
    lm_params = {n for n, _ in bb.model.language_model.named_parameters()}
    assert _trainable(bb.model.language_model) == lm_params
    grads = _grad_names(bb)
    assert grads and all(n.startswith("model.language_model.") for n in grads)


def test_unfrozen_vision_gets_gradients_through_shared_encoding(dirs):
    bb = make(dirs, freeze_vision=False)
    grads = _grad_names(bb)
    assert any(n.startswith("model.visual.merger.") for n in grads)
    assert any(n.startswith("model.visual.blocks.") for n in grads)
    assert any(n.startswith("model.visual.patch_embed.") for n in grads)


def test_freeze_lm(dirs):
    bb = make(dirs, freeze_lm=True, freeze_vision=False)
    assert not _trainable(bb.model.language_model)
    grads = _grad_names(bb)
    assert grads and all(n.startswith("model.visual.") for n in grads)


def test_train_top_layers_only(dirs):
    bb = make(dirs, train_lm_layers=1)
    trainable = _trainable(bb.model.language_model)
    assert trainable and all(n.startswith("layers.1.") or n.startswith("norm.") for n in trainable)
    assert "norm.weight" in trainable
    grads = _grad_names(bb)
    assert {n.removeprefix("model.language_model.") for n in grads} == trainable
    with pytest.raises(ConfigError, match="train_lm_layers"):
        make(dirs, train_lm_layers=3)  # only 2 layers
    with pytest.raises(ConfigError, match="train_lm_layers"):
        make(dirs, train_lm_layers=1, freeze_lm=True)


def test_lora_on_the_language_model_only(dirs):
    lora = LoraConfig(enabled=True, r=4, alpha=8, target_modules=("q_proj", "v_proj"))
    bb = make(dirs, lora=lora)
    trainable = _trainable(bb)
    assert trainable and all("lora_" in n and n.startswith("model.language_model.") for n in trainable)
    # 2 layers x (q, v) x (A, B)
    assert len(trainable) == 8
    # peft starts B at zero, so the first gradient reaches exactly the B matrices (dL/dA = 0).
    assert _grad_names(bb) == {n for n in trainable if "lora_B" in n}
    with pytest.raises(ConfigError, match="train_lm_layers"):
        make(dirs, lora=lora, train_lm_layers=1)
    with pytest.raises(ConfigError, match="lora"):
        make(dirs, lora=LoraConfig(enabled=True, target_modules=("no_such_proj",)))


def test_lora_starts_as_identity(dirs):
    """peft initialises B = 0, so the adapted backbone equals the base one before training."""
    base, adapted = make(dirs), make(dirs, lora=LoraConfig(enabled=True, r=4))
    batch = base.collate(mixed_groups())
    with torch.no_grad():
        assert (base(batch) - adapted(batch)).abs().max() < TOL


def test_gradient_checkpointing_same_values_and_grads(dirs):
    plain, ckpt = make(dirs), make(dirs, gradient_checkpointing=True)
    assert all(layer.gradient_checkpointing for layer in ckpt.model.language_model.layers)
    batch = plain.collate(mixed_groups()[:2])
    grads = last_token_grads((plain, ckpt), batch)
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-5), n


def test_collator_pickles_for_dataloader_workers(dirs):
    import pickle

    bb = make(dirs)
    collator = pickle.loads(pickle.dumps(bb.collator))  # small: tokenizer + image processor only
    groups = mixed_groups()
    a, b = collator(groups), bb.collate(groups)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_multi_turn_prompt_puts_the_image_in_the_first_user_turn(dirs):
    bb = make(dirs, key="qwen2.5-vl+template")
    history = (("user", "Look at this picture."), ("assistant", "I see it."))
    group = Group("What colour is it?", ("Red.", "Blue."), (solid_image(56, 56, 1),), history=history)
    batch = bb.collate([group])
    tok = bb.collator.tokenizer
    text = tok.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()])
    turns = text.split("<|im_start|>")[1:]
    assert [t.split("\n", 1)[0] for t in turns] == ["system", "user", "assistant", "user", "assistant"]
    assert turns[1].startswith("user\n<|vision_start|><|image_pad|>") and "Look at this picture." in turns[1]
    assert turns[3] == "user\nWhat colour is it?<|im_end|>\n" and turns[4] == "assistant\nRed.<|im_end|>"
    assert int((batch["input_ids"][0] == bb.image_token_id).sum()) == int(batch["image_grid_thw"].prod(-1).sum()) // 4
