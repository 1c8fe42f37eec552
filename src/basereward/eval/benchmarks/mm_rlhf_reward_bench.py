"""MM-RLHF-Reward Bench (Zhang et al., 2025; HF dataset `yifanzhang114/MM-RLHF-RewardBench`).

Layout: `mm_reward_bench.jsonl` (170 pairs), one record per pair:
`{id, prompt, chosen, rejected, chosen_reason, rejected_reason, image | video}` where `image`
is an image path and `video` a directory of frame images, both relative to the file's directory
(or to its `images/` folder, as the HF repo ships them). Several pairs share an `id` (one
question, several rejected answers). A JSON list or parquet file with the same fields also
loads; `load` takes the file or a directory holding `mm_reward_bench.jsonl`.

Category: an explicit `category` field if present, else, as in the reference script
(MM-RLHF `llava/eval/cal_performance_mmreweard_bench.py`), the first of `mcq`, `long`, `short`,
`safety`, `video` that occurs in the image/video path.

Videos: like the reference evaluator, 32 frames at `numpy.linspace(0, n - 1, 32, dtype=int)` over
the sorted frame files (frames repeat when a clip has fewer than 32).

Metric: a pair is correct when r(chosen) > r(rejected) strictly (ties are wrong). `Acc` is the
fraction of correct pairs; `Acc+` the fraction of ids all of whose pairs are correct. Per
category both are reported: `Acc` over the category's pairs, `Acc+` over the ids having a pair
in the category (the reference credits an id spanning several categories to the first of them
only; the two agree whenever each id stays within one category).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...data.paths import OUTSIDE_ROOT, ImagePathError, confine
from ...data.schema import Group
from ...errors import DataError
from ...io import iter_records
from ...metrics import accuracy_by_key, correct, pair_accuracy
from . import BenchItem, check_scores, existing_path, field_of, mean_or_none, pair_rewards, record_id

NAME = "mm_rlhf_reward_bench"
DEFINITION = (
    "Acc = fraction of pairs with r(chosen) > r(rejected) strictly; Acc+ = fraction of question ids "
    "all of whose pairs are correct; both overall and per category (mcq, long, short, safety, video)."
)
CATEGORIES = ("mcq", "long", "short", "safety", "video")
VIDEO_FRAMES = 32
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def load(path: str, video_frames: int = VIDEO_FRAMES, image_root: str | None = None) -> list[BenchItem]:
    """Pairs from the JSONL (or a directory holding `mm_reward_bench.jsonl`); images and frames
    confined to `image_root` when one is given."""
    p = existing_path(path)
    file = p / "mm_reward_bench.jsonl" if p.is_dir() else p
    existing_path(file)
    base = file.parent
    items = []
    seen: dict[str, int] = defaultdict(int)
    for where, rec in iter_records(file):
        qid = record_id(rec, where)
        where = f"{where} (id {qid})"
        prompt = field_of(rec, "prompt", where)
        chosen = field_of(rec, "chosen", where)
        rejected = field_of(rec, "rejected", where)
        media = rec.get("image") or rec.get("video") or ""
        if not isinstance(media, str):
            raise DataError(f"{where}: 'image' / 'video' should be a path string")
        category = rec.get("category") or next((c for c in CATEGORIES if c in media), None)
        if category not in CATEGORIES:
            raise DataError(f"{where}: cannot tell the category (no 'category' field; path {media!r})")
        if rec.get("image"):
            images: tuple[str, ...] = (str(_resolve(base, rec["image"], where, False, image_root)),)
        elif rec.get("video"):
            frames = _resolve(base, rec["video"], where, True, image_root)
            images = _frames(frames, video_frames, where, image_root)
        else:
            images = ()
        meta = {"question_id": qid, "category": category, "preferred": 0}
        group = Group(prompt=prompt, responses=(chosen, rejected), images=images)
        # Ids repeat across a question's pairs; the suffix keeps item ids unique.
        items.append(BenchItem(id=f"{qid}#{seen[qid]}", group=group, meta=meta))
        seen[qid] += 1
    return items


def _resolve(base: Path, rel: str, where: str, want_dir: bool, root: str | None) -> Path:
    """The media path, tried beside the file and under its `images/` folder (inside `root`)."""
    outside = False
    for cand in (Path(rel), base / rel, base / "images" / rel):
        try:
            real = Path(confine(str(cand), root=root))
        except ImagePathError:
            outside = True
            continue
        if real.is_dir() if want_dir else real.is_file():
            return real
    if outside:
        raise DataError(f"{where}: {OUTSIDE_ROOT}: {rel}")
    kind = "video frame directory" if want_dir else "image"
    raise DataError(f"{where}: {kind} not found: {rel} (looked in {base} and {base / 'images'})")


def _frames(directory: Path, count: int, where: str, root: str | None) -> tuple[str, ...]:
    files = sorted(f for f in directory.iterdir() if f.is_file() and f.suffix.lower() in _IMAGE_SUFFIXES)
    for f in files:  # a frame may be a symlink out of the root
        try:
            confine(str(f), root=root)
        except ImagePathError:
            raise DataError(f"{where}: {OUTSIDE_ROOT}: {f}") from None
    if not files:
        raise DataError(f"{where}: video directory {directory} holds no frame images")
    picks = np.linspace(0, len(files) - 1, count, dtype=int)
    return tuple(str(files[i]) for i in picks)


def metrics(items: Sequence[BenchItem], scores: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Acc and Acc+ overall and per category; see the module docstring."""
    check_scores(items, scores)
    chosen, rejected = pair_rewards(items, scores)
    flags = correct(chosen, rejected).tolist()
    by_category = accuracy_by_key(chosen, rejected, [item.meta["category"] for item in items])
    by_question: dict[str, list[bool]] = defaultdict(list)
    for item, ok in zip(items, flags):
        by_question[item.meta["question_id"]].append(ok)
    question_ok = {q: all(flags) for q, flags in by_question.items()}

    per_category: dict[str, Any] = {}
    for cat in CATEGORIES:
        if cat not in by_category:
            continue
        questions = {item.meta["question_id"] for item in items if item.meta["category"] == cat}
        per_category[cat] = {
            "Acc": by_category[cat]["accuracy"],
            "Acc+": mean_or_none([float(question_ok[q]) for q in sorted(questions)]),
            "num_pairs": by_category[cat]["n"],
            "num_questions": len(questions),
        }
    return {
        "Acc": pair_accuracy(chosen, rejected),
        "Acc+": mean_or_none([float(v) for v in question_ok.values()]),
        "num_pairs": len(items),
        "num_questions": len(question_ok),
        "per_category": per_category,
    }
