"""`basereward serve`: load a model or ensemble directory and run the reward server under uvicorn.

The listening socket is bound here (so "address in use" is one line, exit 2, and port 0 picks a
free port); uvicorn then owns shutdown: on SIGINT / SIGTERM it stops accepting connections and
lets open requests finish (up to the request timeout) before the app's lifespan drains the
micro-batcher. `running_server` does the same in a background thread for tests and benchmarks.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError

TOKEN_ENV = "BASEREWARD_SERVE_TOKEN"


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model or ensemble directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--image-root", default=None,
                   help="image paths in requests are resolved inside this folder (without it only inline images)")
    p.add_argument("--token", default=None,
                   help=f"require 'Authorization: Bearer <token>' (or set ${TOKEN_ENV})")
    p.add_argument("--allow-urls", action="store_true", help="fetch http(s) image URLs (refused by default)")
    p.add_argument("--prompt-images", default=None, metavar="FILE",
                   help="JSONL of {prompt, images} (a pair file works): images for text-only protocols")
    p.add_argument("--max-batch", type=int, default=32, help="sequences per forward pass across requests")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long the first waiting item waits for others")
    p.add_argument("--queue-size", type=int, default=1024, help="sequences waiting at most; beyond it: 503")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a request may wait for its rewards (504)")
    p.add_argument("--max-body-mb", type=float, default=32.0, help="request body limit (413)")
    p.add_argument("--max-image-mb", type=float, default=20.0, help="limit per image (inline or fetched)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is often fastest on a busy CPU)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def model_info(path: str) -> dict[str, Any]:
    """What `/v1/model` reports: kind, the saved config, and training provenance."""
    from ..ensemble import is_ensemble_dir
    from ..ensemble.storage import read_spec
    from ..io import read_json
    from ..models.reward_model import CONFIG_NAME

    if is_ensemble_dir(path):
        spec = read_spec(path)
        return {"kind": spec.get("kind", "ensemble"), "config": spec, "provenance": {}}
    meta = read_json(os.path.join(path, CONFIG_NAME))
    meta = meta if isinstance(meta, dict) else {}
    return {"kind": "model", "config": meta.get("model", {}),
            "provenance": {"base_weights": meta.get("base_weights"), "train_result": meta.get("train_result")}}


def options_from_args(args: argparse.Namespace):
    from .app import ServeOptions
    from .images import ImagePolicy
    from .protocols import PromptMap

    for name in ("max_batch", "queue_size", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("max_wait_ms", "timeout", "max_body_mb", "max_image_mb"):
        value = getattr(args, name)
        if not (value >= 0 if name == "max_wait_ms" else value > 0) or value != value or value == float("inf"):
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive finite number, got {value}")
    if args.image_root is not None and not os.path.isdir(args.image_root):
        raise ConfigError(f"--image-root {args.image_root}: not a directory")
    if not os.path.isdir(args.model):
        raise ConfigError(f"--model {args.model}: not a directory")
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    prompt_map = PromptMap.load(args.prompt_images, root=args.image_root) if args.prompt_images else None
    policy = ImagePolicy(root=args.image_root, allow_urls=args.allow_urls,
                         max_image_bytes=int(args.max_image_mb * 1024 * 1024))
    name = Path(os.path.abspath(args.model)).name
    return ServeOptions(model_name=name, model_info=model_info(args.model), images=policy, prompt_map=prompt_map,
                        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, queue_size=args.queue_size,
                        timeout_s=args.timeout, token=token, max_body_bytes=int(args.max_body_mb * 1024 * 1024))


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port; ConfigError (one line) when that is impossible."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family = infos[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def run_serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from ..load import load_scorer
    from .app import create_app

    options = options_from_args(args)
    sock = bind(args.host, args.port)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    source = load_scorer(args.model, batch_size=options.max_batch, device=args.device)
    app = create_app(source, options)
    host, port = sock.getsockname()[:2]
    if args.host not in ("127.0.0.1", "localhost", "::1") and options.token is None:
        print(f"[basereward] warning: listening on {args.host} without a token: anyone who can reach it may "
              "use it", file=sys.stderr)
    mapped = f", prompt map: {len(options.prompt_map)} prompts" if options.prompt_map is not None else ""
    print(f"[basereward] serving {options.model_name} ({options.model_info['kind']}) on http://{host}:{port} "
          f"(max batch {options.max_batch}, max wait {options.max_wait_ms:g} ms, queue {options.queue_size}"
          f"{mapped}); docs at /docs", flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=int(options.timeout_s) + 5)
    # uvicorn handles SIGINT / SIGTERM itself (graceful stop), then re-raises the signal it caught
    # with the previous handler back in place: make that a clean exit instead of a kill.
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("[basereward] server stopped", flush=True)
    return 0


class _Stopped(Exception):
    """SIGTERM arrived (re-raised by uvicorn after its graceful shutdown)."""


def _stopped(signum, frame) -> None:
    raise _Stopped()


@contextlib.contextmanager
def running_server(app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> Iterator[str]:
    """Run `app` under uvicorn in a background thread; yields its base URL, stops it on exit."""
    import uvicorn

    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the reward server did not start")
        time.sleep(0.01)
    bound_host, bound_port = sock.getsockname()[:2]
    try:
        yield f"http://{bound_host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
