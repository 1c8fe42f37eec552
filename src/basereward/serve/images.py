"""Images named in requests: inline base64, a path under the operator's root, or (if allowed) a URL.

Every image is decoded by the data loader's safe opener (`open_image`: pixel limit, decompression
bomb, truncation, RGB conversion) before its request is queued, so a bad image is the sender's
4xx and never fails a batch shared with other requests; and a base64 image gives exactly the
pixels the same file would give by path. Paths go through `resolve_image_path`: with no root
configured they are refused, with one they must resolve (symlinks followed) inside it.

Decoded images are kept in a small LRU cache keyed by content (base64, URL) or by real path,
size and mtime (paths): OpenRLHF sends one sample per request, so one prompt's image arrives
many times in a row.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..data.pairs import decode_image_bytes, open_image
from ..data.paths import resolve_image_path
from ..errors import DataError
from .schemas import RequestError

_DATA_URL = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,", re.ASCII)
# Decoded RGB pixels the cache may hold in all (3 bytes each: ~200 MB).
CACHE_PIXELS = 64 * 1024 * 1024


@dataclass(frozen=True)
class ImagePolicy:
    """What the operator allows: the root for paths (None: paths refused), URL fetching, sizes."""

    root: str | None = None
    allow_urls: bool = False
    max_image_bytes: int = 20 * 1024 * 1024
    max_images_per_item: int = 16
    url_timeout_s: float = 10.0


class ImageResolver:
    """Turns an image string into (key, PIL image); raises RequestError with a 4xx status."""

    def __init__(self, policy: ImagePolicy) -> None:
        self.policy = policy
        self._root = os.path.realpath(policy.root) if policy.root else None
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._cached_pixels = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
            self._cached_pixels = 0

    def resolve_all(self, specs: list[str], where: str) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        """(keys, images) of one item's image strings; `where` names the item in errors ("" for
        a body whose `images` field is top-level)."""
        prefix = f"{where}." if where else ""
        if len(specs) > self.policy.max_images_per_item:
            raise RequestError(413, f"{prefix}images: {len(specs)} images, the server accepts at most "
                                    f"{self.policy.max_images_per_item} per item")
        pairs = [self.resolve(s, f"{prefix}images[{i}]") for i, s in enumerate(specs)]
        return tuple(k for k, _ in pairs), tuple(im for _, im in pairs)

    def resolve(self, spec: str, where: str) -> tuple[str, Any]:
        if not isinstance(spec, str) or not spec:
            raise RequestError(400, f"{where}: an image must be a non-empty string")
        if spec.startswith("data:"):
            return self._inline(spec, where)
        if spec.startswith(("http://", "https://")):
            return self._url(spec, where)
        if "://" in spec:
            raise RequestError(400, f"{where}: unsupported image scheme {spec.split('://', 1)[0]!r} "
                                    "(use data:image/...;base64, a path under the image root, or http(s))")
        return self.resolve_path(spec, where)

    def resolve_path(self, name: str, where: str) -> tuple[str, Any]:
        """An image file under the root (`name` relative to it, or absolute inside it)."""
        if self._root is None:
            raise RequestError(403, f"{where}: image paths are refused (the server has no --image-root); "
                                    "send the image inline as data:image/<format>;base64,...")
        try:
            real = resolve_image_path(name, root=self._root)
        except DataError as exc:
            raise RequestError(403 if "outside the image root" in str(exc) else 400, f"{where}: {exc}") from None
        return self.open_known(real, name, where)

    def open_known(self, real: str, shown: str, where: str) -> tuple[str, Any]:
        """An image file the operator named (the prompt map, checked at load) or `resolve_path` confined."""
        try:
            st = os.stat(real)
        except OSError:
            raise RequestError(400, f"{where}: {shown}: image not found") from None
        key = ("path", real, st.st_size, st.st_mtime_ns)
        return f"file:{real}", self._cached(key, lambda: self._open_file(real, shown, where))

    def _inline(self, spec: str, where: str) -> tuple[str, Any]:
        head = _DATA_URL.match(spec)
        if head is None:
            raise RequestError(400, f"{where}: an inline image must look like data:image/<format>;base64,<data>")
        payload = spec[head.end():]
        if len(payload) * 3 // 4 > self.policy.max_image_bytes:
            raise RequestError(413, f"{where}: inline image larger than {self.policy.max_image_bytes} bytes")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, f"{where}: invalid base64 image data") from None
        return self._from_bytes(data, where)

    def _url(self, url: str, where: str) -> tuple[str, Any]:
        if not self.policy.allow_urls:
            raise RequestError(403, f"{where}: image URLs are refused (start the server with --allow-urls "
                                    "to fetch them); send the image inline as data:image/<format>;base64,...")
        import httpx

        limit = self.policy.max_image_bytes
        try:
            # No redirects: an allowed URL must not bounce the server to another host.
            with httpx.stream("GET", url, timeout=self.policy.url_timeout_s, follow_redirects=False) as resp:
                if resp.status_code != 200:
                    raise RequestError(400, f"{where}: fetching {url} answered HTTP {resp.status_code}")
                chunks, size = [], 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise RequestError(413, f"{where}: {url} is larger than {limit} bytes")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise RequestError(400, f"{where}: cannot fetch {url} ({type(exc).__name__})") from None
        return self._from_bytes(b"".join(chunks), where)

    def _from_bytes(self, data: bytes, where: str) -> tuple[str, Any]:
        digest = hashlib.sha256(data).hexdigest()

        def decode() -> Any:
            try:
                return decode_image_bytes(data, "inline image")
            except DataError as exc:
                status = 413 if "decompression bomb" in str(exc) else 400
                raise RequestError(status, f"{where}: {exc}") from None

        return f"sha256:{digest}", self._cached(("bytes", digest), decode)

    @staticmethod
    def _open_file(path: str, shown: str, where: str) -> Any:
        try:
            return open_image(path)
        except DataError as exc:
            detail = str(exc)
            detail = detail[len(path) + 2:] if detail.startswith(path + ": ") else detail
            status = 413 if "decompression bomb" in detail else 400
            raise RequestError(status, f"{where}: {shown}: {detail}") from None

    def _cached(self, key: tuple, load) -> Any:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        image = load()
        pixels = image.width * image.height
        with self._lock:
            if key not in self._cache and pixels <= CACHE_PIXELS:
                self._cache[key] = image
                self._cached_pixels += pixels
                while self._cached_pixels > CACHE_PIXELS:
                    _, old = self._cache.popitem(last=False)
                    self._cached_pixels -= old.width * old.height
        return image
