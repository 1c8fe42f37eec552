"""verl custom reward: `compute_score(data_source, solution_str, ground_truth, extra_info=None)`.

verl's reward managers call the function named by `custom_reward_function.path` / `.name` with
keyword arguments, merging `custom_reward_function.reward_kwargs` into every call:

    custom_reward_function:
      path: <site-packages>/basereward/rl/verl.py   # python -c "import basereward.rl.verl as m; print(m.__file__)"
      name: compute_score                            # or compute_score_batch with reward_model.reward_manager=batch
      reward_kwargs: {reward_model: runs/demo/model, reward: hybrid}   # or http://host:8000 (comma-separated URLs)

verl gives the reward function neither the prompt nor the images, so the data set's `extra_info`
carries them: the question under `question` (verl's own preprocessing writes it), `prompt` or
`problem` (text or chat messages), and the images under `images` or `image` (paths, bytes,
`{"bytes", "path"}` dicts as parquet stores them, data URLs). Without `reward_model` in
reward_kwargs, the `BASEREWARD_RM` environment variable names the model or server(s).

verl loads this file under another module name, so every import here is absolute.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from basereward.errors import BaseRewardError
from basereward.rl.client import open_reward_source
from basereward.rl.rewards import check_kind
from basereward.rl.samples import Sample, reward_samples
from basereward.rl.text import is_messages, prompt_text_and_images, strip_end_tokens

ENV_MODEL = "BASEREWARD_RM"
ENV_TOKEN = "BASEREWARD_RM_TOKEN"
PROMPT_KEYS = ("question", "prompt", "problem")
IMAGE_KEYS = ("images", "image")

_SOURCES: dict[str, Any] = {}
_LOCK = threading.Lock()


def source_for(target: Any = None, token: str | None = None) -> Any:
    """The reward source for `target` (default: $BASEREWARD_RM), loaded once per process."""
    if target is None or target == "":
        target = os.environ.get(ENV_MODEL, "")
        if not target:
            raise BaseRewardError(f"no reward model: pass reward_model= in reward_kwargs or set {ENV_MODEL} "
                                  "(a model directory or http(s):// server URLs)")
    if not isinstance(target, (str, os.PathLike)):
        return open_reward_source(target)
    key = os.fspath(target)
    with _LOCK:
        if key not in _SOURCES:
            _SOURCES[key] = open_reward_source(key, token=token or os.environ.get(ENV_TOKEN) or None)
        return _SOURCES[key]


def sample_from_verl(solution_str: str, ground_truth: Any, extra_info: Any) -> Sample:
    """A Sample from verl's arguments; the prompt and images come from `extra_info`."""
    info = extra_info if isinstance(extra_info, dict) else {}
    key = next((k for k in PROMPT_KEYS if isinstance(info.get(k), str) or is_messages(info.get(k))), None)
    if key is None:
        raise BaseRewardError(f"verl extra_info has no prompt for the reward model: put the question in extra_info "
                              f"under one of {list(PROMPT_KEYS)} (keys present: {sorted(info)})")
    prompt, images = prompt_text_and_images(info[key])
    img_key = next((k for k in IMAGE_KEYS if info.get(k) is not None), None)
    if img_key is not None:
        value = info[img_key]
        images = list(value) if isinstance(value, (list, tuple)) or _is_array(value) else [value]
    return Sample(prompt, strip_end_tokens(solution_str).strip(), tuple(images), ground_truth)


def _is_array(value: Any) -> bool:
    # parquet columns come back as numpy object arrays
    return type(value).__name__ == "ndarray"


def compute_score(data_source: Any = None, solution_str: str = "", ground_truth: Any = None, extra_info: Any = None,
                  *, reward_model: Any = None, reward: str = "hybrid", token: str | None = None,
                  **_: Any) -> dict[str, float]:
    """verl's per-sample reward: `{"score": ..., "rule_match": 0/1, "images": n}` (verl logs the
    extra keys). `reward`: hybrid (default), model or rule."""
    check_kind(reward)
    sample = sample_from_verl(solution_str, ground_truth, extra_info)
    source = None if reward == "rule" else source_for(reward_model, token)
    batch = reward_samples([sample], reward, source)
    score = batch.rewards[0]
    return {"score": 0.0 if score is None else float(score), "rule_match": float(bool(batch.matched[0])),
            "images": float(len(sample.images))}


def compute_score_batch(data_sources: Any = None, solution_strs: Any = (), ground_truths: Any = (),
                        extra_infos: Any = None, *, reward_model: Any = None, reward: str = "hybrid",
                        token: str | None = None, **_: Any) -> list[float]:
    """verl's batch reward manager form: one call for the whole batch, so the completions of one
    prompt are scored as one group (its image encoded once)."""
    check_kind(reward)
    solutions = list(solution_strs)
    infos = list(extra_infos) if extra_infos is not None else [None] * len(solutions)
    truths = list(ground_truths)
    if not len(infos) == len(truths) == len(solutions):
        raise BaseRewardError(f"verl batch: {len(solutions)} solutions, {len(truths)} ground truths, "
                              f"{len(infos)} extra_infos")
    samples = [sample_from_verl(s, g, e) for s, g, e in zip(solutions, truths, infos)]
    source = None if reward == "rule" else source_for(reward_model, token)
    return [0.0 if r is None else float(r) for r in reward_samples(samples, reward, source).rewards]
