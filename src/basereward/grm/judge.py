"""Generative judges behind the one scoring interface (`score_groups`).

A judge reads `[query, response 1, response 2]` and answers which is better, on the same backbones
as the Naive-RM, through the LM head (models/generation.py):

* `grm`: the assistant turn is `<answer>k</answer>`; the score of an ordered pair is
  log P("1") - log P("2") at the verdict token (one forward, no sampling).
* `longcot-grm`: the assistant turn is `<think>...</think><answer>k</answer>` (R1-Reward); the judge
  samples its reasoning (KV-cached), the verdict is parsed (grm/parse.py) and votes are combined
  (grm/voting.py): the score is the vote margin in [-1, 1].

A group of N responses is judged over ordered pairs and each response's reward is its mean
preference over the others (pairwise -> scalar); with `judge.both_orders` every pair is judged in
both orders and the two verdicts averaged, so a judge that always says "1" scores every pair 0.
A preference pair is the group (chosen, rejected).

`JudgeCollator` turns training pairs into judge examples (the chosen response first in half of
them, seeded by pair content) for `basereward train` with `model.paradigm` grm / longcot-grm.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Sequence
from itertools import permutations
from typing import Any

import torch

from ..data.schema import Group
from ..models.generation import answer_log_odds, sample
from ..scoring.interface import ScoringMixin
from ..scoring.scorer import pack_batches, progress_bar
from ..scoring.truncation import count_batch
from .parse import parse_verdict
from .prompts import grm_prompt, longcot_prompt
from .voting import accuracy_vs_k, accuracy_vs_k_both_orders, vote

GENERATIVE = ("grm", "longcot-grm")
LEAD = {"grm": "<answer>", "longcot-grm": "<think>"}
"""The fixed opening of each paradigm's assistant turn (never itself a prediction target)."""


def judge_prompt(paradigm: str, group: Group, first: str, second: str) -> str:
    make = grm_prompt if paradigm == "grm" else longcot_prompt
    return make(group.prompt, first, second)


def judge_group(paradigm: str, group: Group, first: str, second: str, target: str) -> Group:
    """The judge's input for (first, second) as a one-response group whose response is `target`."""
    return Group(prompt=judge_prompt(paradigm, group, first, second), responses=(target,),
                 images=group.images, history=group.history)


def difference_trace(first: str, second: str) -> str:
    """A cold-start reasoning trace made from the texts alone: the words in which the two responses
    differ, which is where a judge has to look (used when a dataset supplies no traces)."""
    a, b = first.split(), second.split()
    parts_a, parts_b = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op != "equal":
            parts_a.append(" ".join(a[i1:i2]) or "(nothing)")
            parts_b.append(" ".join(b[j1:j2]) or "(nothing)")
    if not parts_a:
        return "The two responses say the same."
    # Short on purpose: a judge's reasoning is paid for token by token at every judgement.
    return f"Response 1 says {'; '.join(parts_a[:3])}. Response 2 says {'; '.join(parts_b[:3])}."


def judge_target(paradigm: str, choice: int, first: str = "", second: str = "", trace: str | None = None) -> str:
    """The assistant turn a judge is trained to write for verdict `choice` (1 or 2)."""
    if paradigm == "grm":
        return f"<answer>{choice}</answer>"
    think = trace if trace is not None else difference_trace(first, second)
    return f"<think>{think}</think><answer>{choice}</answer>"


def chosen_second(group: Group, seed: int) -> bool:
    """Whether this training pair shows the chosen response second: half the pairs, decided by the
    pair's content (the same on every process, every epoch and after a resume)."""
    h = hashlib.blake2b(f"{seed}\x00{group.prompt}\x00{group.responses[0]}\x00{group.responses[1]}".encode(),
                        digest_size=8).digest()
    return bool(h[0] & 1)


def sampled_verdicts(backbone: Any, pair: Any, chosen_first: bool, n: int, max_new_tokens: int,
                     temperature: float = 1.0, seed: int = 0) -> list[Any]:
    """n LongCoT judgements of a preference pair, parsed (`Verdict`s), with the chosen response
    shown as Response 1 (`chosen_first`) or as Response 2."""
    first, second = (pair.chosen, pair.rejected) if chosen_first else (pair.rejected, pair.chosen)
    group = judge_group("longcot-grm", pair.to_group(), first, second, LEAD["longcot-grm"])
    draws = sample(backbone, group, LEAD["longcot-grm"], n=n, max_new_tokens=max_new_tokens,
                   temperature=temperature, seed=seed)
    return [parse_verdict(LEAD["longcot-grm"] + d.text) for d in draws]


def voting_draws(backbone: Any, pairs: Sequence[Any], n: int, max_new_tokens: int, temperature: float = 1.0,
                 seed: int = 0, both_orders: bool = False, progress: bool = False) -> list[tuple[bool, dict]]:
    """The draws of voting@k: per pair, (its own order: is the chosen response shown first, as
    `chosen_second` decides from its texts; {chosen shown first: n Verdicts}) in its own order
    only, or in both. Pair i's draws with the chosen response first use seed `seed * 7919 + i`,
    with it second `seed * 7919 + 100003 + i`."""
    from tqdm.auto import tqdm

    out = []
    for i, pair in enumerate(tqdm(pairs, desc="voting", unit="pair", dynamic_ncols=True, disable=not progress)):
        own = not chosen_second(pair.to_group(), seed)
        draws = {}
        for chosen_first in ((True, False) if both_orders else (own,)):
            draws[chosen_first] = sampled_verdicts(backbone, pair, chosen_first, n, max_new_tokens, temperature,
                                                   seed=seed * 7919 + i + (0 if chosen_first else 100_003))
        out.append((own, draws))
    return out


def voting_accuracy(draws: Sequence[tuple[bool, dict]], ks: Sequence[int], both_orders: bool) -> dict[int, float]:
    """{k: accuracy} from `voting_draws`: k votes in each pair's own order (`accuracy_vs_k`), or k
    in each order (`accuracy_vs_k_both_orders`; needs draws made with both_orders)."""
    if both_orders:
        return accuracy_vs_k_both_orders([d[True] for _, d in draws], [d[False] for _, d in draws], ks)
    return accuracy_vs_k([d[own] for own, d in draws], [1 if own else 2 for own, _ in draws], ks)


class JudgeCollator:
    """Training pairs (groups of (chosen, rejected)) -> judge examples + `answer_sign` (N,): +1 when
    the right verdict is "1". Picklable: holds only the backbone's collator and settings."""

    def __init__(self, inner: Callable[[Sequence[Group]], dict[str, Any]], paradigm: str, order_seed: int) -> None:
        self.inner, self.paradigm, self.order_seed = inner, paradigm, order_seed

    def __call__(self, groups: Sequence[Group]) -> dict[str, Any]:
        judged, signs = [], []
        for g in groups:
            chosen, rejected = g.responses[0], g.responses[1]
            swap = chosen_second(g, self.order_seed)
            first, second = (rejected, chosen) if swap else (chosen, rejected)
            choice = 2 if swap else 1
            judged.append(judge_group(self.paradigm, g, first, second, judge_target(self.paradigm, choice, first, second)))
            signs.append(-1.0 if swap else 1.0)
        batch = self.inner(judged)
        batch["answer_sign"] = torch.tensor(signs)  # (N,)
        return batch


class GenerativeJudge(ScoringMixin):
    """A trained judge (a RewardModel with model.paradigm grm / longcot-grm) as a reward source."""

    def __init__(self, model: Any, batch_size: int = 16, device: str | torch.device | None = None,
                 progress: bool = False, name: str = "", samples: int | None = None, seed: int = 0) -> None:
        self.model = model
        self.paradigm = model.cfg.paradigm
        self.judge_cfg = model.cfg.judge
        self.samples = samples if samples is not None else self.judge_cfg.samples
        self.batch_size = max(1, batch_size)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device).eval()
        self.progress, self.name, self.seed = progress, name, seed
        self.truncated = {"sequences": 0, "prompt": 0, "response": 0}
        self.format_errors = 0  # LongCoT judgements with no parsable verdict / broken format
        self.judgements = 0
        self.samples_drawn = 0

    # ------------------------------------------------------------------ the interface
    def score_groups(self, groups: Sequence[Group]) -> list[list[float]]:
        """scores[i][k] = mean preference of response k over the group's other responses."""
        ordered = [self._orders(g) for g in groups]
        jobs = [(i, a, b) for i, pairs in enumerate(ordered) for a, b in pairs]
        prefs = self._prefer([(groups[i], a, b) for i, a, b in jobs])
        totals = [[0.0] * len(g.responses) for g in groups]
        counts = [[0] * len(g.responses) for g in groups]
        for (i, a, b), p in zip(jobs, prefs):
            # p > 0: response a (shown first) preferred over b.
            totals[i][a] += p
            totals[i][b] -= p
            counts[i][a] += 1
            counts[i][b] += 1
        return [[t / c if c else 0.0 for t, c in zip(tot, cnt)] for tot, cnt in zip(totals, counts)]

    def _orders(self, g: Group) -> list[tuple[int, int]]:
        n = len(g.responses)
        if self.judge_cfg.both_orders:
            return list(permutations(range(n), 2))
        # One order per pair, which one decided by the two texts (not by their positions in the
        # group): a judge that always answers "1" then scores at chance, not at 100%.
        return [(a, b) if not _second_first(g.responses[a], g.responses[b]) else (b, a)
                for a in range(n) for b in range(a + 1, n)]

    def _prefer(self, jobs: list[tuple[Group, int, int]]) -> list[float]:
        if self.paradigm == "grm":
            return self._log_odds(jobs)
        return self._votes(jobs)

    # ------------------------------------------------------------------ grm: one forward
    def _log_odds(self, jobs: list[tuple[Group, int, int]]) -> list[float]:
        from ..models.generation import answer_token_ids

        backbone = self.model.backbone
        ids = answer_token_ids(backbone.collator.tokenizer)
        judged = [judge_group("grm", g, g.responses[a], g.responses[b], judge_target("grm", 1)) for g, a, b in jobs]
        out = [0.0] * len(judged)
        order = sorted(range(len(judged)), key=lambda i: -len(judged[i].prompt))
        bar = progress_bar(len(judged), self.progress, "judging")
        with torch.inference_mode():
            for idx in pack_batches(order, judged, self.batch_size):
                batch = backbone.collate([judged[i] for i in idx])
                batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                self._count_truncation(batch, len(idx))
                odds, _ = answer_log_odds(backbone, batch, backbone(batch), ids)
                for i, v in zip(idx, odds.tolist()):
                    out[i] = float(v)
                if bar is not None:
                    bar.update(len(idx))
        if bar is not None:
            bar.close()
        return out

    # ------------------------------------------------------------------ longcot: sample and vote
    def _votes(self, jobs: list[tuple[Group, int, int]]) -> list[float]:
        out = []
        bar = progress_bar(len(jobs), self.progress, "judging")
        for j, (g, a, b) in enumerate(jobs):
            judged = judge_group("longcot-grm", g, g.responses[a], g.responses[b], LEAD["longcot-grm"])
            out.append(self.judge_one(judged, seed=self.seed * 1_000_003 + j))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return out

    def judge_one(self, judged: Group, seed: int = 0) -> float:
        """Vote margin in [-1, 1] (+1: every counted verdict says "1") for one judge input."""
        cfg = self.judge_cfg
        k = self.samples
        temperature = cfg.temperature if k > 1 else 0.0
        verdicts, weights = [], []
        with torch.inference_mode():
            # Draw in rounds so early stopping can skip the rest once a majority is certain.
            step = 1 if cfg.early_stop and k > 1 else k
            while len(verdicts) < k:
                for s in sample(self.model.backbone, judged, LEAD["longcot-grm"], n=min(step, k - len(verdicts)),
                                max_new_tokens=cfg.max_new_tokens, temperature=temperature, seed=seed + len(verdicts)):
                    v = parse_verdict(LEAD["longcot-grm"] + s.text)
                    verdicts.append(v.choice)
                    weights.append(float(torch.tensor(s.log_prob).exp()) if cfg.vote == "confidence" else 1.0)
                    self.format_errors += int(not v.format_ok)
                    self.samples_drawn += 1
                if cfg.early_stop and _decided(verdicts, k):
                    break
        self.judgements += 1
        choice, _ = vote(verdicts, weights)
        total = sum(w for c, w in zip(verdicts, weights) if c is not None) or 1.0
        margin = sum(w if c == 1 else -w for c, w in zip(verdicts, weights) if c is not None) / total
        return margin if choice is not None else 0.0

    def _count_truncation(self, batch: dict, n: int) -> None:
        count_batch(self.truncated, batch, n)


def _second_first(first: str, second: str) -> bool:
    lo, hi = sorted((first, second))
    h = hashlib.blake2b(f"{lo}\x00{hi}".encode(), digest_size=8).digest()
    return bool(h[0] & 1) == (first == lo)


def _decided(verdicts: list[int | None], k: int) -> bool:
    need = k // 2 + 1
    return any(sum(1 for v in verdicts if v == c) >= need for c in (1, 2))
