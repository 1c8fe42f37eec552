"""Refusals, overload, timeout and shutdown of the reward server: every refusal is one 4xx (or the
documented 503 / 504) with a one-line detail, and the server keeps serving afterwards."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from helpers.tiny_models import solid_image, tiny_qwen25vl_dir, tiny_reward_model_dir
from PIL import Image

from basereward.cli import main
from basereward.load import load_scorer
from basereward.serve import ImagePolicy, ServeOptions, create_app, running_server

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD = {"items": [{"prompt": "Tell me about the picture.", "images": ["ok.png"], "response": "A square."}]}


class Gated:
    """The real scorer behind a gate: `entered` is set when a batch reaches it, `release` lets it run."""

    def __init__(self, scorer):
        self.scorer = scorer
        self.entered = threading.Event()
        self.release = threading.Event()

    def score_groups(self, groups):
        self.entered.set()
        assert self.release.wait(30)
        return self.scorer.score_groups(groups)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve-sec")
    model_dir = tiny_reward_model_dir(tmp / "rm", tiny_qwen25vl_dir(tmp), seed=1)
    root = tmp / "root"
    root.mkdir()
    solid_image(32, 32, 1).save(root / "ok.png")
    solid_image(32, 32, 2).save(tmp / "secret.png")
    os.symlink(tmp / "secret.png", root / "link.png")
    os.mkfifo(root / "fifo.png")
    return {"tmp": tmp, "model": model_dir, "root": root, "scorer": load_scorer(model_dir, batch_size=8)}


@pytest.fixture(scope="module")
def server(ws):
    options = ServeOptions(model_name="rm", images=ImagePolicy(root=str(ws["root"])), token=TOKEN,
                           max_body_bytes=64 * 1024)
    with running_server(create_app(ws["scorer"], options)) as url:
        yield url


def still_serving(url):
    assert httpx.get(url + "/health").json()["status"] == "ok"
    r = httpx.post(url + "/v1/score", json=GOOD, headers=AUTH, timeout=30)
    assert r.status_code == 200 and len(r.json()["rewards"]) == 1


def bomb_png() -> str:
    """A 6000 x 6000 one-bit PNG: a few KB on the wire, 36 Mpx decoded (limit 32 Mpx)."""
    buf = io.BytesIO()
    Image.new("1", (6000, 6000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < 40_000
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def with_image(image: str) -> dict:
    return {"items": [{"prompt": "p", "images": [image], "response": "r"}]}


CASES = [
    ("traversal", lambda ws: with_image("../secret.png"), 403,
     "items[0].images[0]: ../secret.png: image path leads outside the image root"),
    ("absolute", lambda ws: with_image(str(ws["tmp"] / "secret.png")), 403, "leads outside the image root"),
    ("symlink escape", lambda ws: with_image("link.png"), 403, "link.png: image path leads outside the image root"),
    ("missing", lambda ws: with_image("nope.png"), 400, "nope.png: image not found"),
    ("fifo", lambda ws: with_image("fifo.png"), 400, "fifo.png: not a regular file (a FIFO)"),
    ("url", lambda ws: with_image("http://127.0.0.1:9/x.png"), 403, "image URLs are refused"),
    ("other scheme", lambda ws: with_image("file:///etc/passwd"), 400, "unsupported image scheme 'file'"),
    ("bad base64", lambda ws: with_image("data:image/png;base64,@@@"), 400, "invalid base64 image data"),
    ("not an image", lambda ws: with_image("data:image/png;base64," + base64.b64encode(b"hello").decode()), 400,
     "inline image: corrupt or unreadable image"),
    ("bomb", lambda ws: with_image(bomb_png()), 413, "inline image: decompression bomb refused"),
    ("body", lambda ws: {"items": [{"prompt": "x" * 70_000, "response": "r"}]}, 413, "request body larger than 65536"),
    ("unknown field", lambda ws: {"items": [{"prompt": "p", "respons": "r"}]}, 422, "items.0.response: Field required"),
]


@pytest.mark.parametrize("name, body, status, detail", CASES, ids=[c[0] for c in CASES])
def test_refusals_are_one_line_4xx_and_the_server_keeps_serving(ws, server, name, body, status, detail):
    r = httpx.post(server + "/v1/score", json=body(ws), headers=AUTH, timeout=30)
    assert r.status_code == status, r.text
    message = r.json()["detail"]
    assert detail in message and "\n" not in message
    still_serving(server)


def test_invalid_json_is_a_422(server):
    r = httpx.post(server + "/v1/score", content=b"{not json", headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 422 and "\n" not in r.json()["detail"]
    still_serving(server)


def test_token_required(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        r = httpx.post(server + "/v1/score", json=GOOD, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in r.json()["detail"]
    assert httpx.get(server + "/v1/model").status_code == 401
    still_serving(server)


def test_without_a_root_paths_are_refused_inline_images_accepted(ws):
    with running_server(create_app(ws["scorer"], ServeOptions())) as url:
        r = httpx.post(url + "/v1/score", json=with_image("ok.png"))
        assert r.status_code == 403 and "no --image-root" in r.json()["detail"]
        png = base64.b64encode((ws["root"] / "ok.png").read_bytes()).decode()
        assert httpx.post(url + "/v1/score", json=with_image("data:image/png;base64," + png)).status_code == 200


def gated_app(ws, **kw):
    gated = Gated(ws["scorer"])
    options = ServeOptions(images=ImagePolicy(root=str(ws["root"])), max_batch=1, max_wait_ms=0, **kw)
    return gated, create_app(gated, options)


def text_items(n, tag):
    return {"items": [{"prompt": f"prompt {tag}", "response": f"response {i}"} for i in range(n)]}


def wait_until(predicate, seconds=20):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_full_queue_answers_503_then_serves_everything_it_accepted(ws):
    gated, app = gated_app(ws, queue_size=2)
    with running_server(app) as url, ThreadPoolExecutor(4) as pool:
        first = pool.submit(httpx.post, url + "/v1/score", json=text_items(1, "a"), timeout=60)
        assert gated.entered.wait(20)  # the worker holds item a; the queue is empty
        second = pool.submit(httpx.post, url + "/v1/score", json=text_items(2, "b"), timeout=60)
        wait_until(lambda: httpx.get(url + "/health").json()["queued"] == 2)
        r = httpx.post(url + "/v1/score", json=text_items(1, "c"))
        assert r.status_code == 503 and r.json()["detail"].startswith("the queue is full (2 items waiting, limit 2)")
        assert httpx.post(url + "/v1/score", json=text_items(3, "d")).status_code == 413  # can never fit
        gated.release.set()
        assert first.result().status_code == 200 and len(second.result().json()["rewards"]) == 2
        assert httpx.post(url + "/v1/score", json=text_items(1, "c")).status_code == 200


def test_request_timeout_is_a_504_and_the_server_recovers(ws):
    gated, app = gated_app(ws, timeout_s=0.3)
    with running_server(app) as url:
        r = httpx.post(url + "/v1/score", json=text_items(1, "slow"), timeout=30)
        assert r.status_code == 504 and "not scored within 0.3 s" in r.json()["detail"]
        gated.release.set()
        assert httpx.post(url + "/v1/score", json=text_items(1, "fast"), timeout=30).status_code == 200


def test_shutdown_answers_every_accepted_request(ws):
    gated, app = gated_app(ws, queue_size=8)
    server = running_server(app)
    url = server.__enter__()
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(httpx.post, url + "/v1/score", json=text_items(1, str(i)), timeout=60) for i in range(3)]
        assert gated.entered.wait(20)
        wait_until(lambda: httpx.get(url + "/health").json()["queued"] == 2)
        stopper = threading.Thread(target=server.__exit__, args=(None, None, None))
        stopper.start()  # stop while one item is in the model and two are queued
        time.sleep(0.3)
        gated.release.set()
        stopper.join(60)
        assert [f.result().status_code for f in futures] == [200, 200, 200]
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=2)


def test_cli_user_errors_are_one_line_exit_2(ws, tmp_path, capsys):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    cases = [
        (["--model", str(tmp_path / "missing")], "--model"),
        (["--model", str(ws["model"]), "--max-batch", "0"], "--max-batch must be at least 1"),
        (["--model", str(ws["model"]), "--image-root", str(tmp_path / "nope")], "--image-root"),
        (["--model", str(ws["model"]), "--port", str(port)], f"cannot listen on 127.0.0.1:{port}"),
        (["--model", str(ws["model"]), "--prompt-images", str(tmp_path / "none.jsonl")], "none.jsonl"),
    ]
    for args, expected in cases:
        assert main(["serve", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and expected in err and "\n" not in err
    busy.close()


def test_cli_serves_then_stops_cleanly_on_sigterm(ws):
    cmd = [sys.executable, "-m", "basereward.cli", "serve", "--model", str(ws["model"]), "--port", "0",
           "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        while "serving" not in line:
            line = proc.stdout.readline()
            assert line, "the server exited before serving"
        url = line.split(" on ", 1)[1].split()[0]
        assert httpx.get(url + "/v1/model", timeout=30).json()["kind"] == "model"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "server stopped" in out


def test_a_chunked_body_over_the_limit_is_refused_while_streaming(server):
    def chunks():
        for _ in range(100):
            yield b" " * 1024

    r = httpx.post(server + "/v1/score", content=chunks(), headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413 and "request body larger than 65536" in r.json()["detail"]
    still_serving(server)


def test_urls_are_fetched_only_when_allowed(ws):
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(ws["root"]))
    files = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{files.server_address[1]}"
    try:
        options = ServeOptions(images=ImagePolicy(root=str(ws["root"]), allow_urls=True, max_image_bytes=100_000))
        with running_server(create_app(ws["scorer"], options)) as url:
            by_url = httpx.post(url + "/v1/score", json=with_image(base + "/ok.png"), timeout=30).json()["rewards"]
            by_path = httpx.post(url + "/v1/score", json=with_image("ok.png"), timeout=30).json()["rewards"]
            assert by_url == pytest.approx(by_path, abs=1e-6)
            r = httpx.post(url + "/v1/score", json=with_image(base + "/missing.png"))
            assert r.status_code == 400 and "answered HTTP 404" in r.json()["detail"]
    finally:
        files.shutdown()


def test_every_endpoint_names_the_refused_image(server):
    chat = "<|im_start|>user\np<|im_end|>\n<|im_start|>assistant\n"
    cases = [
        ("/v1/rank", {"prompt": "p", "images": ["../secret.png"], "responses": ["a", "b"]}, "images[0]: ../secret.png"),
        ("/v1/compare", {"prompt": "p", "images": ["ok.png", "link.png"], "response_a": "a", "response_b": "b"},
         "images[1]: link.png"),
        ("/get_reward", {"query": [chat + "r"], "prompts": [chat], "images": [["../secret.png"]]},
         "query[0].images[0]: ../secret.png"),
        ("/classify", {"input": chat + "r", "images": ["/etc/hosts"]}, "input[0].images[0]: /etc/hosts"),
    ]
    for path, body, where in cases:
        r = httpx.post(server + path, json=body, headers=AUTH)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["detail"] == where + ": image path leads outside the image root (refused)"
    still_serving(server)
