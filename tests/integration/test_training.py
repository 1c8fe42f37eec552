"""The training loop through the real transformers classes (tiny random Qwen-VL checkpoints, CPU).

Checks: first-step loss = ln 2 with a zero-initialised last head layer; save -> load gives the same
rewards; batch 4 x accumulation 1 equals batch 1 x accumulation 4; an interrupted and resumed run
ends with the same weights as an uninterrupted one; the CLI writes the documented files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers.tiny_models import solid_image, tiny_qwen2vl_dir, tiny_qwen25vl_dir

from basereward.cli import main
from basereward.config import load_config
from basereward.data.pairs import load_pairs, save_pairs
from basereward.data.schema import PreferencePair
from basereward.models.reward_model import RewardModel
from basereward.scoring import Scorer
from basereward.training.loop import train

ARCH_DIRS = {"qwen2.5-vl": tiny_qwen25vl_dir, "qwen2-vl": tiny_qwen2vl_dir}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    dirs = {arch: fn(root) for arch, fn in ARCH_DIRS.items()}
    img_dir = root / "data" / "images"
    img_dir.mkdir(parents=True)
    pairs = []
    for i in range(8):
        images: tuple[str, ...] = ()
        if i % 4 != 3:  # a text-only pair in every four: mixed batches
            p = img_dir / f"img{i}.png"
            solid_image(56 + 14 * (i % 3), 56, seed=i).save(p)
            images = (str(p),)
        pairs.append(PreferencePair(id=f"p{i}", prompt=f"Question number {i}?", chosen=f"good answer {i}",
                                    rejected=f"bad {i} answer here", images=images, source="toy",
                                    category="a" if i % 2 else "b"))
    pair_file = root / "data" / "pairs.jsonl"
    save_pairs(pairs, pair_file)
    return {"root": root, "dirs": dirs, "pairs": pair_file}


def _cfg(ws, arch, out, *extra):
    return load_config(None, [
        f"model.backbone.name={arch}", f"model.backbone.path={ws['dirs'][arch]}",
        "model.backbone.dtype=float32", "model.backbone.attn_implementation=eager",
        "model.backbone.qwen_vl.freeze_vision=false",
        f"train.output_dir={out}", "train.lr=1e-3", "train.warmup_ratio=0", "train.seed=7",
        *extra,
    ])


def _trainable(model: RewardModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", ["qwen2.5-vl", "qwen2-vl"])
def test_cli_train_first_step_ln2_and_save_load(workspace, arch, tmp_path):
    out = tmp_path / "run"
    rc = main([
        "train", str(_write_yaml(tmp_path)), f"model.backbone.name={arch}",
        f"model.backbone.path={workspace['dirs'][arch]}", "model.backbone.dtype=float32",
        f"data.train=[{workspace['pairs']}]", f"data.validation={workspace['pairs']}",
        f"train.output_dir={out}", "train.global_batch_size=4", "train.micro_batch_size=2",
        "train.max_steps=3", "train.lr=1e-3", "train.warmup_ratio=0",
    ])
    assert rc == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    assert len(steps) == 3
    # Zero-initialised last layer: every reward is 0 before the first update -> BT loss = ln 2.
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert steps[-1]["loss"] != pytest.approx(math.log(2), abs=1e-4)  # and it does train
    model_dir = out / "model"
    for name in ("model_config.json", "reward_head.safetensors", "backbone.safetensors", "train_config.yaml"):
        assert (model_dir / name).is_file(), name
    assert "validation" in json.loads((out / "result.json").read_text())

    # save -> load: identical rewards, in-process and reloaded.
    pairs = load_pairs(workspace["pairs"])
    loaded = RewardModel.from_pretrained(model_dir)
    a = Scorer(loaded, batch_size=3).score(pairs)
    again = Scorer(RewardModel.from_pretrained(model_dir), batch_size=16).score(pairs)
    flat = lambda xs: [v for pair in xs for v in pair]  # noqa: E731
    assert flat(a) == pytest.approx(flat(again), abs=1e-6)  # batch composition does not change a score
    assert any(abs(c - r) > 1e-6 for c, r in a)


def _write_yaml(tmp_path: Path) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text("model:\n  head:\n    num_layers: 2\n    activation: silu\n")
    return p


def test_batch_times_accumulation_equivalence(workspace, tmp_path):
    pairs = load_pairs(workspace["pairs"])
    results = []
    for micro in (4, 1):
        # The second run also collates in a DataLoader worker process (the collator, not the model).
        cfg = _cfg(workspace, "qwen2.5-vl", tmp_path / f"m{micro}", "train.global_batch_size=4",
                   f"train.micro_batch_size={micro}", "train.max_steps=2", "train.max_grad_norm=0",
                   f"train.num_workers={int(micro == 1)}")
        torch.manual_seed(0)
        model = RewardModel(cfg.model)
        train(cfg, pairs, model=model, progress=False)
        results.append(_trainable(model))
    a, b = results
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_interrupted_and_resumed_run_matches_uninterrupted(workspace, tmp_path, ema):
    pairs = load_pairs(workspace["pairs"])
    # With train.ema_decay the saved model is the weights' moving average, which the checkpoint
    # carries in the optimizer state.
    common = ["train.global_batch_size=4", "train.micro_batch_size=2", "train.max_steps=4",
              "train.warmup_ratio=0.25", f"train.ema_decay={ema}"]

    straight_cfg = _cfg(workspace, "qwen2.5-vl", tmp_path / "straight", *common)
    torch.manual_seed(0)  # both runs start from the same head (the model is built outside train())
    straight = RewardModel(straight_cfg.model)
    train(straight_cfg, pairs, model=straight, progress=False)

    class Crash(Exception):
        pass

    def crash_at_3(step, metrics):  # after step 3 is logged, one step past the last checkpoint
        if step == 3:
            raise Crash()

    out = tmp_path / "interrupted"
    cfg = _cfg(workspace, "qwen2.5-vl", out, *common, "train.save_every=2")
    torch.manual_seed(0)
    with pytest.raises(Crash):
        train(cfg, pairs, model=RewardModel(cfg.model), callbacks=[crash_at_3], progress=False)
    assert (out / "checkpoints" / "step-000002" / "optimizer.safetensors").is_file()
    resumed_cfg = _cfg(workspace, "qwen2.5-vl", out, *common, "train.save_every=2", "train.resume=auto")
    resumed = RewardModel(resumed_cfg.model)  # fresh weights: everything must come from the checkpoint
    result = train(resumed_cfg, pairs, model=resumed, progress=False)
    assert result["steps"] == 4
    # The precision the run resolved is recorded (train.mixed_precision=auto: float32 on a CPU).
    from basereward.training.stages import resolve_mixed_precision

    assert result["precision"] == resolve_mixed_precision("auto")
    a, b = _trainable(straight), _trainable(resumed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5, msg=k)
    # The log had step 3 from the killed run; resuming from step 2 drops it, so every step is
    # logged once and the log describes the run that produced the model.
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_worker_dataset_pickles_the_collator_not_the_model(workspace, tmp_path):
    import pickle

    from basereward.training.plan import MicroBatches, StepPlan

    model = RewardModel(_cfg(workspace, "qwen2.5-vl", tmp_path).model)
    pairs = load_pairs(workspace["pairs"])
    data = MicroBatches(StepPlan(len(pairs), 4, 2, 1, seed=3), pairs, model.collator, rank=0, start_step=0, end_step=2)
    blob = pickle.dumps(data)
    copy = pickle.loads(blob)
    assert not any(isinstance(v, torch.nn.Module) for v in vars(copy.collator).values())
    assert len(blob) < sum(p.numel() * p.element_size() for p in model.parameters())  # no weights inside
    assert len(copy) == 4
    for k in range(len(copy)):
        a, b = copy[k], data[k]
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), k


def test_a_diverging_run_stops_with_one_error_and_saves_no_model(workspace, tmp_path):
    from basereward.errors import TrainingError

    pairs = load_pairs(workspace["pairs"])
    out = tmp_path / "diverge"
    cfg = _cfg(workspace, "qwen2.5-vl", out, "train.global_batch_size=4", "train.micro_batch_size=2",
               "train.max_steps=6", "train.lr=1e30", "train.head_lr=1e30", "train.max_grad_norm=0",
               "model.head.zero_init_last=false")
    with pytest.raises(TrainingError, match=r"step \d: the (loss|rewards) (is|are) .*; training stopped and no model"):
        train(cfg, pairs, model=RewardModel(cfg.model), progress=False)
    assert not (out / "model").exists() and not (out / "result.json").exists()
