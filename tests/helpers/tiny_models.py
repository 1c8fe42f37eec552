"""Tiny randomly-initialised checkpoints saved to a local directory, built offline.

Each builder writes what a user's checkpoint directory holds (config, safetensors weights,
tokenizer or processor files), so backbones load it with `from_pretrained(path)`, exactly the
real code path. The tokenizer is a real fast byte-level BPE trained in memory on a few sentences,
with the Qwen special tokens; the model config's token ids are read from it so they always agree.

Sizes are chosen for speed on CPU (a few ms per forward) while keeping every structural feature
the backbones rely on: M-RoPE with a non-trivial `mrope_section`, Qwen2.5-VL window attention
plus one full-attention block, spatial merge 2, grouped-query attention in the text model.
"""

from __future__ import annotations

from pathlib import Path

import torch

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Describe the image in detail. What colour is the square?",
    "A red square on a blue background, next to a green circle.",
    "The answer is 42 because six times seven is forty two.",
    "user assistant system You are a helpful assistant.",
    "Which response is better? The first one is correct, the second is wrong.",
    "There are three cats and two dogs in the picture.",
]

# Qwen2-VL's chat template, reduced to images and text (no video, no vision ids): a default
# system turn when none is given, one `<|vision_start|><|image_pad|><|vision_end|>` per image.
QWEN_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Plain ChatML (what Qwen2/Qwen3 text models use without the thinking parts).
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer(vocab_size: int = 400, pad_token: str | None = "<|endoftext|>"):
    """A fast byte-level BPE tokenizer with the Qwen special tokens (any text tokenizes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token=pad_token,
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )


def _vocab_size(tokenizer) -> int:
    # Round up so the embedding has a few spare rows, like real checkpoints.
    return ((len(tokenizer) + 63) // 64) * 64


def _text_kwargs(tokenizer, hidden: int, layers: int, heads: int, kv_heads: int) -> dict:
    return dict(
        vocab_size=_vocab_size(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )


def _token_ids(tokenizer) -> dict:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    return dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def _save_vl(model, tokenizer, processor_cls, out: Path, chat_template: bool) -> Path:
    from transformers import Qwen2VLImageProcessor

    # The real image processor (PIL backend when torchvision is absent); default patch 14, merge 2.
    image_processor = Qwen2VLImageProcessor()
    template = QWEN_VL_CHAT_TEMPLATE if chat_template else None
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    try:
        processor = processor_cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)
    except (AttributeError, ImportError, TypeError, ValueError):
        # transformers 5.x cannot build a Qwen-VL processor without torchvision (its video-processor
        # class lookup fails). Save the parts instead: that is the layout of the hub checkpoints
        # (preprocessor_config.json + tokenizer files + chat template), which backbones load part by part.
        tokenizer.chat_template = template
        tokenizer.save_pretrained(out)
        image_processor.save_pretrained(out)
    else:
        processor.save_pretrained(out)
    return out


def tiny_qwen25vl_dir(tmp_path, name: str = "tiny-qwen2.5-vl", chat_template: bool = False, seed: int = 0) -> Path:
    """Save a tiny random Qwen2.5-VL (ForConditionalGeneration) + processor under tmp_path/name."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
    )

    tokenizer = tiny_tokenizer()
    hidden = 64
    text = _text_kwargs(tokenizer, hidden=hidden, layers=2, heads=4, kv_heads=2)
    # head_dim = 64 / 4 = 16 -> 8 rotary frequencies split over (temporal, height, width).
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=hidden,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=56,  # 2x2 merged tokens per window: images above 56 px use >1 window
        fullatt_block_indexes=[1],
    )
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **_token_ids(tokenizer))
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    return _save_vl(model, tokenizer, Qwen2_5_VLProcessor, Path(tmp_path) / name, chat_template)


def tiny_qwen2vl_dir(tmp_path, name: str = "tiny-qwen2-vl", chat_template: bool = False, seed: int = 0) -> Path:
    """Save a tiny random Qwen2-VL (ForConditionalGeneration) + processor under tmp_path/name."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLProcessor,
    )

    tokenizer = tiny_tokenizer()
    hidden = 64
    text = _text_kwargs(tokenizer, hidden=hidden, layers=2, heads=4, kv_heads=2)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    # Qwen2-VL's vision config: `embed_dim` is the ViT width, `hidden_size` the merger's output.
    vision = dict(
        depth=2,
        embed_dim=32,
        hidden_size=hidden,
        mlp_ratio=2,
        num_heads=2,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    config = Qwen2VLConfig(text_config=text, vision_config=vision, **_token_ids(tokenizer))
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    return _save_vl(model, tokenizer, Qwen2VLProcessor, Path(tmp_path) / name, chat_template)


def tiny_causal_lm_dir(
    tmp_path,
    name: str = "tiny-causal-lm",
    arch: str = "qwen2",
    chat_template: bool = True,
    pad_token: bool = True,
    seed: int = 0,
) -> Path:
    """Save a tiny random text-only causal LM (`qwen2` or `llama`) + tokenizer under tmp_path/name.

    `chat_template=False` leaves the tokenizer without a template; `pad_token=False` without a pad
    token (as many base-model tokenizers ship).
    """
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    tokenizer = tiny_tokenizer(pad_token="<|endoftext|>" if pad_token else None)
    if chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    kwargs = _text_kwargs(tokenizer, hidden=64, layers=2, heads=4, kv_heads=2)
    torch.manual_seed(seed)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**kwargs))
    elif arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**kwargs))
    else:
        raise ValueError(f"arch must be 'qwen2' or 'llama', got {arch!r}")
    out = Path(tmp_path) / name
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def solid_image(width: int, height: int, seed: int = 0):
    """A deterministic random-noise RGB PIL image (noise so that patches differ)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8), "RGB")


def last_token_grads(backbones, batch) -> list[dict]:
    """Per backbone: the gradients of sum(h_last^2) w.r.t. its parameters (for equivalence tests)."""
    from basereward.models.backbone import last_token_index

    grads = []
    for bb in backbones:
        bb.train()
        h = bb(batch)  # aligned with the backbone's pool mask (responses only when sharing a prefix)
        h[torch.arange(h.shape[0]), last_token_index(bb.pool_mask(batch))].pow(2).sum().backward()
        grads.append({n: p.grad for n, p in bb.named_parameters() if p.grad is not None})
    return grads


def mixed_groups():
    """Three groups that exercise every layout: 3 responses + 1 image, 2 responses + 2 images of
    different sizes, 1 response without an image."""
    from basereward.data.schema import Group

    return [
        Group("What colour is the square?", ("It is red.", "The square in the picture is blue, I think.", "Green"),
              (solid_image(64, 48, 1),)),
        Group("Compare both pictures.", ("The first one is brighter.", "Same."), (solid_image(50, 50, 2), solid_image(80, 40, 3))),
        Group("Tell me a joke about cats.", ("Why did the cat sit on the computer? To keep an eye on the mouse.",)),
    ]


def tiny_reward_model_dir(out: Path, backbone_dir: Path, arch: str = "qwen2.5-vl", seed: int = 0) -> Path:
    """A saved (untrained, float32) reward model on a tiny backbone: a model directory to load,
    serve or score. The head's last layer is random (not zero), so rewards differ per input."""
    from basereward.config import load_config
    from basereward.models.reward_model import RewardModel

    cfg = load_config(None, [f"model.backbone.name={arch}", f"model.backbone.path={backbone_dir}",
                             "model.backbone.dtype=float32", "model.head.zero_init_last=false"])
    torch.manual_seed(seed)
    return RewardModel(cfg.model).save_pretrained(out)
