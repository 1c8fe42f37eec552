"""The reward server's FastAPI app: our API, OpenRLHF's `/get_reward`, vLLM's `/classify`.

`create_app(source, options)` serves any `RewardSource` (a Scorer, an ensemble, a router): every
endpoint turns its body into items, the micro-batcher scores them together with other requests'
items, and the answer is assembled from the per-item rewards. Every refusal is one 4xx with
`{"detail": "<one line>"}`; 503 when the queue is full or the server is stopping; 504 after the
per-request timeout.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import os
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..scoring import RewardSource
from .batcher import Item, MicroBatcher, Overloaded, ScoringFailed, ShuttingDown
from .images import ImagePolicy, ImageResolver
from .limits import BodyLimit
from .protocols import PromptMap, split_conversation, split_query
from .schemas import (
    ClassificationData,
    ClassificationResponse,
    ClassifyRequest,
    CompareRequest,
    CompareResponse,
    OpenRLHFRequest,
    OpenRLHFResponse,
    RankRequest,
    RankResponse,
    RequestError,
    ScoreRequest,
    ScoreResponse,
)


@dataclass
class ServeOptions:
    """How the server batches, limits and protects itself (the `serve` command's options)."""

    model_name: str = "model"
    model_info: dict[str, Any] = field(default_factory=dict)
    images: ImagePolicy = field(default_factory=ImagePolicy)
    prompt_map: PromptMap | None = None
    max_batch: int = 32
    max_wait_ms: float = 5.0
    queue_size: int = 1024
    timeout_s: float = 120.0
    token: str | None = None
    max_body_bytes: int = 32 * 1024 * 1024


@dataclass
class Sample:
    """One response to score as an endpoint read it; `where` names it in error messages."""

    prompt: str
    response: str
    where: str  # "items[3]"; "" when the body's images are top-level (rank, compare)
    images: list[str] = field(default_factory=list)  # strings from the request
    map_images: tuple[str, ...] = ()  # real paths from the prompt map


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def create_app(source: RewardSource, options: ServeOptions) -> FastAPI:
    batcher = MicroBatcher(source, options.max_batch, options.max_wait_ms, options.queue_size)
    resolver = ImageResolver(options.images)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            # Runs after the HTTP server stopped accepting and its open requests finished.
            await batcher.stop()
            resolver.close()

    app = FastAPI(title="basereward reward server", version="1", lifespan=lifespan,
                  description="Rewards from a basereward model or ensemble, batched across requests.")
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, max_bytes=options.max_body_bytes)

    def require_token(request: Request) -> None:
        if options.token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), options.token.encode()):
            raise RequestError(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')")

    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return JSONResponse({"detail": f"{loc}: {first.get('msg', 'invalid')}{more}"}, status_code=422)

    @app.exception_handler(Exception)
    async def _failed(request: Request, exc: Exception) -> JSONResponse:
        line = (str(exc).strip().splitlines() or [""])[0]
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {line}"}, status_code=500)

    async def rewards_for(samples: list[Sample]) -> list[float]:
        """Per-sample rewards, scored together with other requests' samples."""
        if len(samples) > options.queue_size:
            raise RequestError(413, f"{len(samples)} items in one request; this server accepts at most "
                                    f"{options.queue_size} (--queue-size)")
        items = await run_in_threadpool(lambda: [_item(s) for s in samples])
        try:
            futures = batcher.submit(items)
        except Overloaded:
            raise RequestError(503, f"the queue is full ({batcher.pending} items waiting, limit "
                                    f"{options.queue_size}); retry later") from None
        except ShuttingDown:
            raise RequestError(503, "the server is shutting down") from None
        try:
            return list(await asyncio.wait_for(asyncio.gather(*futures), options.timeout_s))
        except TimeoutError:
            raise RequestError(504, f"not scored within {options.timeout_s:g} s (--timeout)") from None
        except ScoringFailed as exc:
            raise RequestError(422 if exc.user_error else 500, str(exc)) from None

    def _item(s: Sample) -> Item:
        if s.map_images:  # from the operator's prompt map: checked (and confined) when it was loaded
            pairs = [resolver.open_known(p, os.path.basename(p), f"{s.where}: prompt-map images[{i}]")
                     for i, p in enumerate(s.map_images)]
            keys, images = tuple(k for k, _ in pairs), tuple(im for _, im in pairs)
        else:
            keys, images = resolver.resolve_all(s.images, s.where)
        return Item(prompt=s.prompt, images=images, response=s.response, key=(s.prompt, keys))

    def from_text(i: int, where: str, split, inline: list[str] | None) -> Sample:
        """A text-protocol sample: prompt and response split from the text, images inline or from
        the prompt map; `split()` gives the TextSample."""
        try:
            text = split()
            if inline:
                return Sample(text.prompt, text.response, f"{where}[{i}]", images=inline)
            hit = options.prompt_map.lookup(text.prompt) if options.prompt_map is not None else None
        except RequestError as exc:
            raise RequestError(exc.status, f"{where}[{i}]: {exc.detail}") from None
        if hit is not None:
            return Sample(hit[0], text.response, f"{where}[{i}]", map_images=hit[1])
        if text.placeholders:
            raise RequestError(422, f"{where}[{i}]: the prompt shows {text.placeholders} image placeholder(s) "
                                    "but no image was found for it (not in the --prompt-images map, none inline)")
        return Sample(text.prompt, text.response, f"{where}[{i}]")

    auth = [Depends(require_token)]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        s = batcher.stats
        return {"status": "ok", "model": options.model_name, "queued": batcher.pending,
                "queue_size": options.queue_size, "max_batch": options.max_batch,
                "batches": s.batches, "sequences": s.sequences, "largest_batch": s.largest,
                "scoring_seconds": round(s.score_seconds, 3)}

    @app.get("/v1/model", dependencies=auth)
    async def model_info() -> dict[str, Any]:
        return {"name": options.model_name, **options.model_info}

    @app.post("/v1/score", response_model=ScoreResponse, dependencies=auth)
    async def score(body: ScoreRequest) -> ScoreResponse:
        rewards = await rewards_for([Sample(it.prompt, it.response, f"items[{i}]", images=it.images)
                                     for i, it in enumerate(body.items)])
        return ScoreResponse(rewards=rewards, model=options.model_name)

    @app.post("/v1/rank", response_model=RankResponse, dependencies=auth)
    async def rank(body: RankRequest) -> RankResponse:
        rewards = await rewards_for([Sample(body.prompt, r, "", images=body.images) for r in body.responses])
        order = sorted(range(len(rewards)), key=lambda i: -rewards[i])
        return RankResponse(rewards=rewards, order=order, model=options.model_name)

    @app.post("/v1/compare", response_model=CompareResponse, dependencies=auth)
    async def compare(body: CompareRequest) -> CompareResponse:
        ra, rb = await rewards_for([Sample(body.prompt, body.response_a, "", images=body.images),
                                    Sample(body.prompt, body.response_b, "", images=body.images)])
        margin = ra - rb
        return CompareResponse(better="a" if margin >= 0 else "b", rewards=[ra, rb], margin=margin,
                               probability=_sigmoid(margin), model=options.model_name)

    @app.post("/get_reward", response_model=OpenRLHFResponse, dependencies=auth)
    async def get_reward(body: OpenRLHFRequest) -> OpenRLHFResponse:
        n = len(body.query)
        for name, value in (("prompts", body.prompts), ("images", body.images)):
            if value is not None and len(value) != n:
                raise RequestError(422, f"{name}: {len(value)} entries for {n} queries")
        prompts = body.prompts if body.prompts is not None else [None] * n
        samples = [from_text(i, "query", lambda q=q, p=prompts[i]: split_query(q, p),
                             body.images[i] if body.images is not None else None)
                   for i, q in enumerate(body.query)]
        rewards = await rewards_for(samples)
        return OpenRLHFResponse(rewards=rewards, scores=rewards, extra_logs={"reward_model": rewards})

    @app.post("/classify", response_model=ClassificationResponse, dependencies=auth)
    async def classify(body: ClassifyRequest) -> ClassificationResponse:
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise RequestError(422, "input: at least one text is required")
        images: list[list[str] | None] = [None] * len(texts)
        if body.images is not None:
            if all(isinstance(x, str) for x in body.images):
                if len(texts) != 1:
                    raise RequestError(422, "images: give one image list per input when input is a list")
                images = [list(body.images)]  # type: ignore[list-item]
            elif len(body.images) != len(texts):
                raise RequestError(422, f"images: {len(body.images)} image lists for {len(texts)} inputs")
            else:
                images = [list(x) for x in body.images]  # type: ignore[arg-type]
        samples = [from_text(i, "input", lambda t=t: split_conversation(t), images[i]) for i, t in enumerate(texts)]
        rewards = await rewards_for(samples)
        act = body.activated()
        data = [ClassificationData(index=i, label="reward", probs=[_sigmoid(r) if act else r], num_classes=1)
                for i, r in enumerate(rewards)]
        return ClassificationResponse(id=f"classify-{uuid.uuid4().hex}", created=int(time.time()),
                                      model=body.model or options.model_name, data=data)

    return app
