"""Peak-memory figures as `train` and `score` report them (basereward/memory.py)."""

from __future__ import annotations

import resource

from basereward.memory import largest, memory_line, peak_memory


def test_peak_rss_is_the_kernels_high_water_mark_in_mb():
    before = peak_memory()["peak_rss_mb"]
    block = bytearray(64 * 2**20)  # 64 MB touched: the high-water mark must rise past it
    for i in range(0, len(block), 4096):
        block[i] = 1
    after = peak_memory()["peak_rss_mb"]
    assert after >= before
    assert after == round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    assert after > 64


def test_largest_over_processes_and_the_printed_line():
    recs = [{"peak_rss_mb": 812.5}, {"peak_rss_mb": 900.0}]
    assert largest(recs) == {"peak_rss_mb": 900.0, "processes": 2}
    assert memory_line(largest(recs)) == "peak memory: 900.0 MB RSS (largest of 2 processes)"
    gpu = largest([{"peak_rss_mb": 1.0, "peak_gpu_mb": 5.0}, {"peak_rss_mb": 2.0, "peak_gpu_mb": 3.0}])
    assert gpu == {"peak_rss_mb": 2.0, "peak_gpu_mb": 5.0, "processes": 2}
    assert memory_line(gpu) == "peak memory: 2.0 MB RSS, 5.0 MB GPU (largest of 2 processes)"
    assert memory_line(largest([{"peak_rss_mb": 10.0}])) == "peak memory: 10.0 MB RSS"
