"""`basereward demo --quick`: the README's demo path end to end, in miniature (needs ../shared)."""

from __future__ import annotations

import json

import pytest

from basereward.cli import main
from basereward.data.sources.hh_rlhf import default_hh_path
from basereward.errors import DataError
from basereward.models.reward_model import RewardModel

pytestmark = pytest.mark.slow


def test_quick_demo_aligns_trains_evaluates_and_saves(tmp_path, capsys):
    try:
        default_hh_path()
    except DataError as exc:
        pytest.skip(str(exc))
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo")]) == 0
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    acc = results["accuracy"]
    assert set(acc) == {"visual held-out (seed 2)", "visual held-out, images shuffled", "HH-RLHF harmless validation"}
    assert all(0.0 <= v <= 1.0 for v in acc.values())
    # The alignment stage ran on the generator's grounded captions and its vocabulary was saved.
    assert (tmp_path / "demo" / "data" / "synth-train" / "regions.jsonl").is_file()
    assert results["train"]["alignment"]["align_images"] == 64
    model = RewardModel.from_pretrained(tmp_path / "demo" / "model")
    assert model.backbone.cfg.projector == "words" and "star" in model.backbone.cfg.image_words
    assert "image effect (points)" in capsys.readouterr().out
