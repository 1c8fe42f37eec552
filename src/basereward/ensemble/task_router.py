"""Task-aware routing between reward sources (BaseReward Appendix D.10): each group goes to one source
(e.g. the Naive-RM or a generative judge), chosen per task key on validation pairs.

Task key of a group (`TaskRules.key_of`): `<modality>/<question type>`, modality "image" when the
group has images else "text"; the question type is the first rule of an ordered keyword table
(`QUESTION_TYPES`, stored in the router's JSON and replaceable) with a keyword among the prompt's
first `window` words (lower-cased; a keyword starting with "^" must open the prompt), else "other".

Why not the pair's `category`: a `Group` (what eval, the server and the RL rewards score) carries
none, so a route keyed on it could not be applied when serving. The fit report gives each
source's accuracy per category as well; a category that wants another source becomes a keyword
rule. In code, `task_of(group) -> key` replaces the rules (such a router cannot be saved).

Fit (`fit_task_router`): after one untimed warm-up judgement, every source scores the validation
pairs of each key in one call, timed, so a key's cost is seconds per judgement (one pair) measured
on that pass. Keys are pooled at three levels, full key, modality and "*" (all pairs); a level-key with at least `min_pairs` pairs gets a
route: the source with the best validation accuracy (ties are wrong, `metrics.correct`) among
those whose cost is within `budget` seconds per judgement (the cheapest source when none is; ties
go to the cheaper source). Scoring backs off full key -> modality -> "*". The report (JSON and a
Markdown table) gives per key the accuracy and cost of each source and the choice, plus the
routed total on the same pairs (in-sample: measure held-out accuracy with `basereward eval`).
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import metrics
from ..data.schema import Group, PreferencePair
from ..errors import BaseRewardError
from ..io import write_text
from ..scoring.interface import (
    RewardSource,
    ScoringMixin,
    score_checked,
    scores_with_uncertainty,
)
from . import storage
from .storage import Loader

KIND = "task-router"
ALL = "*"
QUESTION_TYPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("safety", ("kill", "weapon", "bomb", "steal", "hack", "poison", "illegal", "hurt")),
    ("chart", ("chart", "bar", "plot", "graph", "column")),
    ("count", ("how many", "count", "number of")),
    ("colour", ("colour", "color", "paint")),
    ("spatial", ("left", "right", "above", "below", "side of", "next to")),
    ("shape", ("shape", "form", "figure")),
    ("describe", ("describe", "caption", "what can you see", "what is in")),
    ("code", ("code", "python", "function", "program")),
    ("math", ("calculate", "solve", "sum", "plus", "minus", "times", "equation")),
    ("yes-no", ("^is", "^are", "^does", "^do", "^can", "^was", "^were", "^has", "^have", "^will", "^should")),
)


@dataclass(frozen=True)
class TaskRules:
    """Keyword rules: [(question type, keywords)], first match wins; `window` = words looked at."""

    question_types: tuple[tuple[str, tuple[str, ...]], ...] = QUESTION_TYPES
    window: int = 12
    _patterns: tuple[tuple[str, re.Pattern[str]], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pats = []
        for name, words in self.question_types:
            if not name or "/" in name or not words:
                raise BaseRewardError(f"task rules: question type {name!r} needs a name without '/' and keywords")
            alts = [("^" if w.startswith("^") else r"\b") + re.escape(w.lstrip("^").lower()) + r"\b" for w in words]
            pats.append((name, re.compile("|".join(alts))))
        object.__setattr__(self, "_patterns", tuple(pats))

    def question_type(self, prompt: str) -> str:
        head = " ".join(prompt.lower().split()[: self.window])
        return next((name for name, pat in self._patterns if pat.search(head)), "other")

    def key_of(self, group: Group) -> str:
        return f"{'image' if group.images else 'text'}/{self.question_type(group.prompt)}"

    def to_json(self) -> dict[str, Any]:
        return {"window": self.window, "question_types": [[n, list(w)] for n, w in self.question_types]}

    @classmethod
    def from_json(cls, spec: dict[str, Any]) -> TaskRules:
        try:
            types = tuple((str(n), tuple(str(w) for w in ws)) for n, ws in spec["question_types"])
            return cls(types, int(spec.get("window", 12)))
        except (KeyError, TypeError, ValueError) as e:
            raise BaseRewardError(f"task rules: expected {{question_types: [[name, [keywords]]], window}}: {e}") from e


def backoff(key: str) -> list[str]:
    """The level-keys a key falls back through: 'image/count' -> ['image/count', 'image', '*']."""
    return [key, key.split("/", 1)[0], ALL] if "/" in key else [key, ALL]


def choose(accuracy: Sequence[float], cost: Sequence[float], budget: float | None) -> tuple[int, str]:
    """(source index, why): best accuracy within the budget (cost ties: the cheaper), else the cheapest."""
    idx = list(range(len(accuracy)))
    fits = [i for i in idx if budget is None or cost[i] <= budget]
    if not fits:
        return min(idx, key=lambda i: (cost[i], i)), "none within budget: cheapest"
    best = min(fits, key=lambda i: (-accuracy[i], cost[i], i))
    return best, "best accuracy" + (" within budget" if budget is not None and len(fits) < len(idx) else "")


class TaskRouter(ScoringMixin):
    """Groups routed to `sources` by task key (`routes`: level-key -> source name, with backoff)."""

    def __init__(self, sources: Sequence[RewardSource], names: Sequence[str], routes: dict[str, str],
                 rules: TaskRules | None = None, paths: Sequence[str] | None = None,
                 report: dict[str, Any] | None = None, task_of: Callable[[Group], str] | None = None) -> None:
        self.sources, self.names = list(sources), list(names)
        if len(self.names) != len(self.sources) or len(set(self.names)) != len(self.names):
            raise BaseRewardError(f"task router: {len(self.sources)} sources need as many distinct names, got {self.names}")
        bad = {k: v for k, v in routes.items() if v not in self.names}
        if bad or ALL not in routes:
            raise BaseRewardError(f"task router: routes need a '*' entry and known source names (bad: {bad})")
        self.routes, self.rules, self.task_of = dict(routes), rules or TaskRules(), task_of
        self.paths = list(paths) if paths is not None else None
        self.report = dict(report or {})
        self.counts = dict.fromkeys(self.names, 0)

    @property
    def members(self) -> list[RewardSource]:
        return self.sources

    def key_of(self, group: Group) -> str:
        return self.task_of(group) if self.task_of is not None else self.rules.key_of(group)

    def route_of(self, group: Group) -> str:
        """The name of the source that scores `group`."""
        return next(self.routes[k] for k in backoff(self.key_of(group)) if k in self.routes)

    def _route(self, groups: Sequence[Group], call: Callable[[Any, list[Group], str], list[Any]]) -> list[Any]:
        by_source: dict[str, list[int]] = defaultdict(list)
        for i, g in enumerate(groups):
            by_source[self.route_of(g)].append(i)
        out: list[Any] = [None] * len(groups)
        for name, source in zip(self.names, self.sources):
            idx = by_source.get(name)
            if idx:  # one batched call per source
                for i, r in zip(idx, call(source, [groups[i] for i in idx], name)):
                    out[i] = r
                self.counts[name] += len(idx)
        return out

    def score_groups(self, groups: Sequence[Group]) -> list[list[float]]:
        return self._route(groups, lambda s, gs, name: score_checked(s, gs, name))

    def score_groups_with_uncertainty(self, groups: Sequence[Group]) -> tuple[list[list[float]], list[list[float]]]:
        both = self._route(groups, lambda s, gs, name: list(zip(*scores_with_uncertainty(s, gs))))
        return [list(s) for s, _ in both], [list(u) for _, u in both]

    def routing_report(self) -> dict[str, Any]:
        """Groups routed to each source since construction."""
        return dict(self.counts)

    def to_json(self) -> dict[str, Any]:
        if self.paths is None:
            raise BaseRewardError("this task router has no source paths, so it cannot be saved")
        if self.task_of is not None:
            raise BaseRewardError("a task router with a task_of function cannot be saved (its keys would not reload)")
        return {"format_version": storage.FORMAT_VERSION, "kind": KIND,
                "sources": [{"name": n, "path": p} for n, p in zip(self.names, self.paths)],
                "routes": self.routes, "rules": self.rules.to_json(), "report": self.report}

    def save(self, directory: str) -> str:
        """Write `directory/ensemble.json` (kind "task-router") and `routing.md` (the report's table)."""
        path = storage.write_spec(directory, self.to_json(), self.paths or [])
        if self.report:
            write_text(os.path.join(directory, "routing.md"), report_markdown(self.report))
        return path

    @classmethod
    def from_json(cls, spec: dict[str, Any], directory: str, loader: Loader) -> TaskRouter:
        if spec.get("kind") != KIND:
            raise BaseRewardError(f"{directory}: {storage.ENSEMBLE_FILE} has kind {spec.get('kind')!r}, not {KIND!r}")
        srcs = spec.get("sources")
        if not isinstance(srcs, list) or not all(isinstance(s, dict) and {"name", "path"} <= s.keys() for s in srcs):
            raise BaseRewardError(f"{directory}: {storage.ENSEMBLE_FILE} needs \"sources\": [{{name, path}}, ...]")
        return cls([storage.load_member(s["path"], directory, loader) for s in srcs], [s["name"] for s in srcs],
                   spec.get("routes", {}), TaskRules.from_json(spec.get("rules", {})),
                   paths=[s["path"] for s in srcs], report=spec.get("report"))

    @classmethod
    def load(cls, directory: str, loader: Loader) -> TaskRouter:
        return cls.from_json(storage.read_spec(directory, KIND), directory, loader)


def fit_task_router(sources: Sequence[RewardSource], val_pairs: Sequence[PreferencePair], names: Sequence[str],
                    paths: Sequence[str] | None = None, rules: TaskRules | None = None, budget: float | None = None,
                    min_pairs: int = 5, task_of: Callable[[Group], str] | None = None) -> TaskRouter:
    """Measure every source per task key on `val_pairs` and return the router with its report."""
    if not val_pairs or not sources:
        raise BaseRewardError("fit_task_router needs at least one source and one validation pair")
    rules = rules or TaskRules()
    groups = [p.to_group() for p in val_pairs]
    keys = [task_of(g) if task_of is not None else rules.key_of(g) for g in groups]
    S, N = len(sources), len(groups)
    ok = np.zeros((S, N), dtype=bool)  # source s ranks pair n right
    cost = np.zeros((S, N))  # seconds per judgement, the key's batch time spread over its pairs
    by_key: dict[str, list[int]] = defaultdict(list)
    for n, k in enumerate(keys):
        by_key[k].append(n)
    for s, (source, name) in enumerate(zip(sources, names)):
        # One untimed judgement first, so lazy set-up (weights to device, an LM head read from disk)
        # is not charged to whichever key happens to be scored first.
        score_checked(source, groups[:1], name)
        for idx in by_key.values():
            start = time.perf_counter()
            scores = score_checked(source, [groups[n] for n in idx], name)
            seconds = time.perf_counter() - start
            ok[s, idx] = metrics.correct([x[0] for x in scores], [x[1] for x in scores])
            cost[s, idx] = seconds / len(idx)
    members: dict[str, list[int]] = defaultdict(list)  # level-key -> pairs
    for n, k in enumerate(keys):
        for level in backoff(k):
            members[level].append(n)
    routes, rows = {}, []
    for level in sorted(members, key=lambda k: (k != ALL, k.count("/"), k)):
        idx = members[level]
        acc, sec = [float(ok[s, idx].mean()) for s in range(S)], [float(cost[s, idx].mean()) for s in range(S)]
        row: dict[str, Any] = {"key": level, "pairs": len(idx),
                               "sources": {n: {"accuracy": a, "seconds_per_judgement": c} for n, a, c in zip(names, acc, sec)}}
        if len(idx) >= min_pairs or level == ALL:
            best, why = choose(acc, sec, budget)
            routes[level] = names[best]
            row.update(choice=names[best], reason=why)
        else:
            row.update(choice=None, reason=f"fewer than {min_pairs} pairs: backs off")
        rows.append(row)
    router = TaskRouter(sources, names, routes, rules, paths=paths, task_of=task_of)
    pick = [names.index(router.route_of(g)) for g in groups]
    routed = {"accuracy": float(np.mean([ok[s, n] for n, s in enumerate(pick)])),
              "seconds_per_judgement": float(np.mean([cost[s, n] for n, s in enumerate(pick)])),
              "pairs_per_source": {name: pick.count(s) for s, name in enumerate(names)}}
    cats = [p.category or metrics.UNLABELLED for p in val_pairs]
    per_category = {c: {name: float(ok[s, [n for n in range(N) if cats[n] == c]].mean()) for s, name in enumerate(names)}
                    for c in sorted(set(cats))}
    router.report = {"budget_seconds_per_judgement": budget, "min_pairs": min_pairs, "n_pairs": N, "keys": rows,
                     "routed": routed, "accuracy_per_category": per_category}
    return router


def report_markdown(report: dict[str, Any]) -> str:
    """The fit report as a Markdown table: per key, each source's accuracy and ms per judgement, the choice."""
    rows = report["keys"]
    names = list(rows[0]["sources"]) if rows else []
    head = "| key | pairs | " + " | ".join(f"{n} acc | {n} ms/judgement" for n in names) + " | choice |"
    lines = [head, "|" + "---|" * (3 + 2 * len(names))]
    for r in rows:
        cells = [f"{100 * r['sources'][n]['accuracy']:.1f}% | {1000 * r['sources'][n]['seconds_per_judgement']:.2f}"
                 for n in names]
        lines.append(f"| {r['key']} | {r['pairs']} | " + " | ".join(cells) + f" | {r['choice'] or '(backs off)'} |")
    routed = report["routed"]
    budget = report.get("budget_seconds_per_judgement")
    lines += ["", f"Routed (in-sample, {report['n_pairs']} validation pairs): accuracy "
              f"{100 * routed['accuracy']:.1f}%, {1000 * routed['seconds_per_judgement']:.2f} ms per judgement; "
              f"budget: {'none' if budget is None else f'{1000 * budget:.2f} ms'}; pairs per source "
              + ", ".join(f"{k} {v}" for k, v in routed["pairs_per_source"].items()) + "."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- command line (basereward grm route)
def add_route_arguments(p: Any) -> None:
    p.add_argument("--sources", nargs="+", required=True, help="model / judge / ensemble / critic-RM directories")
    p.add_argument("--names", nargs="*", default=None)
    p.add_argument("--val", required=True, help="validation pair file the routes are fitted on")
    p.add_argument("--output", required=True, help="directory for ensemble.json (kind task-router) and routing.md")
    p.add_argument("--budget", type=float, default=None, help="max seconds per judgement a route may cost")
    p.add_argument("--min-pairs", type=int, default=5, help="fewest validation pairs for a key of its own")
    p.add_argument("--rules", default="", help="JSON {question_types: [[name, [keywords]]], window} (default table)")
    p.add_argument("--batch-size", type=int, default=16)


def run_route_command(args: Any, loader: Callable[..., RewardSource]) -> int:
    """Fit and save a task router; `loader(path, batch_size=...)` loads each source (load_scorer)."""
    from ..data.pairs import load_pairs
    from ..io import read_json, write_json

    out = os.path.abspath(args.output)
    names = args.names or [os.path.basename(os.path.normpath(s)) for s in args.sources]
    if len(names) != len(args.sources):
        raise BaseRewardError(f"--names: {len(names)} names for {len(args.sources)} sources")
    rules = TaskRules.from_json(read_json(args.rules)) if args.rules else TaskRules()
    sources = [loader(s, batch_size=args.batch_size) for s in args.sources]
    router = fit_task_router(sources, load_pairs(args.val, on_error="fail"), names,
                             paths=[os.path.relpath(os.path.abspath(s), out) for s in args.sources],
                             rules=rules, budget=args.budget, min_pairs=args.min_pairs)
    os.makedirs(out, exist_ok=True)
    router.save(out)
    write_json(os.path.join(out, "routing.json"), router.report)
    print(report_markdown(router.report))
    print(f"wrote {out}")
    return 0
