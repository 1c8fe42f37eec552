"""The fit stage: micro-batches -> Bradley-Terry loss -> accumulated optimizer steps.

A global batch of `train.global_batch_size` pairs is split into micro-batches of
`micro_batch_size` pairs on each of `world_size` processes, with gradient accumulation making up
the rest. Each micro-batch puts chosen and rejected of every pair in one forward (the pair's
image encoded once). Metrics are summed across processes before dividing.

A non-finite reward, loss, gradient norm, update or weight stops the run with a TrainingError
before the optimizer step could spread it (and before any save). Every check reads a value that
is the same on all processes (sums after the all-reduce, the clipped global norm), so all of
them stop at the same step: one process raising alone would leave the others waiting.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .. import metrics
from ..data.schema import PreferencePair
from ..errors import TrainingError
from ..losses import judge_loss, reward_loss
from ..memory import peak_memory
from ..models.reward_model import RewardModel
from .plan import MicroBatches
from .stages import Optimisation, Run, save_checkpoint
from .validation import validation_record


def _non_finite(step: int, what: str, value: object, plural: bool = False) -> str:
    return (f"step {step}: the {what} {'are' if plural else 'is'} {value}; training stopped and no model was "
            "saved from this run "
            "(lower train.lr / train.head_lr, or look for extreme rewards in the data)")


def _optimizer_step(optimizer, step: int) -> None:
    """optimizer.step(), with AdamW's float overflow (a step size lr / (1 - beta1^t) beyond
    float32, e.g. train.lr=3e38) as the same TrainingError as any other non-finite update."""
    try:
        optimizer.step()
    except RuntimeError as e:
        if "overflow" not in str(e):
            raise
        raise TrainingError(_non_finite(step, "optimizer update", f"not finite ({e})")) from None


def _inner(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper -> the torch optimizer


def update_ema(optimizer, step: int, decay: float) -> None:
    """After optimizer step `step` (1-based): each trainable weight's average, in its optimizer
    state under "ema", moves towards the weight by 1 - min(decay, (1 + step) / (10 + step)); the
    first step copies the weight (no pull towards the initial weights)."""
    opt = _inner(optimizer)
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for group in opt.param_groups:
            for p in group["params"]:
                st = opt.state[p]
                if "ema" not in st:
                    st["ema"] = p.detach().clone()
                else:
                    st["ema"].lerp_(p.detach(), 1.0 - d)


def apply_ema(optimizer, enabled: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Copy the moving averages (when `enabled` and kept) into the trainable weights; returns
    (weight, its value before) for each weight it changed."""
    opt = _inner(optimizer)
    held = [(p, opt.state[p]["ema"]) for g in opt.param_groups for p in g["params"]
            if enabled and "ema" in opt.state.get(p, {})]
    before = []
    with torch.no_grad():
        for p, e in held:
            before.append((p, p.detach().clone()))
            p.copy_(e)
    return before


@contextlib.contextmanager
def ema_weights(optimizer, enabled: bool):
    """Inside: the trainable weights hold their moving averages (when any); restored on exit."""
    before = apply_ema(optimizer, enabled)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, w in before:
                p.copy_(w)


def _check_weights(accelerator, optimizer, step: int) -> None:
    """Stop before a huge but finite learning rate leaves infinite weights to be saved. The flag
    is summed across processes: sharded weights (FSDP) differ between them."""
    flags = [~torch.isfinite(p.detach()).all() for g in optimizer.param_groups for p in g["params"]]
    bad = torch.stack(flags).sum().to(torch.float64).reshape(1) if flags else torch.zeros(1, dtype=torch.float64)
    if accelerator.reduce(bad.to(accelerator.device), reduction="sum").item() > 0:
        raise TrainingError(_non_finite(step, "weights", "not all finite after the update", plural=True))


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
    generative = cfg.model.paradigm != "naive"
    collator = model.collator
    if generative:
        from ..grm.judge import JudgeCollator

        # Pairs become judge examples (chosen shown first in half of them); the loss is the SFT
        # loss of the judge's answer (and reasoning), the metrics those of its verdict.
        collator = JudgeCollator(model.collator, cfg.model.paradigm, cfg.model.judge.order_seed)
    data = MicroBatches(run.plan, train_pairs, collator, accelerator.process_index, start_step, run.total_steps)
    loader = torch.utils.data.DataLoader(
        data, batch_size=None, shuffle=False, num_workers=tc.num_workers,
        persistent_workers=False, prefetch_factor=2 if tc.num_workers else None,
    )
    device = accelerator.device
    bar = _progress_bar(run, start_step)
    step, last, t0 = start_step, {}, time.time()
    # loss_sum, correct, gap_sum, count, micro-batches with a non-finite reward, sequences whose
    # prompt / response the truncation rule cut
    acc = torch.zeros(7, device=device, dtype=torch.float64)
    cut_total = [0, 0, 0]  # over the run: sequences, prompts cut, responses cut
    micro = 0
    try:
        for batch in loader:
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            last_micro = micro == accum - 1
            # Gradients are only all-reduced on the last micro-batch of an optimizer step.
            sync = contextlib.nullcontext() if last_micro or world == 1 else accelerator.no_sync(wrapped)
            with sync, accelerator.autocast():
                if generative:
                    out = wrapped(batch).float()  # (B, 2): [target NLL, log-odds of the right verdict]
                    loss = judge_loss(out[:, 0], out[:, 1], cfg.model.judge.verdict_weight)
                    # As a pair of rewards: right when the right verdict is the likelier one.
                    rewards = torch.stack([out[:, 1] / 2, -out[:, 1] / 2], dim=1)
                else:
                    rewards = wrapped(batch).float().view(-1, 2)  # (B, 2): [chosen, rejected]
                    lens = batch["response_lengths"].view(-1, 2)
                    loss = reward_loss(
                        rewards[:, 0], rewards[:, 1], len_w=lens[:, 0], len_l=lens[:, 1],
                        zero_coef=cfg.loss.zero_coef, length_norm=cfg.loss.length_norm, margin=cfg.loss.margin,
                    )
                # Mean over micro-batches of equal size = mean over the global batch. A non-finite
                # loss still goes backward: every process must reach the same collectives, and
                # the step is stopped below, before the optimizer uses the gradients.
                accelerator.backward(loss / accum)
            # The training objective's sum (it may carry regularisers), then the metrics module's
            # correct / gap / count of the same rewards: B numbers per micro-batch. Infinite
            # rewards can still give a finite loss (+inf vs -inf): they are counted apart.
            r = rewards.detach().double().cpu()
            ok = bool(torch.isfinite(r).all())  # the step stops below; no metrics (nor warnings) of NaN
            sums = metrics.pair_sums(r[:, 0].numpy(), r[:, 1].numpy()) if ok else \
                {"correct": 0, "gap_sum": 0.0, "count": r.shape[0]}
            acc += torch.tensor([float(loss.detach()) * sums["count"], sums["correct"], sums["gap_sum"], sums["count"],
                                 float(not ok), _cut(batch, "prompt"), _cut(batch, "response")],
                                device=device, dtype=torch.float64)
            micro += 1
            if not last_micro:
                continue
            micro = 0
            # Sum numerators and denominators across processes, then divide. The same sums carry
            # the non-finite checks, so every process stops at the same step (one raising alone
            # would leave the others waiting in the next all-reduce).
            tot = accelerator.reduce(acc.clone(), reduction="sum")
            acc.zero_()
            n = max(float(tot[3]), 1.0)
            if tot[4] > 0:
                raise TrainingError(_non_finite(step + 1, "rewards", "not all finite", plural=True))
            if not torch.isfinite(tot[0]):
                raise TrainingError(_non_finite(step + 1, "loss", float(tot[0]) / n))
            grad_norm = None
            if tc.max_grad_norm > 0:
                # The norm of the all-reduced gradients: the same number on every process.
                grad_norm = accelerator.clip_grad_norm_(wrapped.parameters(), tc.max_grad_norm)
                if not torch.isfinite(torch.as_tensor(grad_norm)):
                    raise TrainingError(_non_finite(step + 1, "gradient norm", float(grad_norm)))
            _optimizer_step(optimizer, step + 1)
            _check_weights(accelerator, optimizer, step + 1)
            if tc.ema_decay > 0:
                update_ema(optimizer, step + 1, tc.ema_decay)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            last = {
                "step": step, "epoch": step / run.plan.steps_per_epoch(), "loss": float(tot[0]) / n,
                "accuracy": float(tot[1]) / n, "reward_gap": float(tot[2]) / n,
                "lr": scheduler.get_last_lr()[0], "elapsed_s": round(time.time() - t0, 2),
            }
            if grad_norm is not None:
                last["grad_norm"] = float(grad_norm)
            # Sequences of this step whose prompt text / response end the truncation rule cut.
            last["truncated_prompts"], last["truncated_responses"] = int(tot[5]), int(tot[6])
            for i, v in enumerate((2 * n, tot[5], tot[6])):
                cut_total[i] += int(v)
            if step == run.total_steps:  # every process is here: the gather inside is a collective
                last.update(_peak_memory(accelerator))
            if step % max(tc.log_every, 1) == 0 or step == run.total_steps:
                run.log(last)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.4f}", acc=f"{last['accuracy']:.3f}", gap=f"{last['reward_gap']:.3f}")
            if val_pairs and tc.eval_every and step % tc.eval_every == 0 and step != run.total_steps:
                with ema_weights(opt.optimizer, tc.ema_decay > 0):
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
    if accelerator.is_main_process and cut_total[0]:
        print(f"[basereward] truncated in training: {cut_total[1]} of {cut_total[0]} prompts cut "
              f"(model.backbone.max_prompt_length), {cut_total[2]} of {cut_total[0]} responses lost their end "
              "(model.backbone.max_length)", flush=True)
    return step, last


def _peak_memory(accelerator) -> dict[str, float]:
    """Peak RSS (and GPU memory) of the run so far: the largest over the processes."""
    mine = peak_memory()
    t = torch.tensor([mine["peak_rss_mb"], mine.get("peak_gpu_mb", -1.0)], dtype=torch.float64,
                     device=accelerator.device)
    rss, gpu = accelerator.gather(t).view(-1, 2).max(dim=0).values.tolist()  # (world, 2) -> (2,)
    return {"peak_rss_mb": rss, **({"peak_gpu_mb": gpu} if gpu >= 0 else {})}


def _cut(batch: dict[str, Any], what: str) -> float:
    flags = batch.get(f"truncated_{what}")
    return float(flags.sum()) if flags is not None else 0.0


def validate(run: Run, model: RewardModel, val_pairs: Sequence[PreferencePair], step: int) -> dict[str, Any]:
    """The validation stage: one pass over `val_pairs`, logged to metrics.jsonl."""
    from ..load import source_for_model

    was_training = model.training
    scorer = source_for_model(model, batch_size=run.cfg.train.micro_batch_size * 2, device=run.accelerator.device)
    rec = validation_record(run.accelerator, scorer, val_pairs, step)
    model.train(was_training)
    run.log(rec)
    return rec
