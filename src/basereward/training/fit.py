"""The fit stage: micro-batches -> Bradley-Terry loss -> accumulated optimizer steps.

A global batch of `train.global_batch_size` pairs is split into micro-batches of
`micro_batch_size` pairs on each of `world_size` processes, with gradient accumulation making up
the rest. Each micro-batch puts chosen and rejected of every pair in one forward (the pair's
image encoded once). Metrics are summed across processes before dividing.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Sequence

import torch

from .. import metrics
from ..data.schema import PreferencePair
from ..errors import TrainingError
from ..losses import reward_loss
from ..models.reward_model import RewardModel
from .plan import MicroBatches
from .stages import Optimisation, Run, save_checkpoint
from .validation import validation_record


def _non_finite(step: int, what: str, value: object, plural: bool = False) -> str:
    return (f"step {step}: the {what} {'are' if plural else 'is'} {value}; training stopped and no model was "
            "saved from this run "
            "(lower train.lr / train.head_lr, or look for extreme rewards in the data)")


def _progress_bar(run: Run, start_step: int):
    if not (run.progress and run.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=run.total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)


def fit(run: Run, model: RewardModel, opt: Optimisation, train_pairs: Sequence[PreferencePair], start_step: int,
        history: dict[str, Any], val_pairs: Sequence[PreferencePair] = (),
        callbacks: Sequence[Callable[[int, dict], None]] = ()) -> tuple[int, dict[str, Any]]:
    """Optimizer steps `start_step`..total; returns (last step, its metrics). Periodic validation
    goes to `history`; an interrupt writes a checkpoint first."""
    cfg, tc, accelerator = run.cfg, run.cfg.train, run.accelerator
    world, accum = accelerator.num_processes, run.plan.accum()
    wrapped, optimizer = accelerator.prepare(model, opt.optimizer)
    scheduler = opt.scheduler
    data = MicroBatches(run.plan, train_pairs, model.collator, accelerator.process_index, start_step, run.total_steps)
    loader = torch.utils.data.DataLoader(
        data, batch_size=None, shuffle=False, num_workers=tc.num_workers,
        persistent_workers=False, prefetch_factor=2 if tc.num_workers else None,
    )
    device = accelerator.device
    bar = _progress_bar(run, start_step)
    step, last, t0 = start_step, {}, time.time()
    acc = torch.zeros(4, device=device, dtype=torch.float64)  # loss_sum, correct, gap_sum, count
    micro = 0
    try:
        for batch in loader:
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            last_micro = micro == accum - 1
            # Gradients are only all-reduced on the last micro-batch of an optimizer step.
            sync = contextlib.nullcontext() if last_micro or world == 1 else accelerator.no_sync(wrapped)
            with sync, accelerator.autocast():
                rewards = wrapped(batch).float().view(-1, 2)  # (B, 2): [chosen, rejected]
                lens = batch["response_lengths"].view(-1, 2)
                loss = reward_loss(
                    rewards[:, 0], rewards[:, 1], len_w=lens[:, 0], len_l=lens[:, 1],
                    zero_coef=cfg.loss.zero_coef, length_norm=cfg.loss.length_norm, margin=cfg.loss.margin,
                )
                # Infinite rewards can still give a finite loss (+inf vs -inf): check both.
                if not torch.isfinite(rewards.detach()).all():
                    raise TrainingError(_non_finite(step + 1, "rewards", "not all finite", plural=True))
                if not torch.isfinite(loss.detach()):
                    raise TrainingError(_non_finite(step + 1, "loss", float(loss.detach())))
                # Mean over micro-batches of equal size = mean over the global batch.
                accelerator.backward(loss / accum)
            # The training objective's sum (it may carry regularisers), then the metrics module's
            # correct / gap / count of the same rewards: B numbers per micro-batch.
            r = rewards.detach().double().cpu()
            sums = metrics.pair_sums(r[:, 0].numpy(), r[:, 1].numpy())
            acc += torch.tensor([float(loss.detach()) * sums["count"], sums["correct"], sums["gap_sum"], sums["count"]],
                                device=device, dtype=torch.float64)
            micro += 1
            if not last_micro:
                continue
            micro = 0
            grad_norm = None
            if tc.max_grad_norm > 0:
                grad_norm = accelerator.clip_grad_norm_(wrapped.parameters(), tc.max_grad_norm)
                if not torch.isfinite(torch.as_tensor(grad_norm)):
                    raise TrainingError(_non_finite(step + 1, "gradient norm", float(grad_norm)))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            # Sum numerators and denominators across processes, then divide.
            tot = accelerator.reduce(acc.clone(), reduction="sum")
            acc.zero_()
            n = max(float(tot[3]), 1.0)
            last = {
                "step": step, "epoch": step / run.plan.steps_per_epoch(), "loss": float(tot[0]) / n,
                "accuracy": float(tot[1]) / n, "reward_gap": float(tot[2]) / n,
                "lr": scheduler.get_last_lr()[0], "elapsed_s": round(time.time() - t0, 2),
            }
            if grad_norm is not None:
                last["grad_norm"] = float(grad_norm)
            if step % max(tc.log_every, 1) == 0 or step == run.total_steps:
                run.log(last)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.4f}", acc=f"{last['accuracy']:.3f}", gap=f"{last['reward_gap']:.3f}")
            if val_pairs and tc.eval_every and step % tc.eval_every == 0 and step != run.total_steps:
                history[str(step)] = validate(run, model, val_pairs, step)
            if tc.save_every and step % tc.save_every == 0 and step != run.total_steps:
                save_checkpoint(run, step, model, opt, {"history": history, "last": last})
            for cb in callbacks:
                cb(step, last)
    except KeyboardInterrupt:
        if step > start_step:
            save_checkpoint(run, step, model, opt, {"history": history, "last": last})
        raise
    finally:
        if bar is not None:
            bar.close()
    return step, last


def validate(run: Run, model: RewardModel, val_pairs: Sequence[PreferencePair], step: int) -> dict[str, Any]:
    """The validation stage: one pass over `val_pairs`, logged to metrics.jsonl."""
    from ..scoring import Scorer

    was_training = model.training
    scorer = Scorer(model, batch_size=run.cfg.train.micro_batch_size * 2, device=run.accelerator.device)
    rec = validation_record(run.accelerator, scorer, val_pairs, step)
    model.train(was_training)
    run.log(rec)
    return rec
