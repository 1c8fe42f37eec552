"""The process group is destroyed at exit, once registered (basereward/processes.py)."""

from __future__ import annotations

import atexit
import socket

import torch.distributed as dist

from basereward import processes


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_close_process_group_destroys_the_group_and_registers_once(monkeypatch):
    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(processes, "_registered", False)
    processes.close_process_group_at_exit()
    processes.close_process_group_at_exit()
    assert registered == [processes.close_process_group]

    processes.close_process_group()  # no group: nothing to do
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_port()}", rank=0, world_size=1)
    try:
        assert dist.is_initialized()
        registered[0]()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
