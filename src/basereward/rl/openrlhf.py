"""OpenRLHF reward file: `--remote_rm_url /path/to/file.py` exposing `reward_func(queries, prompts, labels)`.

OpenRLHF imports the file and calls `reward_func(queries, prompts, labels)` (one sample per call
in its single-turn executor, from worker threads), with `queries` the decoded prompt+response
sequences (special tokens kept), `prompts` the chat-templated prompts and `labels` the data
set's `--label_key` column; it expects `{"rewards", "scores", "extra_logs"}`. A three-line file
configures the model:

    from basereward.rl.openrlhf import make_reward_func
    reward_func = make_reward_func("runs/demo/model", reward="hybrid", prompt_images="prompts.jsonl")

or point `--remote_rm_url` at this module's own file and configure it by environment:
`BASEREWARD_RM` (model directory or server URLs), `BASEREWARD_REWARD` (hybrid/model/rule),
`BASEREWARD_PROMPT_IMAGES` (a JSONL file of `{"prompt", "images"}` rows, e.g. a pair file).

Images and ground truth reach the reward model through the label or the prompt -> images map:
a label may be the plain ground truth, or a JSON object `{"answer": ..., "images": [...],
"question": ...}`. The reward model is given the question from the label, else the last user
turn read back from the rendered prompt (ChatML, Llama 3, Gemma), and the images from the
label, else the map (looked up by that question). Imports are absolute: OpenRLHF loads the file
under another module name.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from basereward.errors import BaseRewardError, DataError
from basereward.io import iter_jsonl
from basereward.rl.client import open_reward_source
from basereward.rl.rewards import check_kind
from basereward.rl.samples import Sample, reward_samples
from basereward.rl.text import response_from_query, untemplate

ENV_MODEL, ENV_REWARD, ENV_IMAGES, ENV_TOKEN = (
    "BASEREWARD_RM", "BASEREWARD_REWARD", "BASEREWARD_PROMPT_IMAGES", "BASEREWARD_RM_TOKEN")


def load_prompt_images(path: str | os.PathLike[str]) -> dict[str, tuple[str, ...]]:
    """prompt -> image paths from a JSONL file of `{"prompt", "images"}` rows (pair files qualify);
    relative paths are taken from the file's directory."""
    base = Path(path).resolve().parent
    out: dict[str, tuple[str, ...]] = {}
    for where, row in iter_jsonl(path, empty="expected {\"prompt\", \"images\"} rows"):
        prompt, images = row.get("prompt"), row.get("images", [])
        if not isinstance(prompt, str) or not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise DataError(f"{where}: expected {{\"prompt\": str, \"images\": [str, ...]}}")
        paths = tuple(str(base / i) for i in images)
        if out.get(prompt, paths) != paths:
            raise DataError(f"{where}: prompt {prompt[:60]!r} listed with different images on an earlier line")
        out[prompt] = paths
    return out


def parse_label(label: Any) -> tuple[Any, list[Any], str | None]:
    """(ground truth, images, question) from a label: plain ground truth or a JSON object.

    >>> parse_label('{"answer": "4", "images": ["a.png"], "question": "How many?"}')
    ('4', ['a.png'], 'How many?')
    >>> parse_label("red")
    ('red', [], None)
    """
    obj = label
    if isinstance(label, str) and label.lstrip().startswith("{"):
        try:
            obj = json.loads(label)
        except json.JSONDecodeError:
            return label, [], None
    if not isinstance(obj, dict):
        return label, [], None
    truth = next((obj[k] for k in ("answer", "ground_truth", "label") if k in obj), None)
    images = obj.get("images", [])
    images = list(images) if isinstance(images, (list, tuple)) else [images]
    question = next((obj[k] for k in ("question", "prompt") if isinstance(obj.get(k), str)), None)
    return truth, images, question


def make_reward_func(target: Any = None, *, reward: str = "hybrid", prompt_images: Any = None,
                     **source_kwargs: Any) -> Callable[..., dict[str, Any]]:
    """An OpenRLHF `reward_func` scoring with `target` (model directory, server URLs or a source).

    `prompt_images`: a dict prompt -> images, or a JSONL file of `{"prompt", "images"}` rows.
    """
    check_kind(reward)
    if target is None and reward != "rule":
        raise BaseRewardError(f"the {reward} reward needs a reward model (a model directory or server URLs)")
    source = None if target is None else open_reward_source(target, **source_kwargs)
    images_by_prompt = load_prompt_images(prompt_images) if isinstance(prompt_images, (str, os.PathLike)) \
        else dict(prompt_images or {})

    def reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any] | None = None,
                    **kwargs: Any) -> dict[str, Any]:
        import torch

        labels = list(labels) if labels is not None else [None] * len(queries)
        if not len(queries) == len(prompts) == len(labels):
            raise BaseRewardError(f"reward_func: {len(queries)} queries, {len(prompts)} prompts, {len(labels)} labels")
        samples = []
        for query, prompt, label in zip(queries, prompts, labels):
            truth, images, question = parse_label(label)
            question = question or untemplate(prompt)
            images = images or list(images_by_prompt.get(question, images_by_prompt.get(prompt, ())))
            samples.append(Sample(question, response_from_query(query, prompt), tuple(images), truth))
        batch = reward_samples(samples, reward, source)
        rewards = torch.tensor([0.0 if r is None else r for r in batch.rewards], dtype=torch.float32)
        extra = {"rule_match": torch.tensor([float(bool(m)) for m in batch.matched]),
                 "images": torch.tensor([float(len(s.images)) for s in samples])}
        return {"rewards": rewards, "scores": rewards.clone(), "extra_logs": extra}

    return reward_func


_DEFAULT: Callable[..., dict[str, Any]] | None = None
_LOCK = threading.Lock()


def reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any] | None = None,
                **kwargs: Any) -> dict[str, Any]:
    """OpenRLHF's entry point, configured by $BASEREWARD_RM / $BASEREWARD_REWARD / $BASEREWARD_PROMPT_IMAGES
    (built on the first call, then reused)."""
    global _DEFAULT
    with _LOCK:
        if _DEFAULT is None:
            reward = os.environ.get(ENV_REWARD, "hybrid")
            target = os.environ.get(ENV_MODEL) or None
            if target is None and reward != "rule":
                raise BaseRewardError(f"set {ENV_MODEL} to a model directory or http(s):// server URLs")
            _DEFAULT = make_reward_func(target, reward=reward, prompt_images=os.environ.get(ENV_IMAGES) or None,
                                        token=os.environ.get(ENV_TOKEN) or None)
    return _DEFAULT(queries, prompts, labels, **kwargs)
