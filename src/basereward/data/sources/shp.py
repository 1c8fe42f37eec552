"""Stanford Human Preferences (`stanfordnlp/SHP`) -> text pairs.

Published row: `{post_id, domain, upvote_ratio, history, c_root_id_A, c_root_id_B,
created_at_utc_A, created_at_utc_B, score_A, score_B, human_ref_A, human_ref_B, labels,
seconds_difference, score_ratio}`: `history` is the Reddit post (the prompt), `human_ref_A/B`
two top-level comments, `labels` 1 when A is preferred and 0 when B is, `score_ratio` the
preferred comment's score over the other's (>= 1). The published files are one directory per
subreddit holding `train.json` / `validation.json` / `test.json`, each in JSON Lines despite
the `.json` suffix; those are read line by line (parquet and `save_to_disk` copies as usual).

Option `min_score_ratio` (default none): keep only rows whose `score_ratio` is at least this
(the SHP authors suggest 2 for a cleaner signal); others are skipped ("score_ratio below N").
Pair ids are `{source}:{row}:{post_id}:{c_root_id_A}:{c_root_id_B}`; category is the domain.
"""

from __future__ import annotations

from collections.abc import Iterator

from basereward.data.schema import PreferencePair
from basereward.data.sources.base import SourceContext, iter_source_rows, register
from basereward.data.sources.chat import number, require_columns, text_problem
from basereward.errors import ConfigError

_COLUMNS = ("history", "human_ref_A", "human_ref_B", "labels")


@register("shp", multimodal=False, summary="stanfordnlp/SHP: Reddit post + two comments, preferred by votes (min_score_ratio)")
def read(path: str, ctx: SourceContext, *, min_score_ratio: float | None = None) -> Iterator[PreferencePair]:
    # A number only (YAML `2` or `2.5`); a quoted "2" in a recipe is refused like any mistyped option.
    threshold = None if isinstance(min_score_ratio, str) else number(min_score_ratio)
    if min_score_ratio is not None and (threshold is None or threshold < 1):
        raise ConfigError(f"shp: min_score_ratio must be a number >= 1 (score_ratio is >= 1), got {min_score_ratio!r}")
    for where, row in iter_source_rows(path):
        ctx.row()
        index = ctx.rows - 1
        require_columns(row, where, _COLUMNS, "SHP")
        label = row["labels"]
        if isinstance(label, bool) or label not in (0, 1):
            ctx.skip("label is not 0 or 1")
            continue
        if threshold is not None:
            ratio = number(row.get("score_ratio"))
            if ratio is None or ratio < threshold:
                ctx.skip(f"score_ratio below {threshold:g}")
                continue
        a, b = row["human_ref_A"], row["human_ref_B"]
        chosen, rejected = (a, b) if label == 1 else (b, a)
        problem = text_problem(row["history"], chosen, rejected)
        if problem:
            ctx.skip(problem)
            continue
        ids = [row.get(k) for k in ("post_id", "c_root_id_A", "c_root_id_B")]
        yield PreferencePair(
            id=ctx.pair_id(index, *(i for i in ids if i not in (None, ""))),
            prompt=row["history"],
            chosen=chosen,
            rejected=rejected,
            source=ctx.name,
            category=row["domain"] if isinstance(row.get("domain"), str) else "",
        )
