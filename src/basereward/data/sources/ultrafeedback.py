"""UltraFeedback (`openbmb/UltraFeedback`) -> text pairs, Ultra-Hard or Ultra-All.

Published row: `{source, instruction, models, correct_answers, incorrect_answers, completions:
[{model, principle, custom_system_prompt, response, annotations: {instruction_following,
honesty, truthfulness, helpfulness: {Rating: "1".."5" | "N/A", Rationale, ...}}, critique,
overall_score, fine-grained_score}, ...]}` (about four completions per instruction).

Options:
* `construction: hard` (default; the paper's "Ultra-Hard", its best text set): per instruction
  the highest- against the lowest-scored completion (`curation.ultra_hard`: the widest score gap;
  among equal gaps the earliest completions). `construction: all` ("Ultra-All"): every pair of
  completions whose scores differ (`curation.ranking_to_pairs`), higher score chosen.
* `score: overall` (default; the dataset's `overall_score`, critique-based 1-10, as corrected
  upstream in Dec 2023), `fine-grained` (`fine-grained_score`, the mean aspect rating), or
  `ratings` (the mean of the four aspect `Rating`s recomputed here, each "N/A" left out).

Ties and "N/A" are explicit: a completion without a usable score ("N/A", null, NaN) or with an
empty response takes no part in its row's pairs; tied completions never form a pair. A row
with fewer than two scored completions is skipped ("fewer than 2 scored completions"), one whose
scores are all equal is skipped ("all scores tied"). Pair ids are `{source}:{row}-{i}-{j}`, with
i < j positions among the row's scored completions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from basereward.data.curation import Ranking, ranking_to_pairs, ultra_hard
from basereward.data.schema import PreferencePair
from basereward.data.sources.base import SourceContext, iter_source_rows, register
from basereward.data.sources.chat import number, require_columns
from basereward.errors import ConfigError

CONSTRUCTIONS = ("hard", "all")
ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")


def _mean_rating(completion: dict[str, Any]) -> float | None:
    """Mean of the aspect ratings that are numbers ("N/A" ones left out); None if none is."""
    annotations = completion.get("annotations")
    if not isinstance(annotations, dict):
        return None
    ratings = []
    for aspect in ASPECTS:
        entry = annotations.get(aspect)
        rating = number(entry.get("Rating")) if isinstance(entry, dict) else None
        if rating is not None:
            ratings.append(rating)
    return sum(ratings) / len(ratings) if ratings else None


SCORES: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "overall": lambda c: number(c.get("overall_score")),
    "fine-grained": lambda c: number(c.get("fine-grained_score")),
    "ratings": _mean_rating,
}


@register(
    "ultrafeedback",
    multimodal=False,
    summary="openbmb/UltraFeedback: scored completions -> Ultra-Hard (construction: hard) or Ultra-All pairs",
)
def read(path: str, ctx: SourceContext, *, construction: str = "hard", score: str = "overall") -> Iterator[PreferencePair]:
    if construction not in CONSTRUCTIONS:
        raise ConfigError(f"ultrafeedback: construction must be one of {', '.join(CONSTRUCTIONS)}, got {construction!r}")
    if score not in SCORES:
        raise ConfigError(f"ultrafeedback: score must be one of {', '.join(SCORES)}, got {score!r}")
    score_of = SCORES[score]
    for where, row in iter_source_rows(path):
        ctx.row()
        index = ctx.rows - 1
        require_columns(row, where, ("instruction", "completions"), "UltraFeedback")
        instruction, completions = row["instruction"], row["completions"]
        if not isinstance(instruction, str) or not instruction.strip():
            ctx.skip("empty prompt")
            continue
        if not isinstance(completions, list):
            ctx.skip("no completions")
            continue
        responses, scores = [], []
        for completion in completions:
            if not isinstance(completion, dict):
                continue
            text, value = completion.get("response"), score_of(completion)
            if isinstance(text, str) and text.strip() and value is not None:
                responses.append(text)
                scores.append(value)
        if len(responses) < 2:
            ctx.skip("fewer than 2 scored completions")
            continue
        ranking = Ranking(
            id=ctx.pair_id(index),
            prompt=instruction,
            responses=tuple(responses),
            scores=tuple(scores),
            source=ctx.name,
            category=row["source"] if isinstance(row.get("source"), str) else "",
        )
        pairs = ranking_to_pairs(ranking) if construction == "all" else [p for p in [ultra_hard(ranking)] if p]
        if not pairs:
            # ranking_to_pairs drops tied scores and identical texts; name the cause.
            ctx.skip("all scores tied" if len(set(scores)) == 1 else "identical responses")
            continue
        yield from pairs
