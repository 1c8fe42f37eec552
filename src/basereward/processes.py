"""The lifetime of the process group that `accelerate launch` (or torchrun) sets up for training
and sharded scoring."""

from __future__ import annotations

import atexit

_registered = False


def close_process_group_at_exit() -> None:
    """Destroy the default process group when the interpreter exits (registered once per process).

    Left alive, the communication backend's threads can outlive Python's shutdown, and a launched
    process that finished its work aborts at exit ("terminate called without an active
    exception", exit code -6), so the launcher reports a failed run. A process that runs several
    commands (one `basereward` call after another) keeps the group until it exits."""
    global _registered
    if not _registered:
        _registered = True
        atexit.register(close_process_group)


def close_process_group() -> None:
    """Destroy the default process group if there is one (a no-op otherwise)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
