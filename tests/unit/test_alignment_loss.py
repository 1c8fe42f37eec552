"""The alignment loss of mini-vl's `words` projector, with colour-permuted copies (hand-derived)."""

from __future__ import annotations

import math

import torch

from basereward.models.mini_vl.projector import alignment_loss, colour_positions

# Vocabulary: 0 background, 1 red, 2 blue. Slot 0's logits give probabilities 1/4, 1/2, 1/4;
# slot 1's give 3/5, 1/5, 1/5.
LOGITS = torch.log(torch.tensor([[[1.0, 2.0, 1.0], [3.0, 1.0, 1.0]]]))
TARGETS = torch.tensor([[1, 0]])  # slot 0 reads "red", slot 1 "background"
COLOUR = torch.tensor([False, True, True])


def test_plain_rows_take_the_cross_entropy_of_every_slot():
    expected = (math.log(2) + math.log(5 / 3)) / 2
    assert math.isclose(float(alignment_loss(LOGITS, TARGETS)), expected, rel_tol=1e-6)
    assert math.isclose(float(alignment_loss(LOGITS, TARGETS, torch.tensor([False]), COLOUR)), expected, rel_tol=1e-6)


def test_a_colour_permuted_row_asks_its_colour_slots_for_any_colour_only():
    # Slot 0 (target red): -log(P(red) + P(blue)) = -log(3/4); slot 1 (background) is unchanged.
    expected = (math.log(4 / 3) + math.log(5 / 3)) / 2
    got = alignment_loss(LOGITS, TARGETS, torch.tensor([True]), COLOUR)
    assert math.isclose(float(got), expected, rel_tol=1e-6)
    # Moving probability from red to blue costs nothing there, from red to background does.
    to_blue = torch.log(torch.tensor([[[1.0, 1.0, 2.0], [3.0, 1.0, 1.0]]]))
    to_background = torch.log(torch.tensor([[[2.0, 1.0, 1.0], [3.0, 1.0, 1.0]]]))
    assert math.isclose(float(alignment_loss(to_blue, TARGETS, torch.tensor([True]), COLOUR)), expected, rel_tol=1e-6)
    assert float(alignment_loss(to_background, TARGETS, torch.tensor([True]), COLOUR)) > expected + 0.1


def test_mixed_batch_relaxes_only_the_flagged_rows_and_stays_finite_without_colour_words():
    logits, targets = LOGITS.repeat(2, 1, 1), TARGETS.repeat(2, 1)
    got = alignment_loss(logits, targets, torch.tensor([False, True]), COLOUR)
    expected = (math.log(2) + math.log(5 / 3) + math.log(4 / 3) + math.log(5 / 3)) / 4
    assert math.isclose(float(got), expected, rel_tol=1e-6)
    logits.requires_grad_(True)
    loss = alignment_loss(logits, targets, torch.tensor([True, True]), torch.zeros(3, dtype=torch.bool))
    loss.backward()
    assert torch.isfinite(logits.grad).all()


class _Tokenizer:
    words = {5: " Red", 6: " star", 7: "blue", 8: ","}

    def decode(self, ids):
        return "".join(self.words[i] for i in ids)


def test_colour_positions_read_the_decoded_words():
    assert colour_positions(_Tokenizer(), torch.tensor([5, 6, 7, 8])).tolist() == [True, False, True, False]
