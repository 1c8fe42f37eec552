"""One reward client, two transports: a model loaded in this process, or reward servers over HTTP.

Both are `RewardSource`s (`score_groups(groups) -> rewards`) and take the same image forms (PIL
images, paths, bytes, `datasets.Image` dicts, data URLs), so the RL adapters never know which
one they hold. `open_reward_source(target)` picks: a model or ensemble directory is loaded with
`load_scorer`; `http(s)://` URLs (a list, or comma-separated) become an `HttpRewardSource`.

The HTTP client speaks the server's `POST /v1/score`: requests of at most `batch_size` items,
a prompt's responses kept in one request where they fit (the server encodes its image once),
requests spread round-robin over the URLs and sent concurrently, each with a timeout, retried on
connection errors, timeouts, 429 and 5xx (503 = queue full) on the next URL with backoff. Any
other 4xx is the caller's mistake and fails at once with the server's one-line message.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..data.schema import Group
from ..errors import BaseRewardError
from ..scoring.interface import (
    RewardSource,
    ScoringMixin,
    check_scores,
    scores_with_uncertainty,
)
from .images import to_model_image, to_wire_image

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class RewardServerError(BaseRewardError):
    """A reward server refused a request, answered nonsense, or could not be reached."""


class LocalRewardSource(ScoringMixin):
    """An in-process source (a `Scorer`, ensemble, ...) that also takes bytes, dicts and data URLs."""

    def __init__(self, source: RewardSource, name: str = ""):
        self.source = source
        self.name = name or getattr(source, "name", "") or type(source).__name__

    def _groups(self, groups: Sequence[Group]) -> list[Group]:
        return [Group(g.prompt, tuple(g.responses), tuple(to_model_image(im) for im in g.images)) for g in groups]

    def score_groups(self, groups: Sequence[Group]) -> list[list[float]]:
        return self.source.score_groups(self._groups(groups))

    def score_groups_with_uncertainty(self, groups: Sequence[Group]) -> tuple[list[list[float]], list[list[float]]]:
        return scores_with_uncertainty(self.source, self._groups(groups))


def split_urls(urls: str | Sequence[str]) -> list[str]:
    """URLs from a list or a comma-separated string, trailing slashes dropped."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    return [u.strip().rstrip("/") for u in items if u.strip()]


def is_server_target(target: Any) -> bool:
    """Whether `target` names reward servers (http/https URLs) rather than a model directory."""
    if isinstance(target, str) or (isinstance(target, (list, tuple)) and all(isinstance(u, str) for u in target)):
        urls = split_urls(target)
        return bool(urls) and all(u.startswith(("http://", "https://")) for u in urls)
    return False


class HttpRewardSource(ScoringMixin):
    """Rewards from one or more basereward servers (`POST /v1/score`)."""

    def __init__(self, urls: str | Sequence[str], *, token: str | None = None, batch_size: int = 64,
                 timeout: float = 180.0, retries: int = 5, backoff: float = 0.5, concurrency: int | None = None,
                 inline_paths: bool = True, transport: Any = None):
        try:
            import httpx
        except ImportError:  # pragma: no cover - httpx is a dependency of the server extra
            raise BaseRewardError("the HTTP reward client needs httpx (pip install httpx)") from None
        self.urls = split_urls(urls)
        bad = [u for u in self.urls if not u.startswith(("http://", "https://"))]
        if not self.urls or bad:
            raise BaseRewardError(f"reward server URLs must start with http:// or https:// (got {bad or urls!r})")
        if batch_size < 1 or retries < 0 or not timeout > 0:
            raise BaseRewardError(f"batch_size >= 1, retries >= 0 and timeout > 0 required "
                                  f"(got {batch_size}, {retries}, {timeout})")
        self.batch_size, self.retries, self.backoff = batch_size, retries, backoff
        self.inline_paths = inline_paths
        self.concurrency = concurrency or 2 * len(self.urls)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(timeout=timeout, headers=headers, transport=transport)
        self._httpx = httpx
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self.name = ",".join(self.urls)

    # ------------------------------------------------------------------ transport

    def _next_url(self) -> str:
        with self._lock:
            return self.urls[next(self._turn) % len(self.urls)]

    def request(self, method: str, path: str, payload: Any = None) -> Any:
        """JSON answer of `method path` on the next server, retried on transient failures."""
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), 10.0))
            url = self._next_url() + path
            try:
                resp = self._http.request(method, url, json=payload)
            except self._httpx.TransportError as exc:  # refused, reset, timed out, ...
                last = f"{url}: {type(exc).__name__}{': ' + str(exc) if str(exc) else ''}"
                continue
            if resp.status_code in RETRY_STATUS:
                last = f"{url}: {resp.status_code} {_detail(resp)}"
                continue
            if resp.status_code >= 400:
                raise RewardServerError(f"reward server {url}: {resp.status_code} {_detail(resp)}")
            try:
                return resp.json()
            except ValueError:
                raise RewardServerError(f"reward server {url}: answer is not JSON") from None
        raise RewardServerError(f"reward server: no answer after {self.retries + 1} tries (last: {last})")

    def health(self) -> Any:
        return self.request("GET", "/health")

    def model_info(self) -> Any:
        return self.request("GET", "/v1/model")

    def score_items(self, items: list[dict[str, Any]]) -> list[float]:
        """Rewards of `/v1/score` items (`{"prompt", "images": [str], "response"}`) from one request."""
        answer = self.request("POST", "/v1/score", {"items": items})
        rewards = answer.get("rewards") if isinstance(answer, dict) else None
        if not isinstance(rewards, list) or len(rewards) != len(items):
            got = len(rewards) if isinstance(rewards, list) else type(rewards).__name__
            raise RewardServerError(f"reward server answered {got} rewards for {len(items)} items")
        if not all(isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) for r in rewards):
            raise RewardServerError("reward server answered a reward that is not a finite number")
        return [float(r) for r in rewards]

    # ------------------------------------------------------------------ RewardSource

    def score_groups(self, groups: Sequence[Group]) -> list[list[float]]:
        items: list[dict[str, Any]] = []
        for g in groups:
            images = [to_wire_image(im, self.inline_paths) for im in g.images]  # once per group
            items.extend({"prompt": g.prompt, "images": images, "response": r} for r in g.responses)
        chunks = _chunks([len(g.responses) for g in groups], self.batch_size)
        if len(chunks) <= 1:
            flat = [r for a, b in chunks for r in self.score_items(items[a:b])]
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(chunks))) as pool:
                parts = list(pool.map(lambda ab: self.score_items(items[ab[0]:ab[1]]), chunks))
            flat = [r for part in parts for r in part]
        out, pos = [], 0
        for g in groups:
            out.append(flat[pos:pos + len(g.responses)])
            pos += len(g.responses)
        check_scores(groups, out, self.name)
        return out

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "HttpRewardSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _detail(resp: Any) -> str:
    """The server's one-line message (`{"detail": ...}`), else the first line of the body."""
    try:
        body = resp.json()
    except ValueError:
        text = (resp.text or "").strip()
        return text.splitlines()[0][:200] if text else resp.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return " ".join(str(detail).split())[:300]


def _chunks(sizes: Sequence[int], batch_size: int) -> list[tuple[int, int]]:
    """Item ranges [a, b) of at most batch_size items; a group is split only when larger than that."""
    chunks: list[tuple[int, int]] = []
    start = pos = 0
    for n in sizes:
        if pos > start and pos - start + n > batch_size:
            chunks.append((start, pos))
            start = pos
        pos += n
        while pos - start > batch_size:  # a group larger than a request: cut it
            chunks.append((start, start + batch_size))
            start += batch_size
    if pos > start:
        chunks.append((start, pos))
    return chunks


def open_reward_source(target: Any, *, batch_size: int | None = None, device: str | None = None,
                       token: str | None = None, timeout: float = 180.0, retries: int = 5,
                       **http_kwargs: Any) -> RewardSource:
    """A reward source for `target`: an existing source (wrapped to take every image form), a
    model or ensemble directory (loaded here), or reward server URL(s).

    `batch_size`: sequences per forward pass in-process (default 16), items per request over
    HTTP (default 64)."""
    if isinstance(target, (HttpRewardSource, LocalRewardSource)):
        return target
    if hasattr(target, "score_groups"):
        return LocalRewardSource(target)
    if is_server_target(target):
        return HttpRewardSource(target, token=token, timeout=timeout, retries=retries,
                                batch_size=batch_size or 64, **http_kwargs)
    if isinstance(target, (str, os.PathLike)):
        path = Path(target)
        if not path.is_dir():
            raise BaseRewardError(f"{target}: not a model directory or an http(s):// reward server URL")
        from ..load import load_scorer

        return LocalRewardSource(load_scorer(path, batch_size=batch_size or 16, device=device), name=path.name)
    raise BaseRewardError(f"cannot make a reward source from {type(target).__name__}")
