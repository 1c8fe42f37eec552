"""`basereward data build RECIPE --out DIR`: public datasets -> one curated, memory-mapped pair set.

A recipe (YAML) lists sources, each `{adapter: NAME, path: FILE_OR_DIR, ...adapter options}`
with an optional size (`count: k` pairs, `fraction: f` of the source, or `share: s` of the
top-level `total`), plus curation settings:

    seed: 0                # every random choice derives from it
    dedup: true            # drop repeated (history, prompt, images, chosen, rejected), first kept
    length_target: null    # e.g. 0.5: resample each source so chosen is longer in 50% of pairs
    length_tolerance: 0.02 # a source already this close to the target is left alone
    text_ratio: null       # text-only pairs per multimodal pair (paper: 0.5); null keeps all
    total: null            # pairs the `share`s divide
    validation: 0          # pairs held out, spread equally across sources (ensembles use 1,000)
    order_balance: false   # mark half the pairs `swapped` (Response 1 = rejected) for judges
    sources: [...]

Steps, per source in recipe order: adapter -> dedup (across all sources) -> length resampling ->
size (count / fraction / share) -> MM:text ratio (across sources) -> validation split -> order
balance. Memory stays bounded: pass 1 streams every source once and keeps ~20 bytes per pair
(numpy), the curation decisions are masks on those numbers (`data/curation.py`), and pass 2
streams the sources again, keeping what the masks name, into an Arrow file in batches of 2,000
rows, which `datasets` memory-maps and lays out with `save_to_disk`. Output:

    DIR/dataset_dict.json, DIR/train/, DIR/validation/   `datasets.save_to_disk` (memory-mapped)
    DIR/images/       image bytes that were embedded in the data, written once, unchanged
    DIR/stats.json    {"pairs", "train", "validation", "multimodal", "text", "sources": {NAME: {...}}}
    DIR/summary.md    the same as tables

Rows are the pair format plus `length` (the training plan's sort key, so training never touches
every pair to get it) and `swapped`; image paths under DIR are relative to DIR, others absolute.
Torch-free.
"""

from __future__ import annotations

import os
import shutil
import uuid
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from basereward.data import curation
from basereward.data.schema import PreferencePair
from basereward.errors import ConfigError
from basereward.io import replace_dir, write_json, write_text

SIZE_KEYS = ("count", "fraction", "share")
_SOURCE_KEYS = ("name", "adapter", "path", "length_target", *SIZE_KEYS)
_TOP_KEYS = ("seed", "dedup", "length_target", "length_tolerance", "text_ratio", "total", "validation",
             "order_balance", "image_root", "sources")
# Seed streams of the random steps, so changing one step's settings never reshuffles another's.
_LENGTH, _SIZE, _RATIO, _VAL, _ORDER = range(5)


@dataclass(frozen=True)
class SourceSpec:
    name: str
    adapter: str
    path: str
    options: dict[str, Any] = field(default_factory=dict)
    count: int | None = None
    fraction: float | None = None
    share: float | None = None
    length_target: float | None = None


@dataclass(frozen=True)
class Recipe:
    sources: tuple[SourceSpec, ...]
    seed: int = 0
    dedup: bool = True
    length_target: float | None = None
    length_tolerance: float = 0.02
    text_ratio: float | None = None
    total: int | None = None
    validation: int = 0
    order_balance: bool = False
    image_root: str | None = None


def _number(where: str, value: Any, kind: type, lo: float, hi: float | None = None) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ConfigError(f"{where} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise ConfigError(f"{where} must be in [{lo}, {hi if hi is not None else 'inf'}], got {value}")
    return kind(value)


def parse_recipe(data: Any, base_dir: str = ".") -> Recipe:
    """A recipe mapping -> Recipe; ConfigError for unknown keys, bad values, unknown adapters.
    Relative source paths are taken from `base_dir` (the recipe file's folder)."""
    from basereward.data.sources.base import get_adapter

    if not isinstance(data, dict):
        raise ConfigError("a recipe must be a mapping with a `sources` list")
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise ConfigError(f"recipe: unknown key(s) {', '.join(unknown)}; known: {', '.join(_TOP_KEYS)}")
    raw = data.get("sources")
    if not isinstance(raw, list) or not raw:
        raise ConfigError("recipe: `sources` must be a non-empty list of {adapter, path, ...}")
    specs, names = [], set()
    for i, entry in enumerate(raw):
        where = f"recipe sources[{i}]"
        if not isinstance(entry, dict) or "adapter" not in entry or "path" not in entry:
            raise ConfigError(f"{where}: needs `adapter` and `path`")
        get_adapter(str(entry["adapter"]))  # unknown names fail here, before any reading
        name = str(entry.get("name") or entry["adapter"])
        if name in names:
            raise ConfigError(f"{where}: source name {name!r} used twice; give each entry its own `name`")
        names.add(name)
        sizes = [k for k in SIZE_KEYS if entry.get(k) is not None]
        if len(sizes) > 1:
            raise ConfigError(f"{where}: give at most one of count / fraction / share, got {', '.join(sizes)}")
        if "share" in sizes and data.get("total") is None:
            raise ConfigError(f"{where}: `share` needs a top-level `total` (the pairs the shares divide)")
        lt = entry.get("length_target")
        specs.append(SourceSpec(
            name=name, adapter=str(entry["adapter"]), path=os.path.join(base_dir, os.path.expanduser(str(entry["path"]))),
            options={k: v for k, v in entry.items() if k not in _SOURCE_KEYS},
            count=_number(f"{where}.count", entry["count"], int, 0) if "count" in sizes else None,
            fraction=_number(f"{where}.fraction", entry["fraction"], float, 0, 1) if "fraction" in sizes else None,
            share=_number(f"{where}.share", entry["share"], float, 0) if "share" in sizes else None,
            length_target=None if lt is None else _number(f"{where}.length_target", lt, float, 0, 1),
        ))
    opt = {k: data[k] for k in _TOP_KEYS if data.get(k) is not None and k != "sources"}
    for key, kind, lo, hi in (("seed", int, 0, None), ("length_target", float, 0, 1), ("length_tolerance", float, 0, 1),
                              ("text_ratio", float, 0, None), ("total", int, 0, None), ("validation", int, 0, None)):
        if key in opt:
            opt[key] = _number(f"recipe {key}", opt[key], kind, lo, hi)
    for key in ("dedup", "order_balance"):
        if key in opt and not isinstance(opt[key], bool):
            raise ConfigError(f"recipe {key} must be true or false, got {opt[key]!r}")
    if "image_root" in opt:
        opt["image_root"] = os.path.join(base_dir, str(opt["image_root"]))
    return Recipe(sources=tuple(specs), **opt)


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{os.fspath(path)}: cannot read recipe ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{os.fspath(path)}: invalid YAML ({exc})") from None
    return parse_recipe(data, base_dir=str(Path(path).resolve().parent))


# ---- pass 1: facts per pair ----------------------------------------------------------------


@dataclass
class _Facts:
    """What pass 1 keeps of each pair of one source (numpy after `done`)."""

    keys: Any = field(default_factory=lambda: array("Q"))
    sides: Any = field(default_factory=lambda: array("b"))
    mm: Any = field(default_factory=lambda: array("b"))
    chosen_len: Any = field(default_factory=lambda: array("I"))
    rejected_len: Any = field(default_factory=lambda: array("I"))
    adapter_stats: dict[str, Any] = field(default_factory=dict)

    def add(self, p: PreferencePair) -> None:
        lc, lr = len(p.chosen), len(p.rejected)
        self.keys.append(curation.pair_key(p))
        self.sides.append((lc > lr) - (lc < lr))
        self.mm.append(bool(p.images))
        self.chosen_len.append(min(lc, 0xFFFFFFFF))
        self.rejected_len.append(min(lr, 0xFFFFFFFF))

    def done(self) -> None:
        for name, dtype in (("keys", np.uint64), ("sides", np.int8), ("mm", np.bool_),
                            ("chosen_len", np.uint32), ("rejected_len", np.uint32)):
            setattr(self, name, np.frombuffer(getattr(self, name), dtype=dtype) if len(getattr(self, name))
                    else np.zeros(0, dtype=dtype))


def _stream(spec: SourceSpec, image_dir: str, image_root: str | None) -> tuple[Iterator[PreferencePair], Any]:
    from basereward.data.sources.base import SourceContext, get_adapter

    ctx = SourceContext(spec.name, image_dir=image_dir, image_root=image_root)
    return get_adapter(spec.adapter).read(spec.path, ctx, **spec.options), ctx


# ---- the decisions (masks) -------------------------------------------------------------------


def _plan(recipe: Recipe, facts: list[_Facts], stats: list[dict[str, Any]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(train mask, validation mask) per source; fills each source's `dropped` counts."""
    seed = recipe.seed
    keeps = [np.ones(len(f.keys), dtype=bool) for f in facts]
    if recipe.dedup and facts:
        first = curation.first_occurrences(np.concatenate([f.keys for f in facts]))
        offsets = np.cumsum([0] + [len(f.keys) for f in facts])
        for i in range(len(facts)):
            keeps[i] = first[offsets[i]:offsets[i + 1]].copy()
    for i, (spec, f) in enumerate(zip(recipe.sources, facts, strict=True)):
        stats[i]["dropped"] = {"duplicate": int((~keeps[i]).sum())}
        target = spec.length_target if spec.length_target is not None else recipe.length_target
        if target is not None:
            idx = np.flatnonzero(keeps[i])
            sub = curation.length_resample_mask(f.sides[idx], target, [seed, _LENGTH, i], recipe.length_tolerance)
            keeps[i][idx[~sub]] = False
            stats[i]["dropped"]["length"] = int((~sub).sum())
    # Sizes: count / fraction / share of what is left.
    share_sources = [i for i, s in enumerate(recipe.sources) if s.share is not None]
    share_quota = dict(zip(share_sources, curation.largest_remainder(
        [recipe.sources[i].share for i in share_sources], recipe.total or 0), strict=True))
    for i, spec in enumerate(recipe.sources):
        have = int(keeps[i].sum())
        want = (spec.count if spec.count is not None else round(spec.fraction * have) if spec.fraction is not None
                else share_quota[i] if spec.share is not None else have)
        if spec.count is not None or spec.share is not None:
            stats[i]["requested"] = want
        if want < have:
            idx = np.flatnonzero(keeps[i])
            sub = curation.sample_mask(len(idx), want, np.random.default_rng([seed, _SIZE, i]))
            keeps[i][idx[~sub]] = False
        stats[i]["dropped"]["size"] = have - int(keeps[i].sum())
    if recipe.text_ratio is not None:
        mm = [int((k & f.mm).sum()) for k, f in zip(keeps, facts, strict=True)]
        text = [int((k & ~f.mm).sum()) for k, f in zip(keeps, facts, strict=True)]
        q_mm, q_text = curation.text_ratio_quotas(mm, text, recipe.text_ratio)
        for i, f in enumerate(facts):
            before = int(keeps[i].sum())
            for side, quota in ((f.mm, q_mm[i]), (~f.mm, q_text[i])):
                idx = np.flatnonzero(keeps[i] & side)
                sub = curation.sample_mask(len(idx), quota, np.random.default_rng([seed, _RATIO, i, int(side[0]) if len(side) else 0]))
                keeps[i][idx[~sub]] = False
            stats[i]["dropped"]["text_ratio"] = before - int(keeps[i].sum())
    vals = [np.zeros(len(k), dtype=bool) for k in keeps]
    quotas = curation.validation_quotas([int(k.sum()) for k in keeps], recipe.validation)
    for i, q in enumerate(quotas):
        if q:
            idx = np.flatnonzero(keeps[i])
            pick = idx[curation.sample_mask(len(idx), q, np.random.default_rng([seed, _VAL, i]))]
            vals[i][pick], keeps[i][pick] = True, False
    return keeps, vals


# ---- pass 2: rows ----------------------------------------------------------------------------


def pair_length(p: PreferencePair) -> int:
    """The training plan's sort key: the same number as `scoring.length_estimate(p.to_group())`
    (characters of the longest sequence, 1000 per image), computed here so data stays torch-free."""
    return sum(len(c) for _, c in p.history) + len(p.prompt) + max(len(p.chosen), len(p.rejected)) + 1000 * len(p.images)


def row_of(p: PreferencePair, out_dir: str, swapped: bool = False) -> dict[str, Any]:
    """The stored row: pair fields, images under `out_dir` (a real path) relative to it,
    `length`, `swapped`. Adapters give real image paths already (`SourceContext.image_path`)."""
    prefix = out_dir + os.sep
    images = [path.removeprefix(prefix) for path in p.images]
    return {"id": p.id, "prompt": p.prompt, "images": images, "chosen": p.chosen, "rejected": p.rejected,
            "source": p.source, "category": p.category,
            "history": [{"role": r, "content": c} for r, c in p.history], "length": pair_length(p), "swapped": swapped}


def features():
    import datasets

    text = datasets.Value("string")
    return datasets.Features({
        "id": text, "prompt": text, "images": datasets.List(text), "chosen": text, "rejected": text,
        "source": text, "category": text, "history": datasets.List({"role": text, "content": text}),
        "length": datasets.Value("int64"), "swapped": datasets.Value("bool"),
    })


def _write_arrow(rows: Iterator[dict[str, Any]], feats: Any, path: Path, batch: int = 2000) -> None:
    """Stream rows into an Arrow IPC stream file (the format `datasets` memory-maps), `batch`
    rows at a time. Not `Dataset.from_generator`: it encodes each example through Python
    (`Features.encode_example`, ~0.2 ms a row, the bulk of a build); the rows here are already
    plain strings, lists and ints, which `RecordBatch.from_pylist` converts in C."""
    import pyarrow as pa

    schema = feats.arrow_schema
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        buf: list[dict[str, Any]] = []
        for row in rows:
            buf.append(row)
            if len(buf) == batch:
                writer.write_batch(pa.RecordBatch.from_pylist(buf, schema=schema))
                buf = []
        if buf:
            writer.write_batch(pa.RecordBatch.from_pylist(buf, schema=schema))


def build(recipe: Recipe, out: str | os.PathLike[str], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build `recipe` into `out` (replaced atomically when done); returns the stats."""
    import datasets

    from basereward.data.build_report import source_stats, summary_markdown, total_stats

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A real path: image paths from adapters are real paths, and rows store those under it relatively.
    tmp = Path(os.path.realpath(out.parent)) / f".{out.name}.build-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    image_dir = str(tmp / "images")
    try:
        facts, stats = [], []
        for spec in recipe.sources:
            pairs, ctx = _stream(spec, image_dir, recipe.image_root)
            f = _Facts()
            for p in pairs:
                f.add(p)
            f.done()
            facts.append(f)
            stats.append({"adapter": spec.adapter, "path": spec.path, **ctx.stats(len(f.keys))})
            stats[-1]["made"] = stats[-1].pop("pairs")
            log(f"[build] {spec.name}: {ctx.rows} rows -> {len(f.keys)} pairs")
        trains, vals = _plan(recipe, facts, stats)
        n_train, n_val = int(sum(m.sum() for m in trains)), int(sum(m.sum() for m in vals))
        swaps = ([curation.order_swaps(n, [recipe.seed, _ORDER, k]) for k, n in enumerate((n_train, n_val))]
                 if recipe.order_balance else [np.zeros(n_train, bool), np.zeros(n_val, bool)])
        val_rows: list[dict[str, Any]] = []  # at most `validation` rows (small), written after train

        def train_rows() -> Iterator[dict[str, Any]]:
            t = v = 0
            for i, spec in enumerate(recipe.sources):
                pairs, _ = _stream(spec, image_dir, recipe.image_root)
                for n, p in curation.take(pairs, trains[i] | vals[i]):
                    if not p.source:
                        p = replace(p, source=spec.name)
                    if vals[i][n]:
                        val_rows.append(row_of(p, str(tmp), bool(swaps[1][v])))
                        v += 1
                    else:
                        yield row_of(p, str(tmp), bool(swaps[0][t]))
                        t += 1

        feats = features()
        tmp.mkdir(exist_ok=True)
        staging = tmp / ".staging.arrow"
        _write_arrow(train_rows(), feats, staging)
        # Memory-mapped, then laid out by datasets' own save_to_disk (what load_from_disk reads).
        splits = {"train": datasets.Dataset.from_file(str(staging))}
        if val_rows:
            splits["validation"] = datasets.Dataset.from_list(val_rows, features=feats)
        datasets.DatasetDict(splits).save_to_disk(str(tmp))
        del splits
        staging.unlink()
        per_source = {spec.name: source_stats(stats[i], facts[i], trains[i], vals[i])
                      for i, spec in enumerate(recipe.sources)}
        result = total_stats(per_source, recipe)
        write_json(tmp / "stats.json", result)
        write_text(tmp / "summary.md", summary_markdown(result))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"[build] wrote {result['train']} training + {result['validation']} validation pairs to {out}")
    return result


def list_adapters() -> list[tuple[str, bool, str]]:
    """(name, multimodal, summary) of every registered adapter, by name."""
    import basereward.data.sources  # noqa: F401  (importing the package registers every adapter)
    from basereward.data.sources.base import ADAPTERS

    return [(a.name, a.multimodal, a.summary) for a in sorted(ADAPTERS.values(), key=lambda a: a.name)]
