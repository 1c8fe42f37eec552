"""Training never ends in a traceback or a half-written / non-finite model (issue 14).

A tiny random causal LM (tests/helpers) keeps each run to a few seconds on CPU: an AdamW overflow
is one line; infinite weights stop the run; a process whose rewards go NaN stops every process
at the same step (flag logic in one process, and two real CPU processes under torchrun); resume
skips a damaged latest checkpoint; the final model directory is replaced atomically.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.tiny_models import tiny_causal_lm_dir

from basereward.cli import main
from basereward.config import load_config
from basereward.data.pairs import save_pairs
from basereward.data.schema import PreferencePair
from basereward.errors import BaseRewardError, TrainingError
from basereward.models import reward_model as reward_model_module
from basereward.models.reward_model import HEAD_NAME, RewardModel
from basereward.training.checkpoint import CheckpointError, read_checkpoint
from basereward.training.loop import train

PAIRS = [PreferencePair(id=f"p{i}", prompt=f"question {i}", chosen=f"good {i}", rejected=f"bad answer {i}")
         for i in range(8)]
STOPPED = "training stopped and no model was saved from this run"


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return tiny_causal_lm_dir(tmp_path_factory.mktemp("lm"))


def _overrides(lm_dir, out, *extra) -> list[str]:
    return ["model.backbone.name=causal-lm", f"model.backbone.path={lm_dir}", "model.backbone.dtype=float32",
            "model.backbone.attn_implementation=eager", f"train.output_dir={out}", "train.global_batch_size=4",
            "train.micro_batch_size=2", "train.warmup_ratio=0", "train.lr=1e-3", "train.seed=3", *extra]


def _cfg(lm_dir, out, *extra):
    return load_config(None, _overrides(lm_dir, out, *extra))


def _trainable(model: RewardModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")]


# ------------------------------------------------------------------ non-finite updates


@pytest.mark.parametrize("lr", ["train.lr=3e38", "train.head_lr=3e38"])
def test_adamw_overflow_is_one_line_and_saves_nothing(lm_dir, tmp_path, capsys, lr):
    """lr / (1 - beta1) overflows float32 inside AdamW (a RuntimeError before): now the same
    TrainingError as any other non-finite step."""
    save_pairs(PAIRS, tmp_path / "pairs.jsonl")
    (tmp_path / "c.yaml").write_text("train:\n  max_steps: 2\n")
    out = tmp_path / "run"
    rc = main(["train", str(tmp_path / "c.yaml"), *_overrides(lm_dir, out, f"data.train=[{tmp_path / 'pairs.jsonl'}]"),
               lr])
    assert rc == 2
    assert _error_lines(capsys) == [
        ("error: step 1: the optimizer update is not finite (value cannot be converted to type float without "
         f"overflow); {STOPPED} (lower train.lr / train.head_lr, or look for extreme rewards in the data)")]
    assert not (out / "model").exists() and not (out / "result.json").exists()


def test_infinite_weights_after_an_update_stop_the_run(lm_dir, tmp_path):
    """A finite loss and gradient can still leave an infinite weight (a huge learning rate):
    checked after every update, before anything could be saved."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    calls = []

    def blow_up(optimizer, args, kwargs):  # the second update leaves one weight infinite
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                optimizer.param_groups[-1]["params"][0].view(-1)[0] = float("inf")

    out = tmp_path / "run"
    handle = register_optimizer_step_post_hook(blow_up)
    try:
        with pytest.raises(TrainingError) as e:
            train(_cfg(lm_dir, out, "train.max_steps=4"), PAIRS, progress=False)
    finally:
        handle.remove()
    assert str(e.value).startswith(f"step 2: the weights are not all finite after the update; {STOPPED}")
    assert not (out / "model").exists()


def test_a_peer_process_nan_stops_this_process_at_the_same_step(lm_dir, tmp_path, monkeypatch):
    """The non-finite checks read the step's sums after they are added across processes: a NaN
    reward on another process stops this one too (with DDP, one process raising alone would leave
    the others waiting). A peer is simulated by adding its flag inside the all-reduce."""
    from accelerate import Accelerator

    real_reduce = Accelerator.reduce
    reduced = []

    def reduce_with_peer(self, tensor, reduction="sum", scale=1.0):
        out = real_reduce(self, tensor, reduction, scale)
        if out.numel() == 7:  # the step sums: loss, correct, gap, count, non-finite micro-batches, cuts
            reduced.append(1)
            if len(reduced) == 3:
                out = out + torch.tensor([0, 0, 0, 0, 1, 0, 0], dtype=out.dtype, device=out.device)
        return out

    monkeypatch.setattr(Accelerator, "reduce", reduce_with_peer)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=rf"^step 3: the rewards are not all finite; {STOPPED}"):
        train(_cfg(lm_dir, out, "train.max_steps=5"), PAIRS, progress=False)
    assert not (out / "model").exists()


_DDP_SCRIPT = '''
import os, sys
from basereward.config import load_config
from basereward.errors import TrainingError
from basereward.models.reward_model import RewardModel
from basereward.training.loop import train
from basereward.data.schema import PreferencePair

rank = int(os.environ["RANK"])
cfg = load_config(None, sys.argv[2:])
pairs = [PreferencePair(id=f"p{i}", prompt=f"question {i}", chosen=f"good {i}", rejected=f"bad answer {i}")
         for i in range(8)]
model = RewardModel(cfg.model)
calls = [0]

def poison(module, inputs, output):  # NaN rewards from the second forward on, on rank 1 only
    calls[0] += 1
    return output * float("nan") if rank == 1 and calls[0] >= 2 else output

model.head.register_forward_hook(poison)
try:
    train(cfg, pairs, model=model, progress=False)
except TrainingError as e:
    # One write per line: two processes share stderr, and print() writes text and newline apart.
    os.write(2, f"rank {rank} error: {e}\\n".encode())
    # Wait for the other process's line: torchrun stops the others as soon as one exits.
    import datetime, torch.distributed as dist
    dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
    sys.exit(2)
print(f"rank {rank} finished", file=sys.stderr, flush=True)
'''


@pytest.mark.slow
def test_two_cpu_processes_stop_together_when_one_goes_nan(lm_dir, tmp_path):
    """Two real processes (torchrun, gloo, DDP): rank 1's rewards turn NaN at step 2. Both stop
    with the same one-line error and no model; before, rank 1 raised alone and rank 0 died in the
    gradient all-reduce ("Connection closed by peer") or waited for it."""
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    out = tmp_path / "run"
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           "x", *_overrides(lm_dir, out, "train.max_steps=3")]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0
    lines = {line.split(" error: ")[0]: line.split(" error: ")[1]
             for line in proc.stderr.splitlines() if line.startswith("rank ") and " error: " in line}
    assert set(lines) == {"rank 0", "rank 1"}, proc.stderr[-3000:]
    assert lines["rank 0"] == lines["rank 1"]
    assert lines["rank 0"].startswith(f"step 2: the rewards are not all finite; {STOPPED}")
    assert "finished" not in proc.stderr and "Connection closed" not in proc.stderr
    assert not (out / "model").exists()


# ------------------------------------------------------------------ resume from a damaged checkpoint


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def crashed(lm_dir, tmp_path_factory):
    """A run killed after step 3 (checkpoints step 2 and 3 kept), and the uninterrupted run's weights."""
    root = tmp_path_factory.mktemp("resume")
    cfg = _cfg(lm_dir, root / "straight", "train.max_steps=5")
    straight = _seeded_model(cfg)
    train(cfg, PAIRS, model=straight, progress=False)

    def crash_at_3(step, metrics):
        if step == 3:
            raise Crash()

    cfg = _cfg(lm_dir, root / "crashed", "train.max_steps=5", "train.save_every=1", "train.keep_checkpoints=2")
    with pytest.raises(Crash):
        train(cfg, PAIRS, model=_seeded_model(cfg), callbacks=[crash_at_3], progress=False)
    names = sorted(p.name for p in (root / "crashed" / "checkpoints").iterdir())
    assert names == ["step-000002", "step-000003"]
    return {"dir": root / "crashed", "straight": _trainable(straight)}


def _seeded_model(cfg) -> RewardModel:
    torch.manual_seed(0)
    return RewardModel(cfg.model)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


SAFETENSORS_DAMAGE = r"not a readable safetensors file \(Error while deserializing header: .+\)"
DAMAGE = {  # kind -> (damage a checkpoint folder, the error after "<checkpoint>/")
    "trainer_state truncated": (lambda c: _truncate(c / "trainer_state.json"),
                                r"trainer_state.json:\d+: invalid JSON \(.+\)"),
    "optimizer deleted": (lambda c: (c / "optimizer.safetensors").unlink(), "optimizer.safetensors: missing"),
    "rng truncated": (lambda c: _truncate(c / "rng.safetensors"), "rng.safetensors: " + SAFETENSORS_DAMAGE),
    "head truncated": (lambda c: _truncate(c / "model" / HEAD_NAME), f"model/{HEAD_NAME}: " + SAFETENSORS_DAMAGE),
    "backbone truncated": (lambda c: _truncate(c / "model" / "backbone.safetensors"),
                           "model/backbone.safetensors: " + SAFETENSORS_DAMAGE),
    "model config emptied": (lambda c: (c / "model" / "model_config.json").write_text(""),
                             r"model/model_config.json:1: invalid JSON \(Expecting value at column 1\)"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_read_checkpoint_names_every_kind_of_damage(crashed, tmp_path, kind):
    ckpt = tmp_path / "step-000003"
    shutil.copytree(crashed["dir"] / "checkpoints" / "step-000003", ckpt)
    read_checkpoint(ckpt)  # the intact copy reads
    damage, expected = DAMAGE[kind]
    damage(ckpt)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(ckpt)
    assert re.fullmatch(re.escape(f"{ckpt}/") + expected, str(e.value)), str(e.value)
    assert "\n" not in str(e.value)


def test_resume_auto_falls_back_past_a_damaged_latest_checkpoint(crashed, lm_dir, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(crashed["dir"], out)
    _truncate(out / "checkpoints" / "step-000003" / "optimizer.safetensors")
    cfg = _cfg(lm_dir, out, "train.max_steps=5", "train.save_every=1", "train.keep_checkpoints=2",
               "train.resume=auto")
    resumed = RewardModel(cfg.model)
    result = train(cfg, PAIRS, model=resumed, progress=False)
    err = capsys.readouterr().err
    assert (f"[basereward] warning: cannot resume from step-000003: {out / 'checkpoints' / 'step-000003'}"
            "/optimizer.safetensors: not a readable safetensors file") in err
    assert result["steps"] == 5
    # Resumed from step 2, so the weights are those of the uninterrupted run...
    for k, v in _trainable(resumed).items():
        torch.testing.assert_close(v, crashed["straight"][k], atol=1e-6, rtol=1e-5, msg=k)
    # ... and the log holds each step once (the killed run's step 3 was dropped and redone).
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    assert (out / "model" / "model_config.json").is_file()


def test_no_readable_checkpoint_is_one_line(crashed, lm_dir, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(crashed["dir"], out)
    _truncate(out / "checkpoints" / "step-000003" / "trainer_state.json")
    (out / "checkpoints" / "step-000002" / "rng.safetensors").unlink()
    save_pairs(PAIRS, tmp_path / "pairs.jsonl")
    (tmp_path / "c.yaml").write_text("train:\n  resume: auto\n  max_steps: 5\n")
    rc = main(["train", str(tmp_path / "c.yaml"),
               *_overrides(lm_dir, out, f"data.train=[{tmp_path / 'pairs.jsonl'}]")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("warning: cannot resume from") == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    ckpts = out / "checkpoints"
    assert len(errors) == 1 and errors[0].startswith(
        f"error: train.resume=auto: no readable checkpoint under {ckpts} ({ckpts / 'step-000003'}/trainer_state.json:")
    assert errors[0].endswith(f"; {ckpts / 'step-000002'}/rng.safetensors: missing)")
    assert not (out / "model").exists()

    # A checkpoint named explicitly is not replaced by another one: its damage is the error.
    bad = ckpts / "step-000003"
    with pytest.raises(TrainingError, match=rf"^train.resume: {bad}/trainer_state.json:\d+: invalid JSON"):
        train(_cfg(lm_dir, out, "train.max_steps=5", f"train.resume={bad}"), PAIRS, progress=False)


def test_a_checkpoint_of_another_model_is_one_line(crashed, lm_dir):
    """Readable files that do not fit (another head): an error naming the checkpoint, not a
    traceback from load_state_dict."""
    ckpt = crashed["dir"] / "checkpoints" / "step-000002"
    cfg = _cfg(lm_dir, crashed["dir"], "train.max_steps=5", f"train.resume={ckpt}", "model.head.num_layers=3")
    with pytest.raises(TrainingError, match=rf"^train.resume: {ckpt}: does not fit this run \(.*reward_head"):
        train(cfg, PAIRS, progress=False)


# ------------------------------------------------------------------ atomic model directory


@pytest.fixture(scope="module")
def two_models(lm_dir):
    cfg = _cfg(lm_dir, "unused")
    a, b = RewardModel(cfg.model), RewardModel(cfg.model)
    with torch.no_grad():
        a.head.net[-1].bias.fill_(1.0)
        b.head.net[-1].bias.fill_(2.0)
    return a, b


def _head_bias(model_dir: Path) -> float:
    from safetensors.torch import load_file

    state = load_file(str(model_dir / HEAD_NAME))
    return float(state[[k for k in state if k.endswith("bias")][-1]])


def test_save_replaces_a_model_whole(two_models, tmp_path):
    a, b = two_models
    a.save_pretrained(tmp_path / "model", files={"note.txt": "a"})
    b.save_pretrained(tmp_path / "model")
    assert _head_bias(tmp_path / "model") == 2.0
    assert not (tmp_path / "model" / "note.txt").exists()  # nothing of the old model is mixed in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary directory left


def test_an_interrupted_save_leaves_the_old_model_or_none(two_models, tmp_path, monkeypatch):
    a, b = two_models
    a.save_pretrained(tmp_path / "model")
    before = {p.name: p.read_bytes() for p in (tmp_path / "model").iterdir()}
    real_save = reward_model_module.save_file
    written = []

    def disk_full_on_second_file(tensors, path):  # the head is written, then the disk fills
        written.append(path)
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        real_save(tensors, path)

    monkeypatch.setattr(reward_model_module, "save_file", disk_full_on_second_file)
    with pytest.raises(OSError):
        b.save_pretrained(tmp_path / "model")
    assert {p.name: p.read_bytes() for p in (tmp_path / "model").iterdir()} == before  # the old model, whole
    assert RewardModel.from_pretrained(tmp_path / "model").head.net[-1].bias.item() == 1.0
    written.clear()
    with pytest.raises(OSError):
        b.save_pretrained(tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no half model, no temporary one


def test_save_refuses_to_replace_a_folder_that_is_not_a_model(two_models, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(BaseRewardError, match="exists and is not a basereward model directory"):
        two_models[0].save_pretrained(tmp_path / "notes")
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["keep.txt"]
