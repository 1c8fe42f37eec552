"""The reward server: `basereward serve` (FastAPI app, micro-batcher, image policy, protocols).

`create_app(source, ServeOptions(...))` serves any RewardSource; `running_server(app)` runs it in a
background thread (tests, benchmarks); `run.run_serve_command` is the CLI entry point. Names are
imported on first use so that building the CLI parser does not import FastAPI.
"""

from importlib import import_module

_NAMES = {"ServeOptions": "app", "create_app": "app", "MicroBatcher": "batcher", "ImagePolicy": "images",
          "PromptMap": "protocols", "running_server": "run"}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
