"""The HTTP reward client against in-memory stand-ins (httpx.MockTransport) and a real loopback socket:
batching that keeps groups whole, round-robin over URLs, retries, timeouts, one-line errors, images."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image

from basereward.data.schema import Group
from basereward.errors import BaseRewardError
from basereward.rl.client import (
    HttpRewardSource,
    LocalRewardSource,
    RewardServerError,
    _chunks,
    open_reward_source,
)


def item_reward(item) -> float:
    """The stand-in server's reward: a function of the item alone."""
    return len(item["response"]) + 100.0 * len(item["images"]) + 0.5 * len(item["prompt"])


class StandIn:
    """Answers /v1/score like the contract; records every request; can fail the first calls."""

    def __init__(self, fail=()):
        self.requests: list[tuple[str, list]] = []
        self.fail = list(fail)  # per call: an httpx.Response, an exception, or None (answer)
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            action = self.fail.pop(0) if self.fail else None
            body = json.loads(request.content) if request.content else {}
            self.requests.append((str(request.url), body.get("items", []), request.headers.get("authorization")))
        if isinstance(action, Exception):
            raise action
        if isinstance(action, httpx.Response):
            return action
        return httpx.Response(200, json={"rewards": [item_reward(i) for i in body["items"]], "model": "stand-in"})


def client(handler, urls=("http://a",), **kw):
    kw.setdefault("backoff", 0.0)
    return HttpRewardSource(list(urls), transport=httpx.MockTransport(handler), **kw)


GROUPS = [Group("p1", ("a", "bb", "ccc")), Group("p22", ("d", "e")), Group("p333", ("f", "g", "h", "i"))]


def expected(groups):
    return [[item_reward({"prompt": g.prompt, "images": list(g.images), "response": r}) for r in g.responses]
            for g in groups]


def test_chunks_keep_groups_whole_and_cut_only_oversized_ones():
    assert _chunks([3, 2, 4], 5) == [(0, 5), (5, 9)]
    assert _chunks([3, 2, 4], 100) == [(0, 9)]
    assert _chunks([7], 3) == [(0, 3), (3, 6), (6, 7)]
    assert _chunks([1, 7, 1], 3) == [(0, 1), (1, 4), (4, 7), (7, 9)]  # the tail of the cut group shares
    assert _chunks([], 4) == []


def test_batches_requests_and_reassembles_rewards_in_group_order():
    server = StandIn()
    src = client(server, batch_size=5)
    assert src.score_groups(GROUPS) == expected(GROUPS)
    assert sorted(len(items) for _, items, _ in server.requests) == [4, 5]
    assert src.score_groups([]) == []
    assert src.score_responses("p1", [], ["x", "yy"]) == expected([Group("p1", ("x", "yy"))])[0]


def test_round_robin_over_urls_and_bearer_token():
    server = StandIn()
    src = client(server, urls=["http://a/", "http://b", "http://c"], batch_size=1, token="s3cret")
    groups = [Group(f"p{i}", ("x",)) for i in range(6)]
    assert src.score_groups(groups) == expected(groups)
    hosts = Counter(httpx.URL(url).host for url, _, _ in server.requests)
    assert hosts == {"a": 2, "b": 2, "c": 2}
    assert {url for url, _, _ in server.requests} == {"http://a/v1/score", "http://b/v1/score", "http://c/v1/score"}
    assert {auth for _, _, auth in server.requests} == {"Bearer s3cret"}


def test_transient_failures_are_retried_on_the_next_url():
    server = StandIn(fail=[httpx.Response(503, json={"detail": "queue full"}),
                           httpx.ConnectError("connection refused"), None])
    src = client(server, urls=["http://a", "http://b"], retries=2)
    assert src.score_groups(GROUPS[:1]) == expected(GROUPS[:1])
    assert [httpx.URL(u).host for u, _, _ in server.requests] == ["a", "b", "a"]


def test_gives_up_after_the_retries_with_the_last_reason():
    server = StandIn(fail=[httpx.Response(503, json={"detail": "queue full"})] * 3)
    with pytest.raises(RewardServerError) as err:
        client(server, urls=["http://a", "http://b"], retries=2).score_groups(GROUPS[:1])
    assert str(err.value) == "reward server: no answer after 3 tries (last: http://a/v1/score: 503 queue full)"
    assert len(server.requests) == 3


def test_a_client_error_fails_at_once_with_the_servers_message():
    server = StandIn(fail=[httpx.Response(400, json={"detail": "item 0: image path refused (no --image-root)"})])
    with pytest.raises(RewardServerError) as err:
        client(server, retries=5).score_groups(GROUPS[:1])
    assert str(err.value) == "reward server http://a/v1/score: 400 item 0: image path refused (no --image-root)"
    assert len(server.requests) == 1
    assert isinstance(err.value, BaseRewardError)


@pytest.mark.parametrize("answer, message", [
    ({"rewards": [1.0]}, "reward server answered 1 rewards for 3 items"),
    ({"rewards": [1.0, None, 2.0]}, "not a finite number"),
    ({"oops": 1}, "reward server answered NoneType rewards for 3 items"),
])
def test_malformed_answers_are_errors(answer, message):
    server = StandIn(fail=[httpx.Response(200, json=answer)])
    with pytest.raises(RewardServerError, match=message):
        client(server).score_groups(GROUPS[:1])


def test_images_travel_inline_once_per_group_or_as_paths(tmp_path):
    img = Image.new("RGB", (9, 7), (200, 10, 30))
    path = tmp_path / "x.png"
    img.save(path)
    server = StandIn()
    src = client(server)
    src.score_groups([Group("p", ("a", "b"), (img,)), Group("q", ("c",), (str(path), {"bytes": path.read_bytes()}))])
    items = server.requests[0][1]
    assert items[0]["images"] == items[1]["images"]
    decoded = Image.open(io.BytesIO(base64.b64decode(items[0]["images"][0].split(",", 1)[1])))
    assert decoded.size == (9, 7) and decoded.getpixel((3, 3)) == (200, 10, 30)
    # a file is sent as its own bytes (PNG stays PNG, no re-encoding)
    assert items[2]["images"] == ["data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()] * 2

    server = StandIn()
    client(server, inline_paths=False).score_groups([Group("q", ("c",), (str(path), "http://x/y.png"))])
    assert server.requests[0][1][0]["images"] == [str(path), "http://x/y.png"]


def test_bad_configuration_is_one_line():
    with pytest.raises(BaseRewardError, match="must start with http:// or https://"):
        HttpRewardSource("ftp://x")
    with pytest.raises(BaseRewardError, match="batch_size >= 1"):
        HttpRewardSource("http://x", batch_size=0)
    with pytest.raises(BaseRewardError, match="not a model directory or an http"):
        open_reward_source("no/such/dir")


def test_open_reward_source_picks_the_transport():
    class Fixed:
        def score_groups(self, groups):
            return [[1.0] * len(g.responses) for g in groups]

    assert isinstance(open_reward_source(Fixed()), LocalRewardSource)
    http = open_reward_source("http://a:1, http://b:2/")
    assert isinstance(http, HttpRewardSource) and http.urls == ["http://a:1", "http://b:2"]
    # in-process sources take the same image forms: a data URL / bytes become a PIL image
    seen = []

    class Spy(Fixed):
        def score_groups(self, groups):
            seen.extend(im for g in groups for im in g.images)
            return super().score_groups(groups)

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    open_reward_source(Spy()).score_groups([Group("p", ("a",), (url, buf.getvalue(), "x.png"))])
    assert all(isinstance(s, Image.Image) and s.getpixel((0, 0)) == (1, 2, 3) for s in seen[:2])
    assert seen[2] == "x.png"


class _Slow(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(1.5)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_timeout_on_a_real_socket_then_connection_refused():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        start = time.monotonic()
        with pytest.raises(RewardServerError, match=r"no answer after 2 tries \(last: .*ReadTimeout"):
            HttpRewardSource(url, timeout=0.2, retries=1, backoff=0.0).score_groups(GROUPS[:1])
        assert time.monotonic() - start < 1.4  # gave up on the timeout, not on the slow answer
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(RewardServerError, match=r"no answer after 1 tries \(last: .*ConnectError"):
        HttpRewardSource(url, timeout=1.0, retries=0).score_groups(GROUPS[:1])
