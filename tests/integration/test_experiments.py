"""experiments/ablations.py on a tiny mini-vl: every cell goes through the real `train()` and
`Scorer`, and the trunk states kept between runs change nothing (a run after others equals the
same run on a fresh backbone)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from basereward.config import load_config

pytestmark = pytest.mark.slow

_DIR = Path(__file__).resolve().parents[2] / "experiments"


@pytest.fixture(scope="module")
def abl():
    sys.path.insert(0, str(_DIR))
    spec = importlib.util.spec_from_file_location("ablations_under_test", _DIR / "ablations.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)
        sys.path.remove(str(_DIR))


@pytest.fixture(scope="module")
def aligned_model(tmp_path_factory):
    """A tiny words-projector model made by the real trainer (alignment stage included)."""
    from basereward.data.synthetic import generate
    from basereward.training.loop import train

    out = tmp_path_factory.mktemp("exp")
    pairs = generate(str(out / "data"), n_pairs=24, seed=3, progress=False)
    mv = "model.backbone.mini_vl."
    cfg = load_config(None, [f"data.alignment={out / 'data' / 'regions.jsonl'}", "model.backbone.train_lm_layers=1",
                             "model.backbone.max_length=96", f"{mv}lm_layers=3", f"{mv}projector=words",
                             f"{mv}train_projector=false", f"{mv}image_grid=2", f"{mv}align_epochs=2",
                             "train.max_steps=1", "train.global_batch_size=4", "train.micro_batch_size=2",
                             f"train.output_dir={out / 'run'}"])
    result = train(cfg, pairs, progress=False)
    return result["model_dir"], pairs


def _setup(abl, model_dir, pairs, work):
    from basereward.config import HeadConfig, TrainConfig

    base, backbone = abl.start_backbone(model_dir, train_lm_layers=1)
    backbone.keep_trunk_states()
    start = {n: p.detach().clone() for n, p in backbone.named_parameters() if p.requires_grad}
    base = base.__class__(backbone=base.backbone, head=HeadConfig(zero_init_last=False))
    train_cfg = TrainConfig(lr=1e-3, head_lr=1e-3, global_batch_size=4, micro_batch_size=2, mixed_precision="no")
    sets = {"mixed": pairs[:16], "hh": pairs[:8], "hh-biased": pairs[:8], "hh-balanced": pairs[:8]}
    evals = {"mixed": {"visual_test": pairs[16:], "hh_val": pairs[16:20]}, "hh": {"hh_val": pairs[16:]}}
    return abl.Setup(base, backbone, start, sets, evals, {"mixed": 3, "hh": 2}, train_cfg, [0], Path(work))


def test_a_run_on_kept_trunk_states_equals_a_run_on_a_fresh_backbone(abl, aligned_model, tmp_path):
    model_dir, pairs = aligned_model
    shared = _setup(abl, model_dir, pairs, tmp_path / "shared")
    cell = abl.Cell("L2-silu")
    first = abl.run_once(shared, cell, seed=0)
    # Other cells fill and reuse the kept states, and change the trainable top layer and head.
    abl.run_once(shared, abl.Cell("L1-linear", num_layers=1, activation="none", zero_coef=0.1), seed=1)
    again = abl.run_once(shared, cell, seed=0)
    fresh = abl.run_once(_setup(abl, model_dir, pairs, tmp_path / "fresh"), cell, seed=0)
    for run in (again, fresh):
        assert run["train_loss"] == pytest.approx(first["train_loss"], abs=1e-5)
        for key in ("visual_test", "hh_val"):
            assert run[key]["accuracy"] == first[key]["accuracy"]
    assert len(shared.backbone._trunk_stores[2]) > 0  # noqa: SLF001 - the states were kept (layer 2 trains)


def test_cells_change_what_they_say(abl, aligned_model, tmp_path):
    model_dir, pairs = aligned_model
    setup = _setup(abl, model_dir, pairs, tmp_path)
    cfg = abl.cell_config(setup, abl.Cell("x", num_layers=3, activation="gelu", zero_coef=0.05, length_norm=True,
                                          train_set="hh-biased"), seed=4)
    assert (cfg.model.head.num_layers, cfg.model.head.activation) == (3, "gelu")
    assert (cfg.loss.zero_coef, cfg.loss.length_norm) == (0.05, True)
    assert (cfg.train.seed, cfg.train.max_steps) == (4, 2)  # HH tables get their own step budget
    assert cfg.model.backbone == setup.base.backbone  # the backbone never varies between cells
