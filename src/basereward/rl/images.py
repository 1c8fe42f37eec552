"""Images as RL frameworks hand them over, turned into what a reward source takes.

Frameworks pass a PIL image (TRL with a `datasets.Image` column), a file path, raw bytes, a
`{"bytes": ..., "path": ...}` dict (a `datasets.Image` column read without decoding, as verl's
parquet rows hold it) or a `data:image/...;base64,` URL. In-process sources get a PIL image or a
path (`to_model_image`); the HTTP client sends a data URL, or the path itself when the server is
to resolve it under its image root (`to_wire_image`). Decoding bytes applies the pair loader's
pixel limit and turns PIL's decompression-bomb warning into an error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
from typing import Any

from PIL import Image

from ..data.pairs import decode_image_bytes
from ..data.paths import open_regular
from ..errors import DataError

# Magic numbers of the formats sent inline as they are (anything else is re-encoded as PNG).
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
          (b"BM", "bmp"))


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _describe(image: Any) -> str:
    return type(image).__name__


def _dict_parts(image: dict) -> tuple[bytes | None, str | None]:
    data, path = image.get("bytes"), image.get("path")
    if data is None and not path:
        raise DataError("image dict has neither 'bytes' nor 'path'")
    return data, path


def decode_data_url(url: str) -> bytes:
    """The bytes of a base64 `data:` URL; DataError for anything else."""
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:image/") or not head.endswith(";base64"):
        raise DataError(f"image data URL must look like data:image/<format>;base64,... (got {head[:40]!r})")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise DataError("image data URL: invalid base64") from None


def to_model_image(image: Any) -> Image.Image | str:
    """A PIL image or a path, which the project's backbones open (paths through the safe opener)."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, os.PathLike):
        return os.fspath(image)
    if isinstance(image, str):
        if image.startswith("data:"):
            return decode_image_bytes(decode_data_url(image))
        if is_url(image):
            raise DataError(f"{image[:60]}: image URLs are not fetched in-process; pass a path or the image")
        return image
    if isinstance(image, (bytes, bytearray)):
        return decode_image_bytes(bytes(image))
    if isinstance(image, dict):
        data, path = _dict_parts(image)
        return decode_image_bytes(data, path or "image") if data is not None else str(path)
    raise DataError(f"unsupported image type {_describe(image)} (expected a PIL image, path, bytes or data URL)")


def _data_url(data: bytes, fmt: str) -> str:
    return f"data:image/{fmt};base64,{base64.b64encode(data).decode('ascii')}"


def _bytes_to_url(data: bytes, shown: str) -> str:
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return _data_url(data, fmt)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _data_url(data, "webp")
    return pil_to_data_url(decode_image_bytes(data, shown))


def pil_to_data_url(image: Image.Image) -> str:
    """A PIL image as a lossless PNG data URL."""
    buf = io.BytesIO()
    (image if image.mode in ("RGB", "RGBA", "L") else image.convert("RGB")).save(buf, format="PNG")
    return _data_url(buf.getvalue(), "png")


def _file_to_url(path: str) -> str:
    with open_regular(path) as fh:
        data = fh.read()
    return _bytes_to_url(data, path)


def to_wire_image(image: Any, inline_paths: bool = True) -> str:
    """The string the HTTP API takes for an image: a data URL, or a path / URL passed through.

    Paths are read and sent inline unless `inline_paths` is False (the server then resolves them
    under its `--image-root`).
    """
    if isinstance(image, Image.Image):
        return pil_to_data_url(image)
    if isinstance(image, os.PathLike):
        image = os.fspath(image)
    if isinstance(image, str):
        if image.startswith("data:") or is_url(image) or not inline_paths:
            return image
        return _file_to_url(image)
    if isinstance(image, (bytes, bytearray)):
        return _bytes_to_url(bytes(image), "image")
    if isinstance(image, dict):
        data, path = _dict_parts(image)
        return _bytes_to_url(data, path or "image") if data is not None else to_wire_image(str(path), inline_paths)
    raise DataError(f"unsupported image type {_describe(image)} (expected a PIL image, path, bytes or data URL)")


def image_key(image: Any) -> str:
    """A key equal for the same image: the path for a file, a content hash for pixels or bytes.

    Frameworks hand each sample its own copy of a prompt's image (a dataset row is decoded once per
    generation), so identity cannot tell which samples share an image; content can.
    """
    if isinstance(image, Image.Image):
        h = hashlib.blake2b(image.tobytes(), digest_size=16)
        h.update(f"{image.mode}{image.size}".encode())
        return "pixels:" + h.hexdigest()
    if isinstance(image, (str, os.PathLike)):
        text = os.fspath(image)
        return ("url:" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()) if text.startswith("data:") \
            else "path:" + text
    if isinstance(image, (bytes, bytearray)):
        return "bytes:" + hashlib.blake2b(bytes(image), digest_size=16).hexdigest()
    if isinstance(image, dict):
        data, path = _dict_parts(image)
        return image_key(data if data is not None else str(path))
    raise DataError(f"unsupported image type {_describe(image)} (expected a PIL image, path, bytes or data URL)")
