#!/usr/bin/env python
"""Peak memory of `basereward data check` on a large pair file, measured in one run.

Writes a pair JSONL file of `--size-gb` (default 1 GB; ~300-byte rows, every 50th naming one
shared image, so ids, text and the image path all get checked), then runs
`basereward data check` on it in a child process and reports the child's peak resident set
size (`ru_maxrss` from wait4) and wall time. Issue 14's bar is < 500 MB on a 1 GB file.

It also runs the case the issue reported (3.5 GB RSS, 20 s before): a ~1.7 MB `.jsonl.gz` that
decompresses to ~1.75 GB of newlines. With `--compare`, it measures `load_pairs` (which keeps
every pair in a list) on the same file, and prints the ratio.

    python benchmarks/data_check_memory.py                 # ~2 min on 2 CPU cores, 1 GB in /tmp
    python benchmarks/data_check_memory.py --size-gb 0.1 --compare --json out.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

PROMPT = "Look at the picture and answer in one sentence: which object is closest to the camera, and why? "
CHOSEN = "The red cube is closest: it is the largest object and it hides part of the blue ball behind it."
REJECTED = "The blue ball is closest because it is round and blue, and round things are nearer."


def write_pairs(path: Path, size: int) -> int:
    """Write pair rows until the file holds `size` bytes; returns the number of rows."""
    Image.new("RGB", (16, 16), (200, 40, 40)).save(path.parent / "img.png")
    n = written = 0
    with open(path, "w", encoding="utf-8") as fh:
        while written < size:
            lines = []
            for _ in range(10_000):
                images = '["img.png"]' if n % 50 == 0 else "[]"
                lines.append(
                    f'{{"id": "pair-{n:09d}", "prompt": "{PROMPT}{n % 97}", "images": {images}, '
                    f'"chosen": "{CHOSEN}", "rejected": "{REJECTED}", "source": "bench", "category": "c{n % 7}"}}\n'
                )
                n += 1
            block = "".join(lines)
            fh.write(block)
            written += len(block.encode())
    return n


def write_blank_gz(path: Path, size: int) -> None:
    """`size` bytes of newlines, gzipped (about 1000:1), then one valid row."""
    block = b"\n" * (1 << 20)
    with gzip.open(path, "wb", compresslevel=9) as fh:
        for _ in range(size >> 20):
            fh.write(block)
        fh.write(json.dumps({"id": "last", "prompt": "p", "images": [], "chosen": "a", "rejected": "b"}).encode())


def measure(argv: list[str]) -> dict:
    """Run argv; its exit status, peak RSS (MB), seconds and last line of output."""
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a chatty child cannot block
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, text=True)
        # wait4 gives this child's own rusage (RUSAGE_CHILDREN would mix in earlier children).
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        out = log.read().strip().splitlines()[-1:]
    return {"rc": proc.returncode, "peak_rss_mb": usage.ru_maxrss / 1024, "seconds": seconds, "out": out}


LIST_LOADER = "import sys; from basereward.data.pairs import load_pairs; print(len(load_pairs(sys.argv[1])), 'pairs')"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=1.0, help="size of the pair file (GB, 10^9 bytes)")
    ap.add_argument("--blank-gb", type=float, default=1.75, help="decompressed size of the newline .gz")
    ap.add_argument("--dir", default=None, help="where to write the files (default: a temp dir, removed after)")
    ap.add_argument("--compare", action="store_true", help="also measure load_pairs (keeps every pair)")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        pairs = folder / "pairs.jsonl"
        t0 = time.perf_counter()
        n = write_pairs(pairs, int(args.size_gb * 1e9))
        size = pairs.stat().st_size
        print(f"wrote {size / 1e9:.2f} GB, {n} pairs in {time.perf_counter() - t0:.0f} s", flush=True)
        cli = [sys.executable, "-m", "basereward.cli", "data", "check"]
        results = {"file_bytes": size, "pairs": n, "data_check": measure([*cli, str(pairs)])}
        r = results["data_check"]
        print(f"data check: peak RSS {r['peak_rss_mb']:.0f} MB, {r['seconds']:.0f} s, exit {r['rc']}: {r['out']}")
        if args.compare:
            results["load_pairs"] = c = measure([sys.executable, "-c", LIST_LOADER, str(pairs)])
            print(f"load_pairs (list): peak RSS {c['peak_rss_mb']:.0f} MB, {c['seconds']:.0f} s: {c['out']}")
            print(f"ratio list / streaming peak RSS: {c['peak_rss_mb'] / r['peak_rss_mb']:.1f}x")
        pairs.unlink()

        blank = folder / "blank.jsonl.gz"
        write_blank_gz(blank, int(args.blank_gb * 1e9))
        results["blank_gz_bytes"] = blank.stat().st_size
        results["blank_gz"] = b = measure([*cli, str(blank)])
        print(f"data check on a {blank.stat().st_size / 1e6:.1f} MB .gz of {args.blank_gb:.2f} GB of newlines: "
              f"peak RSS {b['peak_rss_mb']:.0f} MB, {b['seconds']:.0f} s, exit {b['rc']}: {b['out']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    ok = results["data_check"]["rc"] == 0 and results["data_check"]["peak_rss_mb"] < 500
    print("under 500 MB: " + ("yes" if ok else "NO"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
