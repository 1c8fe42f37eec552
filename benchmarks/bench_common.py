"""What the performance benchmarks share: the machine's description, result files, the scaled-down
Qwen2.5-VL and the embedded mini-vl, and a timer.

The scaled-down Qwen2.5-VL is the real architecture (window-attention ViT, patch merger, M-RoPE
text model) with random weights and few, narrow layers, the real image processor (patch 14,
merge 2: a 448 x 448 image is 256 visual tokens) and a real tokenizer (SmolLM2's BPE, which the
embedded default already caches, plus the Qwen vision tokens). Timings on it are those of the
same code paths a 7B checkpoint takes, at a size a CPU finishes in minutes.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"
QWEN_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
# Text: 4 layers, hidden 384 (head_dim 64 -> 32 rotary frequencies split 8/12/12 like 7B's 16/24/24).
QWEN_TEXT = dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=6,
                 num_key_value_heads=2, max_position_embeddings=32768)
# Vision: 2 blocks, hidden 192: per image token the ViT costs ~0.37x the text model, the ratio of
# the 7B (a 32 x 1280 ViT on 4 patches per token beside a 28 x 3584 text model).
QWEN_VISION = dict(depth=2, hidden_size=192, intermediate_size=384, num_heads=3, patch_size=14,
                   spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1])


def machine() -> dict[str, Any]:
    """Where and under what load a benchmark ran (load averages from `uptime`)."""
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        uptime = ""
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "uptime": uptime,
            "device": "cpu"}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
    return info


def write_results(name: str, data: dict[str, Any], table: str) -> Path:
    """benchmarks/results/<name>/results.json and table.txt (plots: `try_plot` into the same folder)."""
    out = RESULTS / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "table.txt").write_text(table + "\n")
    return out


def try_plot(out: Path, series: dict[str, tuple[list[Any], list[float]]], xlabel: str, ylabel: str,
             title: str, *, file: str = "plot.png", bars: bool = False, log: str = "") -> Path | None:
    """One figure to out/`file`: a line per series (x, y), or grouped bars over the categories x
    (`bars`); `log` holds the axes to draw on a log scale ("x", "y", "xy"). None when matplotlib is
    not installed (the JSON and table are the record; the plot is a view of them)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4))
    if bars:
        cats = list(dict.fromkeys(c for x, _ in series.values() for c in x))
        width = 0.8 / max(1, len(series))
        for i, (label, (x, y)) in enumerate(series.items()):
            pos = [cats.index(c) + (i - (len(series) - 1) / 2) * width for c in x]
            ax.bar(pos, y, width=width, label=label)
        ax.set_xticks(range(len(cats)), cats)
    else:
        for label, (x, y) in series.items():
            ax.plot(x, y, marker="o", label=label)
    if "x" in log:
        ax.set_xscale("log")
    if "y" in log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / file
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The fastest of `repeats` runs (seconds) and the last run's result: the minimum is the
    least disturbed by other processes on a shared machine."""
    best, out = float("inf"), None
    for _ in range(max(1, repeats)):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def scaled_qwen25vl_dir(root: str | None = None, seed: int = 0) -> Path:
    """Save the scaled-down random Qwen2.5-VL (see the module docstring) and return its directory."""
    from transformers import (
        AutoTokenizer,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLImageProcessor,
    )

    from basereward.models.mini_vl.weights import smollm2_dir

    out = Path(root or tempfile.mkdtemp(prefix="bench-qwen25vl-")) / "scaled-qwen2.5-vl"
    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    tok.add_special_tokens({"additional_special_tokens": QWEN_TOKENS})
    tok.chat_template = None  # the backbones' ChatML layout with the Qwen image placeholder
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_TOKENS}
    text = dict(QWEN_TEXT, vocab_size=((len(tok) + 63) // 64) * 64, pad_token_id=tok.pad_token_id, bos_token_id=None,
                eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]})
    config = Qwen2_5_VLConfig(text_config=text, vision_config=dict(QWEN_VISION, out_hidden_size=text["hidden_size"]),
                              image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                              vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    Qwen2VLImageProcessor().save_pretrained(out)
    return out


def reward_model(name: str, path: str = "", share_prefix: bool = True, dtype: str = "float32", **backbone: Any):
    """An untrained float32 reward model (random head, fixed seed) on backbone `name`."""
    from basereward.config import (
        BackboneConfig,
        CausalLMConfig,
        HeadConfig,
        MiniVLConfig,
        ModelConfig,
        QwenVLConfig,
    )
    from basereward.models.reward_model import RewardModel

    section: dict[str, Any] = {}
    if name == "mini-vl":
        section["mini_vl"] = MiniVLConfig(share_prefix=share_prefix, lm_layers=backbone.pop("lm_layers", 8))
    elif name == "causal-lm":
        section["causal_lm"] = CausalLMConfig(share_prefix=share_prefix)
    else:
        section["qwen_vl"] = QwenVLConfig(share_prefix=share_prefix)
    cfg = BackboneConfig(name=name, path=path, dtype=dtype, attn_implementation="sdpa", **section, **backbone)
    torch.manual_seed(0)
    return RewardModel(ModelConfig(backbone=cfg, head=HeadConfig(zero_init_last=False))).eval()


def noise_image(size: int, seed: int):
    """A deterministic random-noise RGB image of size x size pixels."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8), "RGB")


def words(n: int, seed: int) -> str:
    """n plain English-ish words (about one token each for a BPE tokenizer)."""
    vocab = ["the", "a", "red", "blue", "square", "circle", "left", "right", "above", "below", "picture", "shows", "there", "is", "one", "two", "three", "and", "of", "in", "on", "with", "answer", "because", "count", "colour", "shape", "small", "large", "near", "far"]
    return " ".join(vocab[(seed * 7 + i * 13) % len(vocab)] for i in range(n))
