"""mini-vl's optional stages on its real weights: the `words` projector and its alignment stage,
the frozen-trunk cache, both through `train()`, and models saved in the old config layout.

`test_training_reproduces_the_reference_run` pins the numbers of a short aligned, trunk-cached
run to those the code gave before the config/backbone/training refactor (same seed, same data):
any change of parameter construction order or of an RNG draw moves them.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers.tiny_models import mixed_groups as groups
from helpers.tiny_models import solid_image

from basereward.config import (
    BackboneConfig,
    HeadConfig,
    MiniVLConfig,
    ModelConfig,
    load_config,
)
from basereward.data.schema import Group
from basereward.errors import ConfigError
from basereward.models.reward_model import RewardModel

pytestmark = pytest.mark.slow


def _rewards(model, gs):
    with torch.no_grad():
        return model(model.collate(gs))


@pytest.fixture(scope="module")
def grounded_dir(tmp_path_factory):
    from basereward.data.synthetic import generate

    out = tmp_path_factory.mktemp("grounded")
    generate(str(out), n_pairs=40, seed=3, categories=["hallucination/color"], progress=False)
    return out


@pytest.fixture(scope="module")
def grounded(grounded_dir):
    from basereward.data.regions import load_regions

    return load_regions(grounded_dir / "regions.jsonl")


def _words_model(seed=0, **mini_vl):
    torch.manual_seed(seed)
    opts = {"lm_layers": 2, "image_grid": 2, "projector": "words", "word_slots": 3, **mini_vl}
    cfg = ModelConfig(backbone=BackboneConfig(name="mini-vl", max_length=96, mini_vl=MiniVLConfig(**opts)))
    return RewardModel(cfg).eval()


def _with_alignment(model, epochs, lr):
    """The same backbone with other alignment-stage settings (they live in its config section)."""
    cfg = model.backbone.cfg
    model.backbone.cfg = dataclasses.replace(cfg, mini_vl=dataclasses.replace(cfg.mini_vl, align_epochs=epochs, align_lr=lr))
    return model.backbone


# ---------------------------------------------------------------------------- word projector


def test_word_projector_tokens_are_mixtures_of_vocabulary_embeddings(grounded):
    from basereward.data.regions import region_words
    from basereward.models.mini_vl.projector import soft_words

    bb = _words_model().backbone
    bb.set_vocabulary(region_words(grounded))
    assert bb.tokens_per_image == 2 * 2 * 3
    pixels = torch.stack([torch.zeros(3, 224, 224), torch.ones(3, 224, 224)])
    with torch.no_grad():
        tokens, logits = soft_words(bb.projector(bb.vision(pixels)), bb.word_table(), bb.hidden_size)
    table = bb.lm.get_input_embeddings().weight[bb.word_ids]
    torch.testing.assert_close(tokens, torch.softmax(logits, -1) @ table)
    assert tokens.shape == (2, 12, bb.hidden_size)
    # Every vocabulary word (and "background" / ",") is one or more rows of the LM's own table.
    vocab = set(bb.tokenizer.convert_ids_to_tokens(bb.word_ids.tolist()))
    assert {"Ġred", "Ġbackground", ","} <= vocab


def test_position_words_replace_the_last_slots_of_each_cell_and_nothing_else(grounded):
    from basereward.data.regions import region_words

    plain = _words_model().backbone
    placed = _words_model(position_words="row_column").backbone
    placed.projector.load_state_dict(plain.projector.state_dict())
    for bb in (plain, placed):
        bb.set_vocabulary(region_words(grounded))
    feats = plain.vision(torch.rand(2, 3, 224, 224))
    with torch.no_grad():
        a = plain._project(feats).reshape(2, 4, 3, -1)
        b = placed._project(feats).reshape(2, 4, 3, -1)
    embed = plain.lm.get_input_embeddings().weight
    word = {w: embed[plain.tokenizer(" " + w, add_special_tokens=False)["input_ids"][0]] for w in ("top", "bottom", "left", "right")}
    # A 2x2 grid in raster order: (top, left), (top, right), (bottom, left), (bottom, right).
    for cell, (row, col) in enumerate([("top", "left"), ("top", "right"), ("bottom", "left"), ("bottom", "right")]):
        for image in range(2):
            torch.testing.assert_close(b[image, cell, 1], word[row])
            torch.testing.assert_close(b[image, cell, 2], word[col])
    torch.testing.assert_close(b[:, :, 0], a[:, :, 0])  # what the cell shows: unchanged
    with pytest.raises(ConfigError, match="word_slots >= 3"):
        _words_model(position_words="row_column", word_slots=2)


def test_alignment_fixes_the_vocabulary_and_teaches_cells_their_region_words(grounded):
    from basereward.data.pairs import open_image
    from basereward.data.regions import region_words
    from basereward.models.mini_vl import preprocess_image
    from basereward.models.mini_vl.projector import (
        cell_targets,
        soft_words,
        word_token_ids,
    )

    model = _words_model()
    bb = model.backbone
    assert "vocabulary" in bb.missing_alignment() and bb.metadata() == {}
    before = _with_alignment(model, 1, 1e-3).align(grounded, seed=0, progress=False)
    assert bb.image_words == region_words(grounded) and bb.missing_alignment() == ""
    after = _with_alignment(model, 40, 3e-3).align(grounded, seed=0, progress=False)
    assert after["align_loss"] < 0.5 * before["align_loss"]
    assert after["align_slot_accuracy"] > 0.9
    # The colour of a single-object image is read back from the cell that holds the shape.
    item = grounded[0]
    position = {int(t): i for i, t in enumerate(bb.word_ids.tolist())}
    target = cell_targets(item, 2, 3, bb.tokenizer, position, 0)
    with torch.no_grad():
        out = bb.projector(bb.vision(preprocess_image(open_image(item.image), 224)[None]))
        _, logits = soft_words(out, bb.word_table(), bb.hidden_size)
    predicted = logits.argmax(-1).reshape(4, 3)
    colour_word = item.regions[0].text.split()[0]
    colour_pos = int(torch.nonzero(bb.word_ids == word_token_ids(bb.tokenizer, [colour_word])[0]))
    assert (target[:, 0] == colour_pos).any()
    assert (predicted[:, 0] == colour_pos).any()


def test_colour_permuted_copies_are_the_permuted_images_and_their_colour_slots_are_relaxed(grounded):
    import numpy as np
    from PIL import Image

    from basereward.data.pairs import open_image
    from basereward.models.mini_vl import preprocess_image
    from basereward.models.mini_vl.projector import colour_positions
    from basereward.models.mini_vl.vision import CHANNEL_PERMUTATIONS, encode_channel_permuted

    model = _words_model(align_colour_permute=True)
    bb = model.backbone
    images = [it.image for it in grounded[:6]]
    feats, perms = encode_channel_permuted(bb.vision, images, 224, seed=0, batch_size=4, progress=False)
    again, same = encode_channel_permuted(bb.vision, images, 224, seed=0, batch_size=6, progress=False)
    assert perms == same and len(set(perms)) > 1
    torch.testing.assert_close(feats, again)  # the same features whatever the batch
    arr = np.asarray(open_image(images[2]))[..., list(CHANNEL_PERMUTATIONS[perms[2]])]
    with torch.no_grad():
        ref = bb.vision(preprocess_image(Image.fromarray(np.ascontiguousarray(arr)), 224)[None])
    torch.testing.assert_close(feats[2], ref[0])
    result = _with_alignment(model, 2, 1e-3).align(grounded, seed=0, progress=False)
    assert result["align_images"] == result["align_colour_permuted"] == len(grounded)
    # Every grounded region of this set reads "<colour> <shape>": the colour words are the first words.
    mask = colour_positions(bb.tokenizer, bb.word_ids)
    colours = {bb.tokenizer.decode([int(t)]).strip() for t, m in zip(bb.word_ids, mask) if m}
    assert colours == {r.text.split()[0] for it in grounded for r in it.regions}


def test_word_projector_vocabulary_travels_with_the_saved_model(grounded, tmp_path):
    from basereward.data.regions import region_words

    model = _words_model(align_epochs=2)
    model.backbone.align(grounded[:8], seed=0, progress=False)
    model.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "model_config.json").read_text())
    assert saved["backbone_metadata"] == {"image_words": list(region_words(grounded[:8]))}
    assert "image_words" not in json.dumps(saved["model"])  # metadata, not config
    loaded = RewardModel.from_pretrained(tmp_path / "m").eval()
    assert loaded.backbone.image_words == region_words(grounded[:8])
    gs = groups()[:2]
    torch.testing.assert_close(_rewards(loaded, gs), _rewards(model, gs), atol=1e-6, rtol=0)


def test_a_model_saved_in_the_old_flat_layout_loads(grounded, tmp_path):
    """model_config.json written before the per-backbone sections: flat keys, `image_words` in the
    config, no backbone_metadata. It must load into the same model."""
    model = _words_model(align_epochs=1, image_tap_max_pool=True, train_projector=False)
    model.backbone.align(grounded[:6], seed=0, progress=False)
    model.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "model_config.json"
    meta = json.loads(path.read_text())
    bb = meta["model"]["backbone"]
    mini = bb.pop("mini_vl")
    old_flat = {k: mini[k] for k in ("image_size", "image_grid", "image_multiscale", "image_tap_max_pool",
                                     "projector", "train_projector", "word_slots", "lm_layers", "share_prefix")}
    bb.pop("qwen_vl")
    # The old layout also carried the Qwen-VL keys (ignored by mini-vl, even when changed).
    bb.update(old_flat, min_pixels=3136, max_pixels=401408, freeze_vision=False,
              image_words=meta.pop("backbone_metadata")["image_words"])
    path.write_text(json.dumps(meta))
    loaded = RewardModel.from_pretrained(tmp_path / "m").eval()
    assert {k: getattr(loaded.cfg.backbone.mini_vl, k) for k in old_flat} == old_flat
    assert loaded.backbone.image_words == model.backbone.image_words
    gs = groups()[:2]
    torch.testing.assert_close(_rewards(loaded, gs), _rewards(model, gs), atol=1e-6, rtol=0)


def test_word_projector_without_vocabulary_needs_the_alignment_stage(grounded_dir, tmp_path):
    from basereward.data.pairs import load_pairs
    from basereward.training.loop import train

    model = _words_model()
    with pytest.raises(ConfigError, match="data.alignment"):
        _rewards(model, groups()[:1])
    pairs = load_pairs(grounded_dir / "pairs.jsonl")[:4]
    cfg = load_config(None, ["model.backbone.mini_vl.projector=words", "model.backbone.mini_vl.lm_layers=2",
                             "model.backbone.mini_vl.image_grid=2", "train.max_steps=1", "train.global_batch_size=4",
                             f"train.output_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match="set data.alignment"):
        train(cfg, pairs, progress=False)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # refused before any step


def test_training_runs_the_alignment_stage_and_never_rewrites_the_config(grounded, grounded_dir, tmp_path):
    from basereward.data.pairs import load_pairs
    from basereward.data.regions import region_words
    from basereward.training.loop import train

    pairs = load_pairs(grounded_dir / "pairs.jsonl")[:8]
    common = [f"data.alignment={grounded_dir / 'regions.jsonl'}", "model.backbone.mini_vl.lm_layers=2",
              "model.backbone.mini_vl.image_grid=2", "model.backbone.max_length=96", "train.max_steps=1",
              "train.global_batch_size=4", "train.micro_batch_size=4", "model.backbone.mini_vl.align_epochs=2",
              f"train.output_dir={tmp_path / 'run'}"]
    cfg = load_config(None, common + ["model.backbone.mini_vl.projector=words"])
    result = train(cfg, pairs, progress=False)
    assert result["alignment"]["align_images"] == len(grounded)
    assert load_config(tmp_path / "run" / "config.yaml") == cfg  # written as given
    loaded = RewardModel.from_pretrained(result["model_dir"])
    assert loaded.backbone.image_words == region_words(grounded)
    # The free-vector projector has no alignment stage: one clear error, before any training.
    with pytest.raises(ConfigError, match="projector=words"):
        train(load_config(None, common + [f"train.output_dir={tmp_path / 'run2'}"]), pairs, progress=False)
    assert not (tmp_path / "run2" / "metrics.jsonl").exists()


def test_features_cached_by_alignment_give_the_rewards_of_the_pixels(grounded):
    model = _words_model(align_epochs=1)
    model.backbone.align(grounded[:6], seed=0, progress=False)
    assert len(model.backbone.feature_cache) == 6
    gs = [Group("What colour is the shape?", ("It is red.", "It is blue, I think."), (it.image,)) for it in grounded[:3]]
    batch = model.collate(gs)
    assert "image_features" in batch and "pixel_values" not in batch  # the encoder is not run again
    cached = _rewards(model, gs)
    model.backbone.feature_cache.clear()
    assert "pixel_values" in model.collate(gs)
    torch.testing.assert_close(cached, _rewards(model, gs), atol=1e-5, rtol=0)


def test_frozen_projector_is_aligned_and_saved(grounded, tmp_path):
    model = _words_model(train_projector=False, align_epochs=2)
    before = model.backbone.projector[1].weight.clone()
    model.backbone.align(grounded[:8], seed=0, progress=False)
    assert not torch.equal(before, model.backbone.projector[1].weight)  # alignment trained it
    assert not any(p.requires_grad for p in model.backbone.projector.parameters())  # and froze it again
    model.save_pretrained(tmp_path / "m")
    loaded = RewardModel.from_pretrained(tmp_path / "m").eval()
    gs = groups()[:2]
    torch.testing.assert_close(_rewards(loaded, gs), _rewards(model, gs), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------- frozen-trunk cache


def _trunk_model(train_lm_layers=1, **mini_vl):
    torch.manual_seed(0)
    opts = {"lm_layers": 3, "image_grid": 2, "train_projector": False, **mini_vl}
    cfg = ModelConfig(backbone=BackboneConfig(name="mini-vl", train_lm_layers=train_lm_layers, max_length=96,
                                              mini_vl=MiniVLConfig(**opts)),
                      head=HeadConfig(zero_init_last=False))
    return RewardModel(cfg).train()


def _rewards_and_grads(model, gs):
    model.zero_grad()
    r = model(model.collate(gs))
    (r[0] - r[1] + 0.5 * r[3] - r[4] + 0.25 * r[5]).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return r.detach(), grads


def test_trunk_cache_gives_the_rewards_and_gradients_of_the_full_model():
    model = _trunk_model()
    assert not any(p.requires_grad for p in model.backbone.projector.parameters())
    gs = groups()
    ref_r, ref_g = _rewards_and_grads(model, gs)
    assert set(ref_g) >= {"backbone.lm.layers.2.mlp.up_proj.weight", "head.net.0.weight"}
    assert not any(".layers.0." in n or ".layers.1." in n for n in ref_g)
    assert model.backbone.enable_trunk_cache() == 2  # layer 2 is the first trained one
    try:
        for visit in ("computes the trunk", "reads the cache"):
            r, g = _rewards_and_grads(model, gs)
            torch.testing.assert_close(r, ref_r, atol=1e-5, rtol=0, msg=visit)
            for n in ref_g:
                torch.testing.assert_close(g[n], ref_g[n], atol=1e-5, rtol=1e-4, msg=f"{visit}: {n}")
        # A new batch mixing cached and new groups, in another order, is still exact.
        mixed = [gs[2], Group("Which one is larger?", ("The left one.", "The right one."), (solid_image(40, 40, 5),)), gs[0]]
        got = model(model.collate(mixed)).detach()
        assert model.backbone.disable_trunk_cache() == 4  # 3 groups, then 1 new one
        torch.testing.assert_close(got, model(model.collate(mixed)).detach(), atol=1e-5, rtol=0)
    finally:
        model.backbone.disable_trunk_cache()


def test_trunk_states_filled_by_scoring_serve_training_and_survive_a_kept_store():
    from basereward.scoring import Scorer

    model = _trunk_model()
    gs = groups()
    ref_r, ref_g = _rewards_and_grads(model, gs)
    scorer = Scorer(model, batch_size=16)
    plain = scorer.score_groups(gs)
    model.backbone.keep_trunk_states()
    model.backbone.enable_trunk_cache()
    cached = scorer.score_groups(gs)  # fills the store under inference_mode
    model.backbone.disable_trunk_cache()
    assert model.backbone.enable_trunk_cache() == 2
    try:
        torch.testing.assert_close(torch.tensor(sum(cached, [])), torch.tensor(sum(plain, [])), atol=1e-5, rtol=0)
        # Training on states stored by scoring: a normal autograd graph, the full model's gradients.
        model.train()
        r, g = _rewards_and_grads(model, gs)
        torch.testing.assert_close(r, ref_r, atol=1e-5, rtol=0)
        for n in ref_g:
            torch.testing.assert_close(g[n], ref_g[n], atol=1e-5, rtol=1e-4, msg=n)
    finally:
        # The kept store still holds the 3 groups after the second enable (nothing recomputed).
        assert model.backbone.disable_trunk_cache() == 3


def test_trunk_cache_refuses_a_trunk_that_trains():
    model = _trunk_model(train_projector=True)
    with pytest.raises(ConfigError, match="train_projector=false"):
        model.backbone.enable_trunk_cache()
    model = _trunk_model(train_lm_layers=-1)
    with pytest.raises(ConfigError, match="train_lm_layers"):
        model.backbone.enable_trunk_cache()


def _train_words_trunk(grounded_dir, out, *extra):
    from basereward.data.pairs import load_pairs
    from basereward.training.loop import train

    pairs = load_pairs(grounded_dir / "pairs.jsonl")[:8]
    mv = "model.backbone.mini_vl."
    ov = [f"data.alignment={grounded_dir / 'regions.jsonl'}", "model.backbone.train_lm_layers=1",
          "model.backbone.max_length=96", "model.head.zero_init_last=false", f"{mv}projector=words",
          f"{mv}train_projector=false", f"{mv}image_grid=2", f"{mv}align_epochs=2", "train.epochs=2",
          "train.global_batch_size=4", "train.micro_batch_size=2", "train.lr=1e-3", f"train.output_dir={out}", *extra]
    return pairs, train(load_config(None, ov), pairs, progress=False)


def test_training_with_the_trunk_cache_ends_with_the_same_model(grounded_dir, tmp_path):
    results = {}
    for flag in ("false", "true"):
        pairs, results[flag] = _train_words_trunk(grounded_dir, tmp_path / flag, "model.backbone.mini_vl.lm_layers=2",
                                                  f"model.backbone.mini_vl.cache_trunk={flag}")
    assert results["true"]["trunk_cache"] == {"first_trained_layer": 1, "cached_groups": 8}
    assert "trunk_cache" not in results["false"]
    assert results["true"]["train"]["loss"] == pytest.approx(results["false"]["train"]["loss"], abs=1e-5)
    models = [RewardModel.from_pretrained(results[f]["model_dir"]) for f in ("false", "true")]
    gs = [p.to_group() for p in pairs]
    torch.testing.assert_close(_rewards(models[1], gs), _rewards(models[0], gs), atol=1e-4, rtol=0)


# Recorded with the code before the refactor (commit 3b85dca), same data, seed and settings.
REFERENCE = {
    "loss": 0.6558668911457062,
    "align_loss": 2.7765307426452637,
    "rewards": [1.322427, 1.141603, 0.86564, 0.675874, 1.241616, 1.196143, 1.023239, 0.749392,
                1.134565, 1.062005, 0.934051, 1.029457, 0.909311, 0.906952, 1.174922, 1.050238],
}


def test_training_reproduces_the_reference_run(grounded_dir, tmp_path):
    pairs, result = _train_words_trunk(grounded_dir, tmp_path / "run", "model.backbone.mini_vl.lm_layers=3",
                                       "model.backbone.mini_vl.cache_trunk=true", "train.head_lr=3e-3")
    assert result["trunk_cache"] == {"first_trained_layer": 2, "cached_groups": 8}
    assert result["alignment"]["align_loss"] == pytest.approx(REFERENCE["align_loss"], abs=1e-5)
    assert result["train"]["loss"] == pytest.approx(REFERENCE["loss"], abs=1e-5)
    model = RewardModel.from_pretrained(result["model_dir"]).eval()
    got = _rewards(model, [p.to_group() for p in pairs])
    # Recorded on AVX2; AVX-512 kernels sum float32 in another order and 16 training steps carry
    # that to 1.4e-4 in the rewards. Any change of recipe moves them by far more than 5e-4.
    torch.testing.assert_close(got, torch.tensor(REFERENCE["rewards"]), atol=5e-4, rtol=0)


# ---------------------------------------------------------------------------- zoomed-out alignment copies


def _align_spied(grounded, monkeypatch, **mini_vl):
    """A words model aligned (1 epoch, seed 5) with `mini_vl` settings; returns (backbone, report,
    the (x, y) that reached train_alignment)."""
    from basereward.models.mini_vl import model as mv_model

    bb = _words_model().backbone
    bb.cfg = dataclasses.replace(bb.cfg, mini_vl=dataclasses.replace(bb.cfg.mini_vl, align_epochs=1, **mini_vl))
    seen = {}
    real = mv_model.train_alignment

    def spy(projector, table, hidden, x, y, **kw):
        seen["x"], seen["y"] = x, y
        return real(projector, table, hidden, x, y, **kw)

    monkeypatch.setattr(mv_model, "train_alignment", spy)
    report = bb.align(grounded, seed=5, progress=False)
    return bb, report, seen


def test_zoomed_out_copies_join_the_alignment_with_their_moved_targets(grounded, monkeypatch):
    from basereward.data.regions import zoomed_regions
    from basereward.models.mini_vl.vision import zoom_draws

    bb, report, seen = _align_spied(grounded, monkeypatch, align_zoom=0.5)
    n = len(grounded)
    assert report["align_images"] == 2 * n and seen["x"].shape[0] == 2 * n
    # The copies' targets are those of their moved regions, under the same seeded draws.
    moved = [zoomed_regions(it, d) for it, d in zip(grounded, zoom_draws(n, 5, 0.5))]
    torch.testing.assert_close(seen["y"][n:], bb.alignment_targets(moved))
    torch.testing.assert_close(seen["y"][:n], bb.alignment_targets(grounded))
    assert not torch.equal(seen["y"][n:], seen["y"][:n]) and not torch.equal(seen["x"][n:], seen["x"][:n])
    bb.cfg = dataclasses.replace(bb.cfg, mini_vl=dataclasses.replace(bb.cfg.mini_vl, align_colour_permute=True))
    with pytest.raises(ConfigError, match="align_zoom and align_colour_permute are not combined"):
        bb.align(grounded, seed=5, progress=False)


def test_jittered_copies_join_the_alignment_with_the_same_targets(grounded, monkeypatch):
    bb, report, seen = _align_spied(grounded, monkeypatch, align_zoom=0.5, align_jitter=0.3)
    n = len(grounded)
    # pictures, zoomed-out copies, jittered copies; the jittered ones read the pictures' own words
    assert report["align_images"] == 3 * n and seen["x"].shape[0] == 3 * n
    torch.testing.assert_close(seen["y"][2 * n:], seen["y"][:n])
    assert not torch.equal(seen["x"][2 * n:], seen["x"][:n])
    bb.cfg = dataclasses.replace(bb.cfg, mini_vl=dataclasses.replace(bb.cfg.mini_vl, align_zoom=0.0,
                                                                      align_colour_permute=True))
    with pytest.raises(ConfigError, match="align_jitter and align_colour_permute are not combined"):
        bb.align(grounded, seed=5, progress=False)
