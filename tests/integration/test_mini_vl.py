"""mini-vl (the embedded default) on its real pretrained weights, shortened to 2 LM layers.

The pair's image is encoded once and shared; with `share_prefix` the prompt is also run once per
group. Both must give the rewards of running every (prompt, image, response) on its own.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers.tiny_models import solid_image

from basereward.config import BackboneConfig, HeadConfig, ModelConfig
from basereward.data.schema import Group
from basereward.models.reward_model import RewardModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=BackboneConfig(name="mini-vl", lm_layers=2, image_grid=2, max_length=96),
                      head=HeadConfig(zero_init_last=False))
    return RewardModel(cfg).eval()


def groups():
    return [
        Group("What colour is the square?", ("It is red.", "The square in the picture is blue, I think.", "Green"),
              (solid_image(64, 48, 1),)),
        Group("Compare both pictures.", ("The first one is brighter.", "Same."), (solid_image(50, 50, 2), solid_image(80, 40, 3))),
        Group("Tell me a joke about cats.", ("Why did the cat sit on the computer? To keep an eye on the mouse.",)),
    ]


def _set_share(model, flag):
    model.backbone.cfg = dataclasses.replace(model.backbone.cfg, share_prefix=flag)


def _rewards(model, gs):
    with torch.no_grad():
        return model(model.collate(gs))


def test_shared_prefix_and_image_equal_separate_forwards(model):
    gs = groups()
    _set_share(model, True)
    shared = _rewards(model, gs)
    _set_share(model, False)
    full = _rewards(model, gs)
    # Reference: every response alone in its own batch (no sharing of anything).
    alone = torch.stack([_rewards(model, [Group(g.prompt, (r,), g.images)])[0] for g in gs for r in g.responses])
    _set_share(model, True)
    assert shared.shape == (6,)
    torch.testing.assert_close(full, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(shared, alone, atol=1e-5, rtol=0)
    assert shared.std() > 1e-4  # not a degenerate constant


def test_each_image_encoded_once(model):
    calls = []
    handle = model.backbone.vision.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        batch = model.collate(groups())
        with torch.no_grad():
            model(batch)
    finally:
        handle.remove()
    # 6 sequences, 3 distinct images: the encoder sees each image once, in one call.
    assert calls == [3]
    assert batch["input_ids"].shape[0] == 6 and batch["prefix_ids"].shape[0] == 3


def test_shared_prefix_gradients_match(model):
    gs = groups()[:2]
    grads = []
    for flag in (True, False):
        _set_share(model, flag)
        model.zero_grad()
        r = model(model.collate(gs))
        (r[0] - r[1] + 0.5 * r[3] - r[4]).backward()
        grads.append(model.backbone.projector[1].weight.grad.clone())
    _set_share(model, True)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_truncation_keeps_head_image_and_response_end(model):
    long_prompt = "word " * 400
    batch = model.collate([Group(long_prompt, ("short answer", "another short answer"), (solid_image(32, 32, 0),))])
    assert batch["attention_mask"].sum(1).max().item() <= 96
    assert batch["prefix_image_mask"].sum().item() == 4  # 2x2 image tokens survive truncation
    tok = model.backbone.tokenizer
    assert tok.decode(batch["resp_ids"][0][batch["resp_mask"][0].bool()]).endswith("short answer<|im_end|>")


def test_mean_pooling_reads_the_response_tokens(model):
    gs = groups()[:2]
    head_cfg = model.cfg.head
    try:
        model.cfg = dataclasses.replace(model.cfg, head=dataclasses.replace(head_cfg, pooling="mean"))
        got = {}
        for flag in (True, False):
            _set_share(model, flag)
            got[flag] = _rewards(model, gs)
        # By hand: the mean of the response tokens' hidden states of the full sequences.
        batch = model.collate(gs)
        with torch.no_grad():
            hidden = model.backbone._forward_full(batch)
            n_real = batch["attention_mask"].sum(1)
            manual = torch.stack([
                hidden[i, n_real[i] - batch["response_lengths"][i]: n_real[i]].mean(0) for i in range(hidden.shape[0])
            ])
            expected = model.head(manual)
    finally:
        model.cfg = dataclasses.replace(model.cfg, head=head_cfg)
        _set_share(model, True)
    torch.testing.assert_close(got[True], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(got[False], expected, atol=1e-5, rtol=0)



# ---------------------------------------------------------------------------- word projector


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


def _words_model(words, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(backbone=BackboneConfig(name="mini-vl", lm_layers=2, image_grid=2, max_length=96,
                                              projector="words", word_slots=3, image_words=words))
    return RewardModel(cfg).eval()


def test_word_projector_tokens_are_mixtures_of_vocabulary_embeddings(grounded):
    from basereward.data.regions import region_words

    model = _words_model(region_words(grounded))
    bb = model.backbone
    assert bb.tokens_per_image == 2 * 2 * 3
    pixels = torch.stack([torch.zeros(3, 224, 224), torch.ones(3, 224, 224)])
    with torch.no_grad():
        feats = bb.vision(pixels)
        tokens, logits = bb._soft_words(bb.projector(feats))
    table = bb.lm.get_input_embeddings().weight[bb.word_ids]
    expected = torch.softmax(logits, -1) @ table
    torch.testing.assert_close(tokens, expected)
    assert tokens.shape == (2, 12, bb.hidden_size)
    # Every vocabulary word (and "background" / ",") is one or more rows of the LM's own table.
    vocab = set(bb.tokenizer.convert_ids_to_tokens(bb.word_ids.tolist()))
    assert {"Ġred", "Ġbackground", ","} <= vocab


def test_alignment_teaches_cells_their_region_words(grounded):
    from basereward.data.regions import region_words

    model = _words_model(region_words(grounded))
    bb = model.backbone
    before = bb.align(grounded, epochs=1, lr=1e-3, seed=0, progress=False)
    after = bb.align(grounded, epochs=40, lr=3e-3, seed=0, progress=False)
    assert after["align_loss"] < 0.5 * before["align_loss"]
    assert after["align_slot_accuracy"] > 0.9
    # The colour of a single-object image is read back from the cell that holds the shape.
    item = grounded[0]
    target = bb._cell_targets(item, 2, 3, {int(t): i for i, t in enumerate(bb.word_ids.tolist())},
                              0)
    from basereward.data.pairs import open_image
    from basereward.models.mini_vl import preprocess_image

    with torch.no_grad():
        _, logits = bb._soft_words(bb.projector(bb.vision(preprocess_image(open_image(item.image), 224)[None])))
    predicted = logits.argmax(-1).reshape(4, 3)
    colour_word = item.regions[0].text.split()[0]
    colour_pos = int(torch.nonzero(bb.word_ids == bb._word_token_ids([colour_word])[0]))
    assert (target[:, 0] == colour_pos).any()
    assert (predicted[:, 0] == colour_pos).any()


def test_word_projector_vocabulary_travels_with_the_saved_model(grounded, tmp_path):
    from basereward.data.regions import region_words

    model = _words_model(region_words(grounded))
    model.backbone.align(grounded[:8], epochs=2, lr=1e-3, seed=0, progress=False)
    model.save_pretrained(tmp_path / "m")
    loaded = RewardModel.from_pretrained(tmp_path / "m").eval()
    assert loaded.backbone.cfg.image_words == region_words(grounded)
    gs = groups()[:2]
    torch.testing.assert_close(_rewards(loaded, gs), _rewards(model, gs), atol=1e-6, rtol=0)


def test_word_projector_without_vocabulary_is_a_config_error():
    from basereward.errors import ConfigError

    with pytest.raises(ConfigError, match="data.alignment"):
        _words_model(())


def test_training_runs_the_alignment_stage_and_saves_its_vocabulary(grounded, grounded_dir, tmp_path):
    import yaml

    from basereward.config import load_config
    from basereward.data.pairs import load_pairs
    from basereward.data.regions import region_words
    from basereward.errors import ConfigError
    from basereward.training.loop import train

    folder = grounded_dir
    pairs = load_pairs(folder / "pairs.jsonl")[:8]
    common = [f"data.alignment={folder / 'regions.jsonl'}", "model.backbone.lm_layers=2",
              "model.backbone.image_grid=2", "model.backbone.max_length=96", "train.max_steps=1",
              "train.global_batch_size=4", "train.micro_batch_size=4", "train.align_epochs=2",
              f"train.output_dir={tmp_path / 'run'}"]
    cfg = load_config(None, common + ["model.backbone.projector=words"])
    result = train(cfg, pairs, progress=False)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert tuple(saved["model"]["backbone"]["image_words"]) == region_words(grounded)
    loaded = RewardModel.from_pretrained(result["model_dir"])
    assert loaded.backbone.cfg.image_words == region_words(grounded)
    # The free-vector projector has no alignment stage: one clear error, before any training.
    with pytest.raises(ConfigError, match="projector=words"):
        train(load_config(None, common + [f"train.output_dir={tmp_path / 'run2'}"]), pairs, progress=False)


def test_features_cached_by_alignment_give_the_rewards_of_the_pixels(grounded):
    from basereward.data.regions import region_words

    model = _words_model(region_words(grounded))
    model.backbone.align(grounded[:6], epochs=1, lr=1e-3, seed=0, progress=False)
    assert len(model.backbone.feature_cache) == 6
    gs = [Group("What colour is the shape?", ("It is red.", "It is blue, I think."), (it.image,)) for it in grounded[:3]]
    batch = model.collate(gs)
    assert "image_features" in batch and "pixel_values" not in batch  # the encoder is not run again
    cached = _rewards(model, gs)
    model.backbone.feature_cache.clear()
    assert "pixel_values" in model.collate(gs)
    torch.testing.assert_close(cached, _rewards(model, gs), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- frozen-trunk cache


def _trunk_model(**backbone):
    torch.manual_seed(0)
    opts = {"lm_layers": 3, "train_lm_layers": 1, "image_grid": 2, "max_length": 96, "train_projector": False}
    cfg = ModelConfig(backbone=BackboneConfig(name="mini-vl", **{**opts, **backbone}),
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
        model.backbone.disable_trunk_cache()
        torch.testing.assert_close(got, model(model.collate(mixed)).detach(), atol=1e-5, rtol=0)
    finally:
        model.backbone.disable_trunk_cache()


def test_trunk_cache_refuses_a_trunk_that_trains():
    from basereward.errors import ConfigError

    model = _trunk_model(train_projector=True)
    with pytest.raises(ConfigError, match="train_projector=false"):
        model.backbone.enable_trunk_cache()
    model = _trunk_model(train_lm_layers=-1)
    with pytest.raises(ConfigError, match="train_lm_layers"):
        model.backbone.enable_trunk_cache()


def test_frozen_projector_is_aligned_and_saved(grounded, tmp_path):
    from basereward.data.regions import region_words

    torch.manual_seed(0)
    cfg = ModelConfig(backbone=BackboneConfig(name="mini-vl", lm_layers=2, image_grid=2, max_length=96,
                                              projector="words", image_words=region_words(grounded),
                                              train_projector=False))
    model = RewardModel(cfg).eval()
    before = model.backbone.projector[1].weight.clone()
    model.backbone.align(grounded[:8], epochs=2, lr=1e-3, seed=0, progress=False)
    assert not torch.equal(before, model.backbone.projector[1].weight)  # alignment trained it
    assert not any(p.requires_grad for p in model.backbone.projector.parameters())  # and froze it again
    model.save_pretrained(tmp_path / "m")
    loaded = RewardModel.from_pretrained(tmp_path / "m").eval()
    gs = groups()[:2]
    torch.testing.assert_close(_rewards(loaded, gs), _rewards(model, gs), atol=1e-6, rtol=0)


def test_training_with_the_trunk_cache_ends_with_the_same_model(grounded_dir, tmp_path):
    from basereward.config import load_config
    from basereward.data.pairs import load_pairs
    from basereward.training.loop import train

    pairs = load_pairs(grounded_dir / "pairs.jsonl")[:8]
    common = [f"data.alignment={grounded_dir / 'regions.jsonl'}", "model.backbone.lm_layers=2",
              "model.backbone.train_lm_layers=1", "model.backbone.projector=words",
              "model.backbone.train_projector=false", "model.backbone.image_grid=2",
              "model.backbone.max_length=96", "model.head.zero_init_last=false", "train.epochs=3",
              "train.global_batch_size=4", "train.micro_batch_size=2", "train.align_epochs=1", "train.lr=1e-3"]
    results = {}
    for flag in ("false", "true"):
        cfg = load_config(None, common + [f"train.cache_trunk={flag}", f"train.output_dir={tmp_path / flag}"])
        results[flag] = train(cfg, pairs, progress=False)
    assert results["true"]["trunk_cache"] == {"first_trained_layer": 1, "cached_groups": 8}
    assert results["true"]["train"]["loss"] == pytest.approx(results["false"]["train"]["loss"], abs=1e-5)
    models = [RewardModel.from_pretrained(results[f]["model_dir"]) for f in ("false", "true")]
    gs = [p.to_group() for p in pairs]
    torch.testing.assert_close(_rewards(models[1], gs), _rewards(models[0], gs), atol=1e-4, rtol=0)


def test_tap_max_pool_adds_the_cell_maxima_of_the_early_stages():
    from basereward.models.mini_vl import ImageEncoder

    torch.manual_seed(0)
    avg, both = ImageEncoder(2), ImageEncoder(2, tap_max_pool=True)
    assert both.out_channels == avg.out_channels + 40 + 112
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fa, fb = avg(pixels), both(pixels)
    # Layout: [final 1280 avg, stage-40 avg, stage-40 max, stage-112 avg, stage-112 max].
    torch.testing.assert_close(fb[..., :1320], fa[..., :1320])
    torch.testing.assert_close(fb[..., 1360:1472], fa[..., 1320:1432])
    assert (fb[..., 1320:1360] >= fb[..., 1280:1320] - 1e-6).all()  # a maximum is never below the mean
    assert (fb[..., 1472:] >= fb[..., 1360:1472] - 1e-6).all()


def test_cached_image_features_are_encoded_once(grounded):
    from basereward.data.regions import region_words

    model = _words_model(region_words(grounded))
    calls = []
    handle = model.backbone.vision.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        paths = [it.image for it in grounded[:3]]
        first = model.backbone.cache_image_features(paths + paths[:1], progress=False)
        again = model.backbone.cache_image_features(paths[::-1], progress=False)
    finally:
        handle.remove()
    assert calls == [3]  # three distinct files, one encoder call; the second request hits the cache
    assert first.shape[0] == 4 and torch.equal(first[0], first[3]) and torch.equal(again[0], first[2])
