"""The training loop on Accelerate.

One command runs on CPU, one GPU, or many (`accelerate launch` with DDP/FSDP/DeepSpeed configs).
A global batch of `train.global_batch_size` pairs is split into micro-batches of
`micro_batch_size` pairs on each of `world_size` processes, with gradient accumulation making
up the rest. Each micro-batch puts chosen and rejected of every pair in one forward (the pair's
image encoded once).

The data order is a pure function of (seed, epoch): step s of the run always sees the same pairs,
so a run that is interrupted and resumed from a checkpoint ends with the same weights as one
that was not.
"""

from __future__ import annotations

import dataclasses

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import yaml

from ..config import Config, ConfigError, save_config, to_dict
from ..data.schema import PreferencePair
from ..losses import reward_loss
from ..models.reward_model import RewardModel
from ..scoring import length_estimate
from .checkpoint import list_checkpoints, load_optimizer_state, read_checkpoint, set_rng_state, write_checkpoint


@dataclass(frozen=True)
class StepPlan:
    """Which pairs each micro-batch of each optimizer step uses (deterministic in seed/epoch)."""

    num_pairs: int
    global_batch: int
    micro_batch: int
    world_size: int
    seed: int
    lengths: tuple[int, ...] = ()
    """Optional length estimate per pair; a step's pairs are then split into micro-batches of
    similar length (less padding). The step's set of pairs, and so its gradient, is unchanged."""

    def steps_per_epoch(self) -> int:
        return self.num_pairs // self.global_batch

    def accum(self) -> int:
        return self.global_batch // (self.micro_batch * self.world_size)

    def step_indices(self, step: int) -> np.ndarray:
        """Indices of the global batch of optimizer step `step` (0-based)."""
        spe = self.steps_per_epoch()
        epoch, offset = divmod(step, spe)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_pairs)
        return perm[offset * self.global_batch : (offset + 1) * self.global_batch]

    def micro_indices(self, step: int, rank: int, micro: int) -> np.ndarray:
        """The `micro`-th micro-batch of process `rank` in optimizer step `step`."""
        idx = self.step_indices(step)
        if self.lengths:
            idx = idx[np.argsort(np.asarray(self.lengths)[idx], kind="stable")]
        start = (rank * self.accum() + micro) * self.micro_batch
        return idx[start : start + self.micro_batch]


class _MicroBatches(torch.utils.data.Dataset):
    """Item k = the collated k-th micro-batch from `start_step` on, for one process.

    Collation (image decoding, tokenisation) runs in DataLoader workers when num_workers > 0.
    """

    def __init__(self, plan: StepPlan, pairs: Sequence[PreferencePair], collate: Callable, rank: int,
                 start_step: int, end_step: int) -> None:
        self.plan, self.pairs, self.collate, self.rank = plan, pairs, collate, rank
        self.start, self.end = start_step, end_step

    def __len__(self) -> int:
        return (self.end - self.start) * self.plan.accum()

    def __getitem__(self, k: int) -> dict[str, Any]:
        step, micro = divmod(k, self.plan.accum())
        idx = self.plan.micro_indices(self.start + step, self.rank, micro)
        return self.collate([self.pairs[i].to_group() for i in idx])


def _param_groups(model: RewardModel, lr: float, head_lr: float, weight_decay: float):
    """Head and projector (new, randomly initialised) may use their own learning rate."""
    fast, slow = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (fast if name.startswith("head.") or ".projector." in f".{name}" else slow).append((name, p))
    groups, names = [], []
    for params, group_lr in ((slow, lr), (fast, head_lr or lr)):
        if params:
            groups.append({"params": [p for _, p in params], "lr": group_lr, "weight_decay": weight_decay})
            names.extend(n for n, _ in params)
    return groups, {i: n for i, n in enumerate(names)}


def evaluate_pairs(model: RewardModel, pairs: Sequence[PreferencePair], batch_size: int, device,
                   rank: int = 0, world_size: int = 1) -> dict[str, float]:
    """Sums over this process's shard of `pairs`: loss, correct, gap, count (reduce, then divide)."""
    from ..scoring import Scorer

    shard = list(pairs)[rank::world_size]
    was_training = model.training
    scores = Scorer(model, batch_size=batch_size, device=device).score(shard) if shard else []
    model.train(was_training)
    r = torch.tensor(scores, dtype=torch.float64).reshape(-1, 2)
    diff = r[:, 0] - r[:, 1]
    return {
        "loss_sum": float(torch.nn.functional.softplus(-diff).sum()),
        "correct": float((diff > 0).sum()),
        "gap_sum": float(diff.sum()),
        "count": float(len(shard)),
    }


def _mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def train(
    cfg: Config,
    train_pairs: Sequence[PreferencePair],
    val_pairs: Sequence[PreferencePair] = (),
    model: RewardModel | None = None,
    callbacks: Sequence[Callable[[int, dict], None]] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Train a reward model; returns the final metrics and the saved model's path.

    `callbacks` are called on every process after each optimizer step with (step, metrics).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    regions = None
    if cfg.data.alignment:
        from basereward.data.regions import load_regions, region_words

        regions = load_regions(cfg.data.alignment)
        if model is None and cfg.model.backbone.projector == "words" and not cfg.model.backbone.image_words:
            # The vocabulary is part of the model's config: it is saved with every checkpoint.
            backbone = dataclasses.replace(cfg.model.backbone, image_words=region_words(regions))
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone=backbone))
    tc = cfg.train
    accelerator = Accelerator(mixed_precision=_mixed_precision(tc.mixed_precision))
    world, rank = accelerator.num_processes, accelerator.process_index
    accum = tc.grad_accum_steps(world)
    plan = StepPlan(len(train_pairs), tc.global_batch_size, tc.micro_batch_size, world, tc.seed,
                    lengths=tuple(length_estimate(p.to_group()) for p in train_pairs))
    if plan.steps_per_epoch() == 0:
        raise ConfigError(
            f"train.global_batch_size={tc.global_batch_size} is larger than the {len(train_pairs)} training pairs"
        )
    total_steps = tc.max_steps or max(1, math.ceil(tc.epochs * plan.steps_per_epoch()))
    out_dir = Path(tc.output_dir)
    is_main = accelerator.is_main_process
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")

    set_seed(tc.seed)
    if model is None:
        model = RewardModel(cfg.model)
    model.train()
    groups, param_names = _param_groups(model, tc.lr, tc.head_lr, tc.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=tc.lr, weight_decay=tc.weight_decay)
    warmup = int(round(tc.warmup_ratio * total_steps))
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)

    # Resume: restore trainable weights, optimizer, scheduler, RNG and the step counter.
    start_step, history = 0, {}
    ckpt = _resume_target(tc.resume, out_dir)
    if ckpt is not None:
        state, opt_tensors, rng = read_checkpoint(ckpt)
        model.load_trainable(ckpt / "model")
        if opt_tensors:
            load_optimizer_state(optimizer, param_names, opt_tensors, state["optimizer_groups"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(rng)
        start_step = int(state["step"])
        history = state.get("history", {})
        if is_main:
            print(f"[basereward] resumed from {ckpt} at step {start_step}/{total_steps}", flush=True)
    elif regions is not None:
        # Alignment stage (fresh runs only: a checkpoint already holds the aligned projector).
        align = getattr(model.backbone, "align", None)
        if align is None:
            raise ConfigError(f"data.alignment: the {cfg.model.backbone.name} backbone has no alignment stage")
        history["alignment"] = align(regions, epochs=tc.align_epochs, lr=tc.align_lr, seed=tc.seed,
                                     progress=progress and is_main)
        model.train()

    trunk_split = None
    if tc.cache_trunk:
        enable = getattr(model.backbone, "enable_trunk_cache", None)
        if enable is None:
            raise ConfigError(f"train.cache_trunk: the {cfg.model.backbone.name} backbone has no trunk cache")
        trunk_split = enable()
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model: RewardModel = accelerator.unwrap_model(model)
    collate = raw_model.collate
    data = _MicroBatches(plan, train_pairs, collate, rank, start_step, total_steps)
    loader = torch.utils.data.DataLoader(
        data, batch_size=None, shuffle=False, num_workers=tc.num_workers,
        persistent_workers=False, prefetch_factor=2 if tc.num_workers else None,
    )
    device = accelerator.device
    metrics_path = out_dir / "metrics.jsonl"
    cfg_yaml = yaml.safe_dump(to_dict(cfg), sort_keys=False)

    bar = None
    if progress and is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    def log(record: dict) -> None:
        if is_main:
            with metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def run_eval(step: int) -> dict:
        sums = evaluate_pairs(raw_model, val_pairs, tc.micro_batch_size * 2, device, rank, world)
        t = accelerator.reduce(torch.tensor([sums[k] for k in ("loss_sum", "correct", "gap_sum", "count")],
                                            device=device, dtype=torch.float64), reduction="sum")
        n = max(float(t[3]), 1.0)
        rec = {"step": step, "val_loss": float(t[0]) / n, "val_accuracy": float(t[1]) / n,
               "val_reward_gap": float(t[2]) / n, "val_pairs": int(t[3])}
        log(rec)
        return rec

    step = start_step
    last: dict[str, Any] = {}
    t0 = time.time()
    acc = torch.zeros(4, device=device, dtype=torch.float64)  # loss_sum, correct, gap_sum, count
    micro = 0
    try:
        for batch in loader:
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            last_micro = micro == accum - 1
            # Gradients are only all-reduced on the last micro-batch of an optimizer step.
            sync = contextlib.nullcontext() if last_micro or world == 1 else accelerator.no_sync(model)
            with sync, accelerator.autocast():
                rewards = model(batch).float().view(-1, 2)  # (B, 2): [chosen, rejected]
                lens = batch["response_lengths"].view(-1, 2)
                loss = reward_loss(
                    rewards[:, 0], rewards[:, 1], len_w=lens[:, 0], len_l=lens[:, 1],
                    zero_coef=cfg.loss.zero_coef, length_norm=cfg.loss.length_norm, margin=cfg.loss.margin,
                )
                # Mean over micro-batches of equal size = mean over the global batch.
                accelerator.backward(loss / accum)
            with torch.no_grad():
                diff = (rewards[:, 0] - rewards[:, 1]).double()
                acc += torch.stack([loss.detach().double() * diff.numel(), (diff > 0).sum().double(),
                                    diff.sum(), torch.tensor(float(diff.numel()), device=device, dtype=torch.float64)])
            micro += 1
            if not last_micro:
                continue
            micro = 0
            grad_norm = None
            if tc.max_grad_norm > 0:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            # Sum numerators and denominators across processes, then divide.
            tot = accelerator.reduce(acc.clone(), reduction="sum")
            acc.zero_()
            n = max(float(tot[3]), 1.0)
            last = {
                "step": step, "epoch": step / plan.steps_per_epoch(), "loss": float(tot[0]) / n,
                "accuracy": float(tot[1]) / n, "reward_gap": float(tot[2]) / n,
                "lr": scheduler.get_last_lr()[0], "elapsed_s": round(time.time() - t0, 2),
            }
            if grad_norm is not None:
                last["grad_norm"] = float(grad_norm)
            if step % max(tc.log_every, 1) == 0 or step == total_steps:
                log(last)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.4f}", acc=f"{last['accuracy']:.3f}", gap=f"{last['reward_gap']:.3f}")
            if val_pairs and tc.eval_every and step % tc.eval_every == 0 and step != total_steps:
                history[str(step)] = run_eval(step)
            if tc.save_every and step % tc.save_every == 0 and step != total_steps:
                _save_ckpt(accelerator, out_dir, step, raw_model, optimizer, param_names, scheduler,
                           {"history": history, "last": last}, cfg_yaml, tc.keep_checkpoints)
            for cb in callbacks:
                cb(step, last)
    except KeyboardInterrupt:
        if step > start_step:
            _save_ckpt(accelerator, out_dir, step, raw_model, optimizer, param_names, scheduler,
                       {"history": history, "last": last}, cfg_yaml, tc.keep_checkpoints)
        raise
    finally:
        if bar is not None:
            bar.close()
        if trunk_split is not None:
            cached_groups = raw_model.backbone.disable_trunk_cache()
            history["trunk_cache"] = {"first_trained_layer": trunk_split, "cached_groups": cached_groups}

    result: dict[str, Any] = {"steps": step, "train": last}
    for key in ("alignment", "trunk_cache"):
        if key in history:
            result[key] = history[key]
    if val_pairs:
        result["validation"] = run_eval(step)
    model_dir = out_dir / "model"
    if is_main:
        raw_model.save_pretrained(model_dir, extra={"train_result": result})
        save_config(cfg, model_dir / "train_config.yaml")
        (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    accelerator.wait_for_everyone()
    result["model_dir"] = str(model_dir)
    return result


def _save_ckpt(accelerator, out_dir, step, model, optimizer, names, scheduler, state, cfg_yaml, keep) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_checkpoint(out_dir, step, model, optimizer, names, scheduler, state, cfg_yaml, keep)
    accelerator.wait_for_everyone()


def _resume_target(resume: str, out_dir: Path) -> Path | None:
    if not resume:
        return None
    if resume == "auto":
        found = list_checkpoints(out_dir)
        return found[-1] if found else None
    p = Path(resume)
    if not (p / "trainer_state.json").is_file():
        raise ConfigError(f"train.resume: {p} is not a checkpoint directory (no trainer_state.json)")
    return p
