"""Multimodal RewardBench (Yasunaga et al., 2025; github.com/facebookresearch/multimodal_rewardbench).

Layout: `all_data.json`, a JSON list of `{ID, Text, Image, Output1, Output2, Better, Category}`
with `Image` relative to the JSON's directory (`images/<source>/<file>`), as built by the
repo's `scripts/0_download_data.py`. `load` takes the JSON file or the directory holding it.
`Better` is `"Output1"` or `"Output2"`.

Metric: an item is correct when the `Better` response gets a strictly higher reward (ties are
wrong). Columns, as the repo's `scripts/2_get_accuracy.py` and README leaderboard define them:

- `General Correctness`: Category `open_generation/correctness_task`
- `General Preference`: Category `open_generation/preference_task`
- `Knowledge`: `knowledge`; `VQA`: `vqa`
- `Reasoning (Math)` / `Reasoning (Coding)`: Category `reasoning`, split by ID: IDs starting
  with `math` (MathVista) are math, the rest (EMMA-Coding, image2struct) coding
- `Safety (Bias)` / `Safety (Toxicity)`: Category `safety`, split by ID: IDs starting with
  `pairs` (PAIRS) are bias, the rest (hateful memes) toxicity

Categories already written as `reasoning/math`, `safety/bias`, ... (or `correctness/...`,
`preference/...`) map to the same columns. `Overall` is the micro accuracy over all items.
`Reasoning` and `Safety` are the unweighted means of their two sub-columns.

Uncertain: the leaderboard shows single Reasoning and Safety columns without saying whether
they pool items or average the sub-columns; we average the sub-columns (the paper's per-source
tables report the sub-columns separately). The repo gives no way to fetch the Hateful Memes
images (no-derivatives licence), so a local copy may hold no toxicity items; `Safety (Toxicity)`
is then null and `Safety` equals `Safety (Bias)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...data.paths import ImagePathError, resolve_image_path
from ...data.schema import Group
from ...errors import DataError
from ...io import iter_records
from ...metrics import accuracy_by_key, pair_accuracy
from . import BenchItem, check_scores, existing_path, field_of, mean_or_none, pair_rewards

NAME = "multimodal_rewardbench"
DEFINITION = (
    "Accuracy = fraction of items whose 'Better' response gets a strictly higher reward, per "
    "leaderboard column (Category, with reasoning split math/coding and safety split bias/toxicity "
    "by ID prefix), micro over all items (Overall), and Reasoning/Safety as the mean of their two "
    "sub-columns."
)
COLUMNS = (
    "General Correctness",
    "General Preference",
    "Knowledge",
    "Reasoning (Math)",
    "Reasoning (Coding)",
    "Safety (Bias)",
    "Safety (Toxicity)",
    "VQA",
)


def column_of(category: str, item_id: str) -> str | None:
    """The leaderboard column of an item, or None for an unknown category."""
    cat = category.strip().lower()
    head = cat.split("/")[0]
    tail = cat.split("/", 1)[1] if "/" in cat else ""
    key = item_id.lower()
    if head == "open_generation":
        head, tail = tail.split("_")[0], ""
    if head == "correctness":
        return "General Correctness"
    if head == "preference":
        return "General Preference"
    if head == "knowledge":
        return "Knowledge"
    if head == "vqa":
        return "VQA"
    if head == "reasoning":
        if tail:
            return {"math": "Reasoning (Math)", "coding": "Reasoning (Coding)"}.get(tail)
        return "Reasoning (Math)" if key.startswith("math") else "Reasoning (Coding)"
    if head == "safety":
        if tail:
            return {"bias": "Safety (Bias)", "toxicity": "Safety (Toxicity)"}.get(tail)
        return "Safety (Bias)" if key.startswith("pairs") else "Safety (Toxicity)"
    return None


def load(path: str, image_root: str | None = None) -> list[BenchItem]:
    """Items from `all_data.json` (or a directory holding it); image paths become absolute real
    paths, confined to `image_root` when one is given."""
    p = existing_path(path)
    file = p / "all_data.json" if p.is_dir() else p
    existing_path(file)
    base = file.parent
    items = []
    for where, rec in iter_records(file):
        item_id = str(field_of(rec, "ID", where, (str, int)))
        where = f"{where} (ID {item_id})"
        text = field_of(rec, "Text", where)
        outputs = (field_of(rec, "Output1", where), field_of(rec, "Output2", where))
        better = field_of(rec, "Better", where)
        if better not in ("Output1", "Output2"):
            raise DataError(f"{where}: Better should be 'Output1' or 'Output2', got {better!r}")
        category = field_of(rec, "Category", where)
        column = column_of(category, item_id)
        if column is None:
            raise DataError(f"{where}: unknown Category {category!r}")
        name = field_of(rec, "Image", where)
        try:
            image = resolve_image_path(name, base_dir=str(base), root=image_root)
        except ImagePathError as exc:
            raise DataError(f"{where}: {exc.reason}: {base / name}") from None
        meta = {"category": category, "column": column, "preferred": 0 if better == "Output1" else 1}
        group = Group(prompt=text, responses=outputs, images=(image,))
        items.append(BenchItem(id=item_id, group=group, meta=meta))
    return items


def metrics(items: Sequence[BenchItem], scores: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Per-column accuracy, Overall (micro) and the Reasoning/Safety means."""
    check_scores(items, scores)
    chosen, rejected = pair_rewards(items, scores)
    by_column = accuracy_by_key(chosen, rejected, [item.meta["column"] for item in items])
    acc = {c: by_column[c]["accuracy"] if c in by_column else None for c in COLUMNS}
    result: dict[str, Any] = {"Overall": pair_accuracy(chosen, rejected)}
    result.update(acc)
    for name in ("Reasoning", "Safety"):
        parts = [acc[c] for c in COLUMNS if c.startswith(name + " (") and acc[c] is not None]
        result[name] = mean_or_none(parts)
    result["counts"] = {c: by_column[c]["n"] if c in by_column else 0 for c in COLUMNS}
    return result
