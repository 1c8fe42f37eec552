"""Reading a `basereward data build` directory as pairs, without loading it.

`BuiltPairs` is a `Sequence[PreferencePair]` over one split of the memory-mapped Arrow dataset:
`pairs[i]` reads row i from the mapped file and makes its pair then, so a process holds the
pairs it is collating, never the set (the OS pages the file in and out). `lengths()` reads the
`length` column the build wrote (4-8 bytes per pair), which is all the training plan needs to
see of every pair. It pickles as the file paths, so DataLoader workers reopen the mapping.

Why no `datasets.distributed.split_dataset_by_node`: the training plan already gives each
process its own micro-batches of every global batch (by index), and random access into a
mapped table costs the same on every rank; splitting the rows by node first would change which
pairs form a global batch with the number of processes, and with it the exact-resume and
batch-size invariance the plan guarantees.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from basereward.data.schema import PreferencePair
from basereward.errors import DataError


def is_build_dir(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / "dataset_dict.json").is_file() and (Path(path) / "train").is_dir()


class BuiltPairs(Sequence[PreferencePair]):
    """One split (`train` / `validation`) of a build directory, pairs made on access."""

    def __init__(self, build_dir: str | os.PathLike[str], split: str = "train") -> None:
        import datasets

        self.dir = os.path.realpath(build_dir)
        self.split = split
        if not is_build_dir(self.dir):
            raise DataError(f"{os.fspath(build_dir)}: not a `basereward data build` directory "
                            "(no dataset_dict.json + train/)")
        where = Path(self.dir) / split
        if not where.is_dir():
            raise DataError(f"{os.fspath(build_dir)}: the build has no {split!r} split "
                            f"(recipe `validation: N` writes one)")
        try:
            self._ds = datasets.load_from_disk(str(where))
        except Exception as exc:  # noqa: BLE001  (datasets raises several types for a damaged directory)
            raise DataError(f"{where}: not a readable datasets directory ({exc})") from None
        missing = {"id", "prompt", "images", "chosen", "rejected", "length"} - set(self._ds.column_names)
        if missing:
            raise DataError(f"{where}: missing column(s) {', '.join(sorted(missing))}; rebuild with `basereward data build`")

    def __len__(self) -> int:
        return self._ds.num_rows

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"pair {i} of {n}")
        return self._pair(self._ds[i % n])

    def __iter__(self) -> Iterator[PreferencePair]:
        # Batched reads: one Arrow slice per 1,000 rows instead of a lookup per row.
        for batch in self._ds.iter(batch_size=1000):
            for k in range(len(batch["id"])):
                yield self._pair({c: batch[c][k] for c in batch})

    def _pair(self, row: dict[str, Any]) -> PreferencePair:
        return PreferencePair(
            id=row["id"], prompt=row["prompt"], chosen=row["chosen"], rejected=row["rejected"],
            images=tuple(p if os.path.isabs(p) else os.path.join(self.dir, p) for p in row["images"]),
            source=row.get("source") or "", category=row.get("category") or "",
            history=tuple((t["role"], t["content"]) for t in row.get("history") or ()),
        )

    def lengths(self) -> np.ndarray:
        """The `length` column (the training plan's sort key) as one numpy array."""
        return self._ds.data.column("length").to_numpy()

    def __repr__(self) -> str:
        return f"BuiltPairs({self.dir!r}, split={self.split!r}, n={len(self)})"


class Subset(Sequence[PreferencePair]):
    """`base` at the sorted indices `index` (a seeded cap), still lazy."""

    def __init__(self, base: Sequence[PreferencePair], index: np.ndarray) -> None:
        self.base, self.index = base, np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.base[int(self.index[int(i)])]

    def lengths(self) -> np.ndarray:
        return pair_lengths(self.base)[self.index]


class Concat(Sequence[PreferencePair]):
    """Several pair sequences (lists and builds) end to end, still lazy."""

    def __init__(self, parts: Sequence[Sequence[PreferencePair]]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"pair {i} of {len(self)}")
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[k][i - int(self.offsets[k])]

    def lengths(self) -> np.ndarray:
        return np.concatenate([pair_lengths(p) for p in self.parts]) if self.parts else np.zeros(0, np.int64)


def pair_lengths(pairs: Sequence[PreferencePair]) -> np.ndarray:
    """Per-pair length keys: a build's stored column, else computed (`build.pair_length`)."""
    from basereward.data.build import pair_length

    if hasattr(pairs, "lengths"):
        return np.asarray(pairs.lengths())
    return np.fromiter((pair_length(p) for p in pairs), dtype=np.int64, count=len(pairs))
