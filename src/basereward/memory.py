"""Peak memory of this process, as `train` and `score` report it (torch-free unless torch is loaded).

RSS is the kernel's high-water mark of resident memory (`ru_maxrss`): the whole process, from
start to now (weights, data, activations; DataLoader workers are processes of their own and not
counted). GPU memory is what PyTorch's allocator handed out at its peak on this process's device
(`torch.cuda.max_memory_allocated`), only when CUDA was used. Several processes report the
largest of each figure.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Sequence

_MB = 2**20


def peak_memory() -> dict[str, float]:
    """{"peak_rss_mb": ..., "peak_gpu_mb": ... (only where CUDA was used)} of this process so far."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux counts ru_maxrss in KiB, macOS in bytes.
    out = {"peak_rss_mb": round(rss / (_MB if sys.platform == "darwin" else 1024), 1)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / _MB, 1)
    return out


def largest(records: Sequence[dict[str, float]]) -> dict[str, float]:
    """The largest of each figure over several processes' `peak_memory()`, and how many there were."""
    keys = [k for k in ("peak_rss_mb", "peak_gpu_mb") if any(k in r for r in records)]
    out: dict[str, float] = {k: max(r.get(k, 0.0) for r in records) for k in keys}
    out["processes"] = len(records)
    return out


def memory_line(rec: dict[str, float]) -> str:
    """e.g. `peak memory: 812.3 MB RSS, 5120.0 MB GPU (largest of 2 processes)`."""
    parts = [f"{rec['peak_rss_mb']:.1f} MB RSS"]
    if "peak_gpu_mb" in rec:
        parts.append(f"{rec['peak_gpu_mb']:.1f} MB GPU")
    n = int(rec.get("processes", 1))
    return f"peak memory: {', '.join(parts)}" + (f" (largest of {n} processes)" if n > 1 else "")
