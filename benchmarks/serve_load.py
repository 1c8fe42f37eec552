#!/usr/bin/env python
"""Reward-server load test on loopback: what dynamic micro-batching buys over one sequence per forward.

The real `basereward serve` runs as a subprocess; `--clients` concurrent clients each send
`--requests` single-sample requests one after another, as OpenRLHF does (`POST /get_reward`, a
ChatML prompt whose image the server finds in its prompt map; `--prompts` distinct prompts, so
concurrent requests share prompts as GRPO samples do). Three runs, each on a fresh server:

  dynamic      --max-batch 32 --max-wait-ms 5: items of concurrent requests scored together,
               grouped by prompt (image and prefix encoded once per group)
  max_batch=1  --max-batch 1: one sequence per forward pass (the baseline)
  overload     --max-batch 1 --queue-size clients/8, a burst without retries: the server answers 503
               instead of queueing without bound, and serves normally right after

Checks: every request is answered exactly once (one response per request id, the server's scored
count equals the 200s), rewards agree between the two modes, and after the overload burst a
request succeeds. Prints a table; `--json` saves the numbers.

    python benchmarks/serve_load.py                              # the embedded default mini-vl (untrained
                                                                 # head), ~5 min on 2 busy CPU cores
    python benchmarks/serve_load.py --backbone tiny-qwen2.5-vl   # tiny random VLM, ~1 min: HTTP-bound
    python benchmarks/serve_load.py --model DIR --json out.json  # any saved model or ensemble directory

Batching pays where the forward pass dominates the per-request HTTP cost: on mini-vl it does; the
tiny random model's forward (~20 ms) costs about what a request's HTTP round trip costs here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_model(backbone: str, out: Path) -> Path:
    import torch

    from basereward.config import load_config
    from basereward.models.reward_model import RewardModel

    if backbone == "tiny-qwen2.5-vl":
        sys.path.insert(0, str(REPO / "tests"))
        from helpers.tiny_models import tiny_qwen25vl_dir

        overrides = ["model.backbone.name=qwen2.5-vl", f"model.backbone.path={tiny_qwen25vl_dir(out)}",
                     "model.backbone.dtype=float32"]
    else:
        overrides = ["model.backbone.name=mini-vl"]
    torch.manual_seed(0)
    cfg = load_config(None, overrides + ["model.head.zero_init_last=false"])
    return RewardModel(cfg.model).save_pretrained(out / "rm")


def write_prompts(root: Path, n: int) -> list[str]:
    sys.path.insert(0, str(REPO / "tests"))
    from helpers.tiny_models import solid_image

    prompts = [f"Question {i}: what colour is the largest shape in the picture?" for i in range(n)]
    with open(root / "prompts.jsonl", "w") as fh:
        for i, p in enumerate(prompts):
            solid_image(64 + 8 * i, 48, i).save(root / f"img{i}.png")
            fh.write(json.dumps({"prompt": p, "images": [f"img{i}.png"]}) + "\n")
    return prompts


class Server:
    """`basereward serve` in a subprocess on a free loopback port."""

    def __init__(self, model: Path, root: Path, *flags: str) -> None:
        cmd = [sys.executable, "-m", "basereward.cli", "serve", "--model", str(model), "--port", "0",
               "--image-root", str(root), "--prompt-images", str(root / "prompts.jsonl"), "--log-level", "warning",
               *flags]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = ""
        while "serving" not in line:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(f"the server did not start: {' '.join(cmd)}")
        self.url = line.split(" on ", 1)[1].split()[0]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def load(url: str, prompts: list[str], clients: int, requests: int) -> dict:
    import httpx

    answers: dict[tuple[int, int], list] = {}
    latencies: list[float] = []

    async def client(c: int, http: httpx.AsyncClient) -> None:
        for i in range(requests):
            prompt_text = prompts[(c + i) % len(prompts)]
            prompt = f"<|im_start|>user\n<image>{prompt_text}<|im_end|>\n<|im_start|>assistant\n"
            response = f"Client {c} says answer {i}: " + "red " * (1 + (c * 7 + i) % 5)
            t0 = time.perf_counter()
            try:
                r = await http.post(url + "/get_reward", json={"query": [prompt + response + "<|im_end|>"],
                                                               "prompts": [prompt], "labels": [""]})
                outcome = (r.status_code, r.json()["rewards"][0] if r.status_code == 200 else None)
            except httpx.HTTPError as exc:
                outcome = (type(exc).__name__, None)
            latencies.append(time.perf_counter() - t0)
            answers.setdefault((c, i), []).append((prompt_text, response, *outcome))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        before = (await http.get(url + "/health")).json()
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        wall = time.perf_counter() - t0
        after = (await http.get(url + "/health")).json()
    statuses: dict[str, int] = {}
    for outcomes in answers.values():
        for _, _, status, _ in outcomes:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
    ok = statuses.get("200", 0)
    batches = after["batches"] - before["batches"]
    return {
        "requests": clients * requests,
        "answered_once": len(answers) == clients * requests and all(len(v) == 1 for v in answers.values()),
        "statuses": statuses,
        "server_scored": after["sequences"] - before["sequences"],
        "wall_s": wall,
        "throughput_rps": ok / wall,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
        "batches": batches,
        "mean_batch": (after["sequences"] - before["sequences"]) / batches if batches else 0.0,
        "largest_batch": after["largest_batch"],
        "rewards": {f"{p}\x00{r}": reward for outcomes in answers.values() for p, r, _, reward in outcomes},
    }


def run_mode(name: str, model: Path, root: Path, prompts: list[str], clients: int, requests: int,
             flags: list[str]) -> dict:
    server = Server(model, root, *flags)
    try:
        asyncio.run(load(server.url, prompts, 2, 2))  # warm-up: first forwards, connection setup
        result = asyncio.run(load(server.url, prompts, clients, requests))
        if name == "overload":  # after the burst, an ordinary request is served
            result["after_burst"] = asyncio.run(load(server.url, prompts, 1, 1))["statuses"]
    finally:
        server.close()
    result["mode"], result["flags"] = name, " ".join(flags)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="a saved model / ensemble directory (default: build one)")
    ap.add_argument("--backbone", choices=["mini-vl", "tiny-qwen2.5-vl"], default="mini-vl",
                    help="the model built when --model is not given")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=8, help="single-sample requests per client")
    ap.add_argument("--prompts", type=int, default=4, help="distinct prompts (each with its own image)")
    ap.add_argument("--threads", type=int, default=1, help="the server's torch CPU threads (0: torch's choice)")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    modes = [("dynamic", ["--max-batch", "32", "--max-wait-ms", "5"]),
             ("max_batch=1", ["--max-batch", "1", "--max-wait-ms", "0"]),
             ("overload", ["--max-batch", "1", "--max-wait-ms", "0", "--queue-size", str(max(1, args.clients // 8))])]
    threads = ["--threads", str(args.threads)] if args.threads else []
    with tempfile.TemporaryDirectory(prefix="serve-load-") as scratch:  # a built mini-vl model is ~0.5 GB
        tmp = Path(scratch)
        root = tmp / "images"
        root.mkdir()
        prompts = write_prompts(root, args.prompts)
        model = Path(args.model) if args.model else build_model(args.backbone, tmp)
        results = [run_mode(name, model, root, prompts, args.clients, args.requests if name != "overload" else 4,
                            flags + threads) for name, flags in modes]

    dyn, one, over = results
    shared = dyn["rewards"].keys() & one["rewards"].keys()
    max_diff = max((abs(dyn["rewards"][k] - one["rewards"][k]) for k in shared), default=float("nan"))
    speedup = dyn["throughput_rps"] / one["throughput_rps"]
    print(f"\nmodel: {args.model or args.backbone}; {args.clients} clients x {args.requests} single-sample requests, "
          f"{args.prompts} prompts; loopback, {os.cpu_count()} CPUs, server threads: "
          f"{args.threads or 'torch default'}\n")
    print(f"{'mode':<12} {'requests':>8} {'200':>5} {'503':>5} {'once':>5} {'scored':>6} {'req/s':>7} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'batches':>7} {'mean batch':>10}")
    for r in results:
        print(f"{r['mode']:<12} {r['requests']:>8} {r['statuses'].get('200', 0):>5} {r['statuses'].get('503', 0):>5} "
              f"{'yes' if r['answered_once'] else 'NO':>5} {r['server_scored']:>6} {r['throughput_rps']:>7.1f} "
              f"{r['p50_ms']:>8.0f} {r['p99_ms']:>8.0f} {r['batches']:>7} {r['mean_batch']:>10.1f}")
    print(f"\nthroughput dynamic / max_batch=1: {speedup:.2f}x; max |reward difference| between the modes: "
          f"{max_diff:.2e} over {len(shared)} samples")
    print(f"overload: {over['statuses']}; the request after the burst: {over['after_burst']}")

    checks = {
        "every request answered exactly once": all(r["answered_once"] for r in results),
        "server scored each accepted request once": all(r["server_scored"] == r["statuses"].get("200", 0)
                                                        for r in results),
        "no errors without overload": all(set(r["statuses"]) == {"200"} for r in (dyn, one)),
        "overload answered 503": over["statuses"].get("503", 0) > 0,
        "only 200 or 503 under overload": set(over["statuses"]) <= {"200", "503"},
        "served after the burst": over["after_burst"] == {"200": 1},
        "rewards agree between modes (1e-4)": max_diff <= 1e-4,
    }
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAILED'}] {name}")
    if args.json:
        out = {"model": args.model or args.backbone, "clients": args.clients, "requests_per_client": args.requests,
               "prompts": args.prompts, "cpus": os.cpu_count(), "server_threads": args.threads or None,
               "speedup": speedup, "max_reward_diff": max_diff, "checks": checks,
               "modes": [{k: v for k, v in r.items() if k != "rewards"} for r in results]}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    if not all(checks.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
