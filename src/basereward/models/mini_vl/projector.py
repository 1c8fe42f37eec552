"""mini-vl's projector (image features -> LM input vectors) and the alignment stage that trains it.

`mlp`: each grid cell becomes one free vector (LLaVA). `words`: each cell becomes `slots` soft
words: the projector scores a small vocabulary of the LM's own input embeddings and the image
token is the softmax-weighted mean of them, so the LM reads an image as (soft) text. The
vocabulary is the words of the grounded captions the alignment stage trains on.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

BACKGROUND_WORD = "background"  # target of grid cells no region covers
FILLER = ","  # pads a cell's word slots: a cell reads like "red star ,"
# Basic colour terms: the words a colour-permuted copy of an image may no longer make true.
COLOUR_WORDS = frozenset({"red", "green", "blue", "yellow", "purple", "orange", "pink", "brown", "black", "white",
                          "grey", "gray", "violet", "cyan", "magenta", "turquoise", "beige", "navy", "teal"})


class BlockNorm(nn.Module):
    """A LayerNorm over each block of channels on its own (`blocks`: their sizes, in order)."""

    def __init__(self, blocks: Sequence[int]) -> None:
        super().__init__()
        self.blocks = [int(b) for b in blocks]
        self.norms = nn.ModuleList(nn.LayerNorm(b) for b in self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([norm(part) for norm, part in zip(self.norms, x.split(self.blocks, dim=-1))], dim=-1)


def build_projector(in_channels: int, hidden: int, slots: int, blocks: Sequence[int] = ()) -> nn.Sequential:
    """(I, cells, C) features -> (I, cells, hidden * slots).

    The features are layer-normalised first: the tapped CNN stages differ in scale by orders of
    magnitude. `blocks` (channel block sizes summing to C): each block on its own, so the small early
    stages are not scaled by the large semantic map's statistics; else all C channels together."""
    if blocks and sum(blocks) != in_channels:
        raise ValueError(f"channel blocks {list(blocks)} do not add up to {in_channels}")
    return nn.Sequential(
        BlockNorm(blocks) if blocks else nn.LayerNorm(in_channels),
        nn.Linear(in_channels, hidden),
        nn.GELU(),
        nn.Linear(hidden, hidden * slots),
    )


def word_token_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """Token ids of words as they occur inside a sentence (after a space)."""
    ids: list[int] = []
    for w in words:
        ids.extend(tokenizer(w if w == FILLER else " " + w, add_special_tokens=False)["input_ids"])
    return ids


def vocabulary_ids(tokenizer: Any, words: Sequence[str]) -> torch.Tensor:
    """Sorted distinct token ids of `words` plus the background and filler words: (V,)."""
    ids = word_token_ids(tokenizer, list(words) + [BACKGROUND_WORD, FILLER])
    return torch.tensor(sorted(set(ids)), dtype=torch.long)


def word_scores(out: torch.Tensor, table: torch.Tensor, hidden: int) -> torch.Tensor:
    """Projector output (I, cells, H*slots) -> each slot's scores of the vocabulary (I, cells*slots, V)."""
    queries = out.reshape(out.shape[0], -1, hidden)
    return queries @ table.t().to(queries.dtype) / hidden ** 0.5


def soft_words(out: torch.Tensor, table: torch.Tensor, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Projector output (I, cells, H*slots) and the vocabulary's input embeddings `table` (V, H)
    -> (image tokens (I, cells*slots, H), word logits (I, cells*slots, V)).

    Each slot's query scores the vocabulary; the token is the softmax-weighted mean of its
    embeddings: a soft word.
    """
    logits = word_scores(out, table, hidden)
    return torch.softmax(logits.float(), dim=-1).to(logits.dtype) @ table.to(logits.dtype), logits


def _half(index: int, grid: int, low: str, high: str) -> str:
    """The half of a grid line that cell `index` lies in; the centre line of an odd grid is "middle"."""
    if grid % 2 and index == grid // 2:
        return "middle"
    return low if index < grid / 2 else high


def position_words(grid: int, mode: str) -> list[list[str]]:
    """The words each cell's last slots read under `mini_vl.position_words`, cells in raster order:
    [] for "none", [column half] for "column", [row half, column half] for "row_column"."""
    if mode == "none":
        return [[] for _ in range(grid * grid)]
    out = []
    for r in range(grid):
        for c in range(grid):
            col = _half(c, grid, "left", "right")
            out.append([_half(r, grid, "top", "bottom"), col] if mode == "row_column" else [col])
    return out


def with_position_words(tokens: torch.Tensor, position_embeds: torch.Tensor) -> torch.Tensor:
    """Image tokens (I, cells*slots, H) with each cell's last k slots replaced by the fixed
    embeddings `position_embeds` (cells, k, H) of its position words."""
    cells, k, hidden = position_embeds.shape
    grid = tokens.reshape(tokens.shape[0], cells, -1, hidden)
    fixed = position_embeds.to(tokens.dtype).unsqueeze(0).expand(tokens.shape[0], -1, -1, -1)
    return torch.cat([grid[:, :, : grid.shape[2] - k], fixed], dim=2).reshape(tokens.shape)


def point_cell(x: float, y: float, grid: int) -> int:
    """The grid cell (row-major) holding the point (x, y), given as fractions of width and height."""
    return min(int(y * grid), grid - 1) * grid + min(int(x * grid), grid - 1)


def region_cells(box: Sequence[float], grid: int) -> tuple[int, set[int]]:
    """A region's box (x0, y0, x1, y1, fractions) -> (the cell holding its centre, the cells it
    covers: those whose centre lies in the box, and always the centre's own)."""
    x0, y0, x1, y1 = box
    centre = point_cell((x0 + x1) / 2, (y0 + y1) / 2, grid)
    cells = {centre}
    for r in range(grid):
        for c in range(grid):
            if x0 <= (c + 0.5) / grid <= x1 and y0 <= (r + 0.5) / grid <= y1:
                cells.add(r * grid + c)
    return centre, cells


def cell_targets(item: Any, grid: int, slots: int, tokenizer: Any, position: dict[int, int], filler: int,
                 naming: str = "cover") -> torch.Tensor:
    """(grid*grid, slots) vocabulary positions a grounded image's cells should read.

    A region covers the cells whose centre lies in its box, and always the cell holding its own
    centre; a cell reads the text of its regions, or "background"; slot k is the k-th token of
    that text, padded with ",". `naming="centre"`: only the cell holding a region's centre reads
    its whole text; the other cells it covers read its first word (the attribute: "red" of "red
    star"), so each region is named once and the number of names is the number of regions.
    """
    g = grid
    texts: list[list[str]] = [[] for _ in range(g * g)]
    for reg in item.regions:
        centre, cells = region_cells(reg.box, g)
        for cell in cells:
            if naming == "cover":
                texts[cell].append(reg.text)
            elif cell == centre:  # names before attributes, so a name is not cut off
                texts[cell].insert(sum(len(t.split()) > 1 for t in texts[cell]), reg.text)
            else:
                texts[cell].append(reg.text.split()[0])
    out = torch.full((g * g, slots), filler, dtype=torch.long)
    for cell, parts in enumerate(texts):
        words = " ".join(parts).split() or [BACKGROUND_WORD]
        ids = [position.get(t, filler) for t in word_token_ids(tokenizer, words)][:slots]
        out[cell, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def colour_positions(tokenizer: Any, word_ids: torch.Tensor) -> torch.Tensor:
    """(V,) bool: which vocabulary positions are colour words (COLOUR_WORDS)."""
    return torch.tensor([tokenizer.decode([int(t)]).strip().lower() in COLOUR_WORDS for t in word_ids.tolist()],
                        dtype=torch.bool)


def alignment_loss(logits: torch.Tensor, targets: torch.Tensor, some_colour: torch.Tensor | None = None,
                   colour_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over slots of the alignment loss. logits (B, K, V), targets (B, K) vocabulary positions.

    Cross-entropy per slot; but in the rows flagged by `some_colour` (B,) (colour-permuted copies),
    a slot whose target is a colour word (`colour_mask` (V,)) is only asked to read *a* colour:
    -log of the probability summed over the colour words. The copy still says that an object is
    there and what its shape is, not which colour it has now.
    """
    logits = logits.float()
    if some_colour is None or colour_mask is None or not some_colour.any() or not colour_mask.any():
        return nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    ce = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)
    colour_mask = colour_mask.to(logits.device)
    any_colour = torch.logsumexp(logits, -1) - torch.logsumexp(logits.masked_fill(~colour_mask, -1e9), -1)
    relaxed = colour_mask[targets] & some_colour.to(logits.device)[:, None]
    return torch.where(relaxed, any_colour, ce).mean()


def train_alignment(projector: nn.Module, table: torch.Tensor, hidden: int, x: torch.Tensor, y: torch.Tensor, *,
                    epochs: int, lr: float, seed: int, batch_size: int = 64, progress: bool = True,
                    x_colour: torch.Tensor | None = None, colour_mask: torch.Tensor | None = None) -> dict[str, float]:
    """Train `projector` so each cell's soft words predict its targets (cross-entropy per slot).

    x: (N, cells, C) encoder features; y: (N, cells, slots) vocabulary positions; table: (V, H)
    the vocabulary's input embeddings (not trained here). `x_colour` (N, cells, C): features of
    colour-permuted copies of the same images, trained alongside with the same targets, except that
    their colour-word slots (`colour_mask`) need only read some colour (`alignment_loss`). The
    projector trains even when reward training keeps it frozen; its requires_grad flags and mode
    are restored afterwards. The data order comes from a generator seeded with `seed` (the global
    RNG is not drawn from).
    """
    from tqdm.auto import tqdm

    flagged = torch.zeros(len(x), dtype=torch.bool)
    if x_colour is not None:
        if x_colour.shape != x.shape:
            raise ValueError(f"x_colour {tuple(x_colour.shape)} must match x {tuple(x.shape)}")
        x, y = torch.cat([x, x_colour]), torch.cat([y, y])
        flagged = torch.cat([flagged, torch.ones(len(x_colour), dtype=torch.bool)])
    table = table.detach()
    param = next(projector.parameters())
    gen = torch.Generator().manual_seed(seed)
    flags = [p.requires_grad for p in projector.parameters()]
    for p in projector.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(projector.parameters(), lr=lr, weight_decay=0.01)
    was_training = projector.training
    projector.train()
    loss_v, acc_v = float("nan"), float("nan")
    steps = epochs * math.ceil(len(x) / batch_size)
    bar = tqdm(total=steps, desc="align: projector", unit="step", disable=not progress)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            out = projector(x[idx].to(param.device, param.dtype))
            logits = word_scores(out, table, hidden)  # the soft words themselves are not needed here
            tgt = y[idx].to(param.device).reshape(len(idx), -1)
            loss = alignment_loss(logits, tgt, flagged[idx], colour_mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_v = float(loss.detach())
            acc_v = float((logits.argmax(-1) == tgt).float().mean())
            bar.update(1)
            bar.set_postfix(loss=f"{loss_v:.3f}", slot_acc=f"{acc_v:.3f}")
    bar.close()
    projector.train(was_training)
    for p, flag in zip(projector.parameters(), flags):
        p.requires_grad_(flag)
    return {"align_loss": loss_v, "align_slot_accuracy": acc_v, "align_images": len(x) - int(flagged.sum()),
            "align_colour_permuted": int(flagged.sum())}
