"""Critic-RM (MM-RLHF style): a critic writes a critique of each response, then a Naive-RM's reward
head scores query + response + critique.

* The critic is any saved model whose backbone can generate (its LM head is read through
  models/generation.py); only the backbone is used, so a Naive-RM, a judge or a plain fine-tuned
  LM checkpoint saved by `basereward train` all serve. Critiques are greedy (temperature 0), so the
  same model writes the same critique every time.
* The critiqued text has one format, used in training and in scoring alike:
  `with_critique(response, critique) == f"{response}\\n\\nCritique: {critique}"`.
* Training: `basereward grm critique --critic DIR --pairs in.jsonl --out out.jsonl` writes the
  critiqued pair file (`add_critiques`); the reward model is then trained on it with the normal
  `basereward train`.
* Scoring: `CriticRM(critic, scorer)` critiques every response of a group (cached by prompt, images,
  history and response, so a response shared by several groups is critiqued once), then scores the
  critiqued groups through the scorer. Saved as a directory holding `critic_rm.json`
  ({critic, scorer, max_new_tokens}; relative paths resolve against the directory), which
  `basereward.load.load_scorer` recognises, so `eval`, `score`, ensembles and the server use it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from ..data.schema import Group, PreferencePair
from ..errors import BaseRewardError
from ..io import read_json, write_json
from ..scoring.interface import (
    RewardSource,
    ScoringMixin,
    score_checked,
    scores_with_uncertainty,
)

CRITIC_LEAD = "Critique:"
"""The fixed opening of the critic's reply; the critique is what the critic writes after it."""
CRITIC_RM_FILE = "critic_rm.json"
FORMAT_VERSION = 1
DEFAULT_MAX_NEW_TOKENS = 48


def critique_prompt(question: str, response: str) -> str:
    """The critic's user turn: short, so it fits the small CPU models' token budget."""
    # Concatenation, not str.format: a response may contain braces.
    return ("Point out what is wrong or missing in the response, in one sentence.\n"
            "Question: " + question.strip() + "\nResponse: " + response.strip())


def with_critique(response: str, critique: str) -> str:
    """The text the reward head scores: the response, a blank line, then the critique."""
    return f"{response}\n\n{CRITIC_LEAD} {critique.strip()}"


def _image_key(image: Any) -> Any:
    """A hashable stand-in for an image: its path, or a digest of a PIL image's pixels (never id():
    an id is reused once the image is freed, which would return another image's critique)."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if hasattr(image, "tobytes"):
        h = hashlib.blake2b(image.tobytes(), digest_size=16)
        return ("pixels", image.mode, image.size, h.hexdigest())
    return repr(image)


class Critic:
    """Greedy critiques from a backbone that can generate, cached (LRU, `cache_size` entries).

    Counters: `judgements` (critiques generated), `cache_hits`, `generated_tokens`, `seconds`
    (wall time spent generating)."""

    def __init__(self, critic: Any, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, cache_size: int = 4096) -> None:
        # A RewardModel (use its backbone) or a backbone itself.
        self.backbone = getattr(critic, "backbone", critic)
        if not hasattr(self.backbone, "generation_prompt"):
            raise BaseRewardError(f"critic backbone {getattr(self.backbone, 'registry_name', '?')!r} cannot "
                                  "generate text; use a model whose backbone keeps its LM head")
        if max_new_tokens < 1:
            raise BaseRewardError(f"critic max_new_tokens must be >= 1, got {max_new_tokens}")
        self.max_new_tokens = max_new_tokens
        self.cache_size = max(0, cache_size)
        self._cache: OrderedDict[tuple, str] = OrderedDict()
        self.judgements = 0
        self.cache_hits = 0
        self.generated_tokens = 0
        self.seconds = 0.0

    def critique(self, group: Group, response: str) -> str:
        """The critique of `response` to `group`'s prompt (with its images and history)."""
        key = (group.prompt, tuple(_image_key(im) for im in group.images), group.history, response)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self.cache_hits += 1
            return hit
        from ..models.generation import sample

        start = time.perf_counter()
        asked = Group(prompt=critique_prompt(group.prompt, response), responses=(), images=group.images,
                      history=group.history)
        out = sample(self.backbone, asked, CRITIC_LEAD, n=1, max_new_tokens=self.max_new_tokens, temperature=0.0)[0]
        self.seconds += time.perf_counter() - start
        self.judgements += 1
        self.generated_tokens += len(out.token_ids)
        text = out.text.strip()
        if self.cache_size:
            self._cache[key] = text
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return text

    def critiqued(self, group: Group) -> Group:
        """The group with every response replaced by `with_critique(response, its critique)`."""
        return dataclasses.replace(group, responses=tuple(with_critique(r, self.critique(group, r))
                                                          for r in group.responses))

    def counters(self) -> dict[str, float]:
        return {"judgements": self.judgements, "cache_hits": self.cache_hits,
                "generated_tokens": self.generated_tokens, "seconds": self.seconds}


def add_critiques(critic: Any, pairs: Sequence[PreferencePair], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                  progress: bool = False) -> list[PreferencePair]:
    """The pairs with chosen and rejected each carrying its critique (`with_critique`); ids, images,
    source and category unchanged. `critic`: a RewardModel, a backbone, or a `Critic`."""
    from ..scoring.scorer import progress_bar

    c = critic if isinstance(critic, Critic) else Critic(critic, max_new_tokens)
    bar = progress_bar(len(pairs), progress, "critiquing")
    out = []
    for pair in pairs:
        g = c.critiqued(pair.to_group())
        out.append(dataclasses.replace(pair, chosen=g.responses[0], rejected=g.responses[1]))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out


class CriticRM(ScoringMixin):
    """Critique each response, then score the critiqued groups with `scorer` (a Naive-RM trained
    on critiqued pairs). `critic_path` / `scorer_path` are what `save` stores."""

    def __init__(self, critic: Any, scorer: RewardSource, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 critic_path: str | None = None, scorer_path: str | None = None, name: str = "critic-rm") -> None:
        self.critic = critic if isinstance(critic, Critic) else Critic(critic, max_new_tokens)
        self.scorer = scorer
        self.critic_path, self.scorer_path, self.name = critic_path, scorer_path, name
        self.scoring_seconds = 0.0

    @property
    def members(self) -> list[RewardSource]:
        """The scorer (so truncation reports find it, as for ensemble members)."""
        return [self.scorer]

    def critiqued(self, groups: Sequence[Group]) -> list[Group]:
        return [self.critic.critiqued(g) for g in groups]

    def score_groups(self, groups: Sequence[Group]) -> list[list[float]]:
        return self._score(groups, lambda gs: score_checked(self.scorer, gs, "critic-rm scorer"))

    def score_groups_with_uncertainty(self, groups: Sequence[Group]) -> tuple[list[list[float]], list[list[float]]]:
        """The scorer's scores and uncertainty (e.g. an ensemble scorer's spread) on the critiqued groups."""
        return self._score(groups, lambda gs: scores_with_uncertainty(self.scorer, gs))

    def _score(self, groups: Sequence[Group], call: Callable[[list[Group]], Any]) -> Any:
        critiqued = self.critiqued(groups)
        start = time.perf_counter()
        out = call(critiqued)
        self.scoring_seconds += time.perf_counter() - start
        return out

    def counters(self) -> dict[str, float]:
        """Critiques generated, cache hits, generated tokens, seconds generating and scoring."""
        return {**self.critic.counters(), "scoring_seconds": self.scoring_seconds}

    def to_json(self) -> dict[str, Any]:
        if self.critic_path is None or self.scorer_path is None:
            raise BaseRewardError("this critic-RM has no critic / scorer paths, so it cannot be saved")
        return {"format_version": FORMAT_VERSION, "kind": "critic-rm", "critic": self.critic_path,
                "scorer": self.scorer_path, "max_new_tokens": self.critic.max_new_tokens}

    def save(self, directory: str | os.PathLike[str]) -> str:
        """Write `directory/critic_rm.json`; relative paths must resolve from the directory."""
        spec = self.to_json()
        for key in ("critic", "scorer"):
            if not os.path.exists(_resolve(spec[key], directory)):
                raise BaseRewardError(f"critic-RM {key} path {spec[key]!r} does not exist relative to "
                                      f"{os.fspath(directory)!r} (relative paths resolve against the critic-RM directory)")
        return str(write_json(os.path.join(directory, CRITIC_RM_FILE), spec))


def _resolve(path: str, directory: str | os.PathLike[str]) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(directory, path))


def is_critic_rm_dir(path: str | os.PathLike[str]) -> bool:
    return os.path.isfile(os.path.join(path, CRITIC_RM_FILE))


def load_critic_rm(directory: str | os.PathLike[str], loader: Callable[[str], RewardSource],
                   device: Any = None) -> CriticRM:
    """The CriticRM a directory describes; the scorer is loaded with `loader(path)` (any reward
    source directory), the critic as a saved model whose backbone is used for generation."""
    from ..models.reward_model import RewardModel

    path = os.path.join(directory, CRITIC_RM_FILE)
    spec = read_json(path)
    if not isinstance(spec, dict) or spec.get("format_version") != FORMAT_VERSION or spec.get("kind") != "critic-rm":
        raise BaseRewardError(f"{path}: not a critic-RM spec of format_version {FORMAT_VERSION}")
    missing = [k for k in ("critic", "scorer", "max_new_tokens") if k not in spec]
    if missing:
        raise BaseRewardError(f"{path}: missing {', '.join(missing)}")
    critic = RewardModel.from_pretrained(_resolve(spec["critic"], directory), device=device)
    return CriticRM(critic, loader(_resolve(spec["scorer"], directory)), int(spec["max_new_tokens"]),
                    critic_path=spec["critic"], scorer_path=spec["scorer"],
                    name=os.path.basename(os.path.normpath(directory)))


# ---------------------------------------------------------------------- command line (basereward grm ...)
def add_critique_arguments(p: Any) -> None:
    p.add_argument("--critic", required=True, help="saved model directory whose backbone writes the critiques")
    p.add_argument("--pairs", required=True, help="pair file to critique")
    p.add_argument("--out", required=True, help="critiqued pair file (JSONL)")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)


def run_critique_command(args: Any) -> int:
    """`basereward grm critique`: write the critiqued pair file for `basereward train`."""
    from ..data.pairs import load_pairs, save_pairs
    from ..io import check_output_file
    from ..models.reward_model import RewardModel
    from ..scoring.scorer import default_device

    check_output_file(args.out)
    pairs = load_pairs(args.pairs, on_error="fail")
    critic = Critic(RewardModel.from_pretrained(args.critic, device=default_device()), args.max_new_tokens)
    save_pairs(add_critiques(critic, pairs, progress=True), args.out)
    c = critic.counters()
    print(f"wrote {len(pairs)} critiqued pairs to {args.out} ({c['judgements']} critiques, "
          f"{c['generated_tokens']} tokens, {c['seconds']:.1f} s)")
    return 0


def add_critic_rm_arguments(p: Any) -> None:
    p.add_argument("--critic", required=True, help="the model directory that wrote the training critiques")
    p.add_argument("--scorer", required=True, help="reward model trained on the critiqued pairs")
    p.add_argument("--output", required=True, help="directory to write critic_rm.json into")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)


def run_critic_rm_command(args: Any) -> int:
    """`basereward grm critic-rm`: save a critic-RM directory (paths stored relative to it)."""
    os.makedirs(args.output, exist_ok=True)
    spec = {"format_version": FORMAT_VERSION, "kind": "critic-rm",
            "critic": os.path.relpath(os.path.abspath(args.critic), os.path.abspath(args.output)),
            "scorer": os.path.relpath(os.path.abspath(args.scorer), os.path.abspath(args.output)),
            "max_new_tokens": args.max_new_tokens}
    for key in ("critic", "scorer"):
        if not os.path.isdir(getattr(args, key)):
            raise BaseRewardError(f"--{key} {getattr(args, key)}: not a directory")
    write_json(os.path.join(args.output, CRITIC_RM_FILE), spec)
    print(f"wrote {os.path.join(args.output, CRITIC_RM_FILE)}")
    return 0
