"""mini-vl (the embedded default) on its real pretrained weights, shortened to 2 LM layers.

The pair's image is encoded once and shared; with `share_prefix` the prompt is also run once per
group. Both must give the rewards of running every (prompt, image, response) on its own. The
optional stages (alignment, trunk cache) are in test_mini_vl_stages.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from helpers.tiny_models import mixed_groups as groups
from helpers.tiny_models import solid_image

from basereward.config import BackboneConfig, HeadConfig, MiniVLConfig, ModelConfig
from basereward.data.schema import Group
from basereward.models.reward_model import RewardModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=BackboneConfig(name="mini-vl", max_length=96, mini_vl=MiniVLConfig(lm_layers=2, image_grid=2)),
                      head=HeadConfig(zero_init_last=False))
    return RewardModel(cfg).eval()


def _set_share(model, flag):
    cfg = model.backbone.cfg
    model.backbone.cfg = dataclasses.replace(cfg, mini_vl=dataclasses.replace(cfg.mini_vl, share_prefix=flag))


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


def test_multi_turn_prompt_image_in_the_first_user_turn_oldest_text_cut_first(model):
    history = (("user", "Here is my picture."), ("assistant", "I see it."))
    group = Group("What colour is it?", ("Red.", "Blue."), (solid_image(32, 32, 0),), history=history)
    batch = model.collate([group])
    tok = model.backbone.tokenizer
    ids, img = batch["prefix_ids"][0], batch["prefix_image_mask"][0]
    real = batch["prefix_mask"][0].bool()
    # Image tokens right after the first user header; the text around them is the ChatML of the messages.
    before = tok.decode(ids[: int(img.nonzero()[0])])
    after = tok.decode(ids[(~img) & real][len(tok(before)["input_ids"]):])
    assert before.endswith("<|im_start|>user\n") and before.count("<|im_start|>user") == 1
    assert after == ("Here is my picture.<|im_end|>\n<|im_start|>assistant\nI see it.<|im_end|>\n"
                     "<|im_start|>user\nWhat colour is it?<|im_end|>\n<|im_start|>assistant\n")
    # A long first turn over the prompt budget (48 of max_length 96) loses its start; the question stays.
    long = Group("What colour is it?", ("Red.",), (solid_image(32, 32, 0),),
                 history=(("user", "blah " * 60 + "Here is my picture."), ("assistant", "I see it.")))
    cut = model.collate([long])
    text = tok.decode(cut["prefix_ids"][0][cut["prefix_mask"][0].bool() & ~cut["prefix_image_mask"][0]])
    assert int(cut["prefix_mask"][0].sum()) == 48 and cut["truncated_prompt"].tolist() == [True]
    assert text.endswith("Here is my picture.<|im_end|>\n<|im_start|>assistant\nI see it.<|im_end|>\n"
                         "<|im_start|>user\nWhat colour is it?<|im_end|>\n<|im_start|>assistant\n")
    assert cut["prefix_image_mask"][0].sum().item() == 4


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


def test_bf16_encoder_gives_float32_features_close_to_float32_ones():
    from basereward.models.mini_vl import ImageEncoder

    torch.manual_seed(0)
    full, half = ImageEncoder(2, tap_max_pool=True).eval(), ImageEncoder(2, tap_max_pool=True, bf16=True).eval()
    half.load_state_dict(full.state_dict())
    pixels = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        a, b = full(pixels), half(pixels)
    assert b.dtype == torch.float32 and b.shape == a.shape and not torch.equal(a, b)
    # bf16 keeps 8 bits of mantissa: the features agree to about a percent of their scale.
    assert (a - b).abs().max() < 0.05 * a.abs().max()
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.999


def test_encoder_runs_a_few_pictures_per_pass_on_cpu_with_the_same_features():
    from basereward.models.mini_vl import ImageEncoder

    torch.manual_seed(0)
    calls: list[int] = []
    for bf16 in (False, True):
        enc = ImageEncoder(2, tap_max_pool=True, bf16=bf16).eval()
        enc._features = (lambda f: lambda px: (calls.append(len(px)), f(px))[1])(enc._features)
        pixels = torch.randn(11, 3, 64, 64)
        calls.clear()
        with torch.no_grad():
            whole = enc(pixels)
            assert calls == [4, 4, 3]  # CPU_PICTURES_PER_PASS at a time, the rest last
            alone = torch.cat([enc(pixels[i:i + 1]) for i in range(len(pixels))])
            reordered = enc(pixels.flip(0)).flip(0)
        assert whole.shape == (11, 4, enc.out_channels) and whole.dtype == torch.float32
        # A picture's features do not depend on the pictures encoded with it (bit for bit on the
        # 2-core EPYC the demo was measured on; a CPU whose kernels change with the pass size may
        # differ in the last bits, far below the gap between two pictures' features).
        tol = (1e-2 if bf16 else 1e-5) * float(whole.abs().max())
        assert float((whole[0] - whole[1]).abs().max()) > 10 * tol
        torch.testing.assert_close(alone, whole, atol=tol, rtol=0)
        torch.testing.assert_close(reordered, whole, atol=tol, rtol=0)


def test_colour_histogram_appends_the_cell_histograms_to_the_cnn_features():
    from basereward.models.mini_vl import ImageEncoder
    from basereward.models.mini_vl.vision import colour_histogram

    torch.manual_seed(0)
    plain, with_hist = ImageEncoder(2, tap_max_pool=True), ImageEncoder(2, tap_max_pool=True, colour_histogram=True)
    assert with_hist.out_channels == plain.out_channels + 2 * 125
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fp, fh = plain(pixels), with_hist(pixels)
    torch.testing.assert_close(fh[..., :plain.out_channels], fp)
    torch.testing.assert_close(fh[..., plain.out_channels:], colour_histogram(pixels, 2, 5).flatten(2).transpose(1, 2))


def test_encoder_without_the_semantic_map_gives_the_early_stages_and_skips_the_late_blocks():
    from basereward.models.mini_vl import ImageEncoder

    torch.manual_seed(0)
    full, early = ImageEncoder(2, tap_max_pool=True).eval(), ImageEncoder(2, tap_max_pool=True, semantic=False).eval()
    assert full.channel_blocks == (1280, 40, 40, 112, 112) and early.channel_blocks == (40, 40, 112, 112)
    assert early.out_channels == 304 == sum(early.channel_blocks)
    ran: list[str] = []
    for name in ("_conv_head",):
        getattr(early.net, name).register_forward_hook(lambda *_: ran.append("head"))
    early.net._blocks[11].register_forward_hook(lambda *_: ran.append("block 11"))
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ff, fe = full(pixels), early(pixels)
    assert ran == []  # the CNN stopped after the last tapped block
    torch.testing.assert_close(fe, ff[..., 1280:], atol=0, rtol=0)
    with pytest.raises(ValueError, match="multiscale"):
        ImageEncoder(2, multiscale=False, semantic=False)


def test_per_block_norm_normalises_each_channel_block_on_its_own():
    from basereward.models.mini_vl.projector import build_projector

    torch.manual_seed(0)
    blocks = (6, 2, 4)
    per_block, joint = build_projector(12, 8, 2, blocks), build_projector(12, 8, 2)
    joint[1:].load_state_dict(per_block[1:].state_dict())
    x = torch.randn(3, 5, 12)
    louder = x.clone()
    louder[..., :6] = 1000 * louder[..., :6] + 7  # one block rescaled and shifted
    with torch.no_grad():
        # Per block: each block's own scale is normalised away; jointly, the loud block drowns the rest.
        torch.testing.assert_close(per_block(louder), per_block(x), atol=1e-4, rtol=1e-4)
        assert (joint(louder) - joint(x)).abs().max() > 0.1
        # By hand: LayerNorm (unit weight, zero bias at init) of each block, then the MLP.
        normed = torch.cat([torch.nn.functional.layer_norm(p, p.shape[-1:]) for p in x.split(blocks, -1)], -1)
        torch.testing.assert_close(per_block(x), per_block[1:](normed))
    with pytest.raises(ValueError, match="add up"):
        build_projector(12, 8, 2, (6, 2))


def test_early_features_model_saves_and_loads_with_the_same_rewards(tmp_path):
    from basereward.config import ConfigError

    torch.manual_seed(0)
    mv = MiniVLConfig(lm_layers=2, image_grid=2, image_tap_max_pool=True, image_semantic=False, projector_norm="per_block")
    cfg = ModelConfig(backbone=BackboneConfig(name="mini-vl", max_length=96, mini_vl=mv), head=HeadConfig(zero_init_last=False))
    m = RewardModel(cfg).eval()
    assert m.backbone.projector[0].blocks == [40, 40, 112, 112]
    gs = groups()
    m.save_pretrained(tmp_path / "m")
    loaded = RewardModel.from_pretrained(tmp_path / "m").eval()
    torch.testing.assert_close(_rewards(loaded, gs), _rewards(m, gs), atol=0, rtol=0)
    with pytest.raises(ConfigError, match="image_semantic"):
        from basereward.config import load_config
        from basereward.demo import demo_config_path

        load_config(demo_config_path(), ["model.backbone.mini_vl.image_semantic=false",
                                         "model.backbone.mini_vl.image_multiscale=false",
                                         "model.backbone.mini_vl.image_tap_max_pool=false"])


def test_capabilities_are_declared_on_the_class():
    from basereward.models.backbone import Capabilities, available_backbones
    from basereward.models.mini_vl import MiniVL

    assert MiniVL.capabilities == Capabilities(alignment=True, trunk_cache=True, prefix_sharing=True,
                                               image_feature_cache=True)
    assert available_backbones("alignment") == available_backbones("trunk_cache") == ["mini-vl"]


def test_collator_is_a_small_picklable_object_with_the_same_batches(model, tmp_path):
    import pickle

    from basereward.models.mini_vl.collator import MiniVLCollator

    collator = model.collator
    assert isinstance(collator, MiniVLCollator) and collator is model.backbone.collator
    blob = pickle.dumps(collator)
    assert len(blob) < 20_000_000  # tokenizer + settings, not the 100M-parameter model
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"im{i}.png"))
        solid_image(60, 40, 10 + i).save(paths[-1])
    gs = groups() + [Group("Which picture?", ("left", "right"), (paths[0],)), Group("And this?", ("yes",), (paths[1],))]

    def same(a, b):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k], k

    same(pickle.loads(blob)(gs), model.collate(gs))
    # The encoder-feature cache travels with the collator: cached files skip the encoder.
    model.backbone.cache_image_features(paths, progress=False)
    try:
        cached = pickle.loads(pickle.dumps(collator))(gs[3:])
        assert "image_features" in cached and "pixel_values" not in cached
        same(cached, model.collate(gs[3:]))
    finally:
        model.backbone.feature_cache.clear()


def test_cached_image_features_are_encoded_once(model, tmp_path):
    calls = []
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"im{i}.png"))
        solid_image(50, 50, 20 + i).save(paths[-1])
    handle = model.backbone.vision.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        model.backbone.cache_image_features(paths + paths[:1], progress=False)
        model.backbone.cache_image_features(paths[::-1], progress=False)
        cache = dict(model.backbone.feature_cache)
    finally:
        handle.remove()
        model.backbone.feature_cache.clear()
    assert calls == [3]  # three distinct files, one encoder call; the second request hits the cache
    assert len(cache) == 3 and cache[str(Path(paths[0]).resolve())].shape == (4, model.backbone.vision.out_channels)


def test_question_first_layout_puts_the_image_after_the_prompt_and_shares_it_exactly():
    """`image_position: after_prompt`: [head][prompt][image][end of turn]; the shared-prefix forward
    equals the full one, a long prompt is cut before the image, and multi-turn prompts are refused."""
    from basereward.errors import ConfigError

    torch.manual_seed(0)
    mv = MiniVLConfig(lm_layers=2, image_grid=2, image_position="after_prompt")
    model = RewardModel(ModelConfig(backbone=BackboneConfig(name="mini-vl", max_length=96, max_prompt_length=40,
                                                            mini_vl=mv),
                                    head=HeadConfig(zero_init_last=False))).eval()
    tok = model.backbone.tokenizer
    long = "Please look very carefully at every corner of this picture. " * 4 + "Is there a red star?"
    gs = [Group("Is there a red star?", ("Yes.", "No, there is none."), (solid_image(64, 64, 1),)),
          Group(long, ("Yes.",), (solid_image(64, 64, 2),)), Group("Tell a joke.", ("Ha.",))]
    batch = model.collate(gs)
    ids, mask = batch["prefix_ids"][0].tolist(), batch["prefix_image_mask"][0].tolist()
    first = mask.index(1)
    assert sum(mask) == 4 and mask[first:first + 4] == [1, 1, 1, 1]
    assert tok.decode(ids[:first]).endswith("Is there a red star?")
    assert tok.decode(ids[first + 4:]).startswith("<|im_end|>")
    # The long prompt is cut to the budget from its start; its end, the image and the turn's end stay.
    n = int(batch["prefix_mask"][1].sum())
    ids1, mask1 = batch["prefix_ids"][1].tolist()[:n], batch["prefix_image_mask"][1].tolist()[:n]
    assert n == 40 and bool(batch["truncated_prompt"][2]) and sum(mask1) == 4
    assert tok.decode(ids1[:mask1.index(1)]).endswith("Is there a red star?")
    shared = _rewards(model, gs)
    _set_share(model, False)
    torch.testing.assert_close(_rewards(model, gs), shared, atol=1e-5, rtol=0)
    _set_share(model, True)
    with pytest.raises(ConfigError, match="image_position=after_prompt takes single-turn prompts"):
        model.collate([Group("And now?", ("Yes.",), (solid_image(64, 64, 1),), history=(("user", "Hi"), ("assistant", "Hello")))])
