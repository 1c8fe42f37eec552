"""Evaluation controls: inputs changed on purpose to measure what a reward model relies on.

`shuffle_images` gives every pair another pair's image. A model that reads the image loses its
accuracy on the result; one that scores the text alone keeps it. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from basereward.data.schema import PreferencePair
from basereward.errors import DataError

# Draws come from default_rng([seed, 2]): the stream number the control had inside the synthetic
# generator, kept so that a given seed still gives the same permutation (and the same accuracy).
_SHUFFLE_STREAM = 2


def shuffle_images(pairs: Sequence[PreferencePair], seed: int) -> list[PreferencePair]:
    """The same pairs with their images permuted so that no pair keeps its own image.

    The permutation is drawn uniformly among those where every pair gets a different image (by
    index and by path). ValueError for fewer than two pairs, a bad seed, or inputs where no such
    permutation can be found (too many pairs sharing one image).
    """
    n = len(pairs)
    if n < 2:
        raise DataError("shuffle_images needs at least two pairs to swap images")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng([seed, _SHUFFLE_STREAM])
    own = [p.images for p in pairs]
    # Rejection sampling: a uniform permutation is a derangement with probability ~1/e, so this
    # needs ~3 tries; many duplicate images could make it impossible, hence the cap.
    for _ in range(1000):
        perm = rng.permutation(n)
        if all(int(j) != i and own[int(j)] != own[i] for i, j in enumerate(perm)):
            return [replace(p, images=own[int(j)]) for p, j in zip(pairs, perm)]
    raise DataError("could not find a permutation that changes every pair's image (too many duplicates)")
