"""RL for the LongCoT judge with StableReinforce (R1-Reward), after a cold-start SFT.

One step, on `batch` preference pairs (each shown in a random order):
    rollouts   `rollouts` judgements per pair drawn from the current policy (KV-cached, T = 1)
    reward     final_reward(result, consistency, format): result = the verdict names the
               preferred response, format = `<think>...</think><answer>k</answer>`, consistency =
               a pluggable judge of whether the reasoning supports the verdict (it only counts when
               the result is right)
    advantage  the batch's rewards standardised, |z| > 3 set to 0 (filter_advantages), one value
               per rollout broadcast over its tokens
    update     `ppo_epochs` passes of policy_loss (pre-clipped ratio, then the PPO clip) against
               the log-probabilities the rollouts had when they were drawn
Progressive difficulty (`select_pairs`): the cold-start judge answers every candidate pair k times;
pairs it gets right at the first attempt are left out (select_for_rl).

Every step is a line of `metrics.jsonl` (policy loss, reward, response length, verdict accuracy,
format rate, clip fractions); `plot_dynamics` draws loss and length over steps for several runs.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.schema import Group, PreferencePair
from ..errors import BaseRewardError
from ..io import append_jsonl, write_json
from ..models.generation import sample, target_log_probs
from .judge import LEAD, chosen_second, judge_group
from .parse import Verdict, parse_verdict
from .stable_reinforce import (
    filter_advantages,
    final_reward,
    policy_loss,
    policy_loss_stats,
    select_for_rl,
)

Consistency = Callable[[Group, Verdict], float]
"""(judge input, parsed verdict) -> 1 when the reasoning supports the verdict, else 0."""

_MENTION = re.compile(r"response\s*#?\s*([12])", re.IGNORECASE)


def rule_consistency(_: Group, verdict: Verdict) -> float:
    """The last response the reasoning names is the one the answer picks (a reasoning that ends by
    arguing for Response 1 and then answers 2 is inconsistent)."""
    names = _MENTION.findall(verdict.think or "")
    return float(bool(names) and verdict.choice is not None and int(names[-1]) == verdict.choice)


def no_consistency(_: Group, __: Verdict) -> float:
    return 0.0


CONSISTENCY: dict[str, Consistency] = {"rule": rule_consistency, "none": no_consistency}


@dataclass(frozen=True)
class RLConfig:
    steps: int = 20
    batch: int = 4
    """Preference pairs per step."""
    rollouts: int = 4
    """Judgements drawn per pair."""
    lr: float = 1e-5
    ppo_epochs: int = 1
    clip_eps: float = 0.2
    pre_clip: bool = True
    """StableReinforce's clamp of log(pi/pi_old) to [ln 1e-3, ln 1e3] before exp (off = plain PPO ratio)."""
    advantage_filter: str = "paper"
    """paper: z-scores, |z| > 3 -> 0; released: the released code's variant; none: z-scores, no filter."""
    consistency: str = "rule"
    """rule: rule_consistency; none: no consistency bonus."""
    temperature: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0


def rollout_rewards(verdicts: Sequence[Verdict], right: Sequence[int], inputs: Sequence[Group],
                    consistency: Consistency) -> list[dict[str, float]]:
    """Per rollout: result, format, consistency and the StableReinforce reward."""
    out = []
    for v, r, g in zip(verdicts, right, inputs):
        result = float(v.choice == r)
        fmt = float(v.format_ok)
        cons = consistency(g, v)
        out.append({"result": result, "format": fmt, "consistency": cons,
                    "reward": float(final_reward(result, cons, fmt))})
    return out


def _judged(pair: PreferencePair, seed: int) -> tuple[Group, int]:
    g = pair.to_group()
    swap = chosen_second(g, seed)
    first, second = (pair.rejected, pair.chosen) if swap else (pair.chosen, pair.rejected)
    return judge_group("longcot-grm", g, first, second, LEAD["longcot-grm"]), 2 if swap else 1


def _log_probs(model: Any, inputs: Sequence[Group], texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L) log-probabilities of each rollout's tokens after the lead under `model`, and the mask."""
    groups = [Group(prompt=g.prompt, images=g.images, history=g.history, responses=(LEAD["longcot-grm"] + t,))
              for g, t in zip(inputs, texts)]
    bb = model.backbone
    batch = bb.collate(groups)
    device = next(model.parameters()).device
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    t = target_log_probs(bb, batch, bb(batch))
    return t.log_probs, t.mask


def rl_train(model: Any, pairs: Sequence[PreferencePair], cfg: RLConfig, out_dir: str | Path,
             progress: bool = True, on_step: Callable[[int, dict], None] | None = None) -> list[dict[str, Any]]:
    """StableReinforce on `pairs`; writes out_dir/metrics.jsonl and returns the per-step records."""
    if model.cfg.paradigm != "longcot-grm":
        raise BaseRewardError(f"RL trains a longcot-grm judge; this model's paradigm is {model.cfg.paradigm!r}")
    if not pairs:
        raise BaseRewardError("RL needs at least one preference pair")
    if cfg.consistency not in CONSISTENCY:
        raise BaseRewardError(f"consistency must be one of {sorted(CONSISTENCY)}, got {cfg.consistency!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    write_json(out / "rl_config.json", asdict(cfg))
    consistency = CONSISTENCY[cfg.consistency]
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise BaseRewardError("the judge has no trainable parameters (model.backbone.train_lm_layers / lora)")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    order = list(range(len(pairs)))
    records: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, desc="stable-reinforce", unit="step", dynamic_ncols=True)
    cursor = len(order)
    t0 = time.time()
    for step in range(1, cfg.steps + 1):
        picked = []
        for _ in range(min(cfg.batch, len(order))):
            if cursor >= len(order):
                rng.shuffle(order)
                cursor = 0
            picked.append(pairs[order[cursor]])
            cursor += 1
        # ---- rollouts from the current policy
        model.eval()
        inputs, texts, right, verdicts = [], [], [], []
        with torch.no_grad():
            for j, pair in enumerate(picked):
                judged, answer = _judged(pair, cfg.seed + step)
                for s in sample(model.backbone, judged, LEAD["longcot-grm"], n=cfg.rollouts,
                                max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                seed=cfg.seed * 7919 + step * 101 + j):
                    inputs.append(judged)
                    texts.append(s.text)
                    right.append(answer)
                    verdicts.append(parse_verdict(LEAD["longcot-grm"] + s.text))
            old_lp, mask = _log_probs(model, inputs, texts)
        parts = rollout_rewards(verdicts, right, inputs, consistency)
        rewards = torch.tensor([p["reward"] for p in parts])
        if cfg.advantage_filter == "none":
            adv = (rewards - rewards.mean()) / rewards.std(unbiased=False).clamp_min(1e-4)
        else:
            adv = filter_advantages(rewards, mode=cfg.advantage_filter)
        # ---- policy updates against the rollouts' own log-probabilities
        model.train()
        for _ in range(cfg.ppo_epochs):
            lp, mask = _log_probs(model, inputs, texts)
            adv_t = adv.to(lp.device, lp.dtype).unsqueeze(1)  # (N, 1): one advantage per rollout
            loss = policy_loss(lp, old_lp.detach(), adv_t, mask, cfg.clip_eps, pre_clip=cfg.pre_clip)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        stats = policy_loss_stats(lp.detach(), old_lp, adv_t, mask, cfg.clip_eps, pre_clip=cfg.pre_clip)
        n = len(parts)
        rec = {
            "step": step, "policy_loss": float(loss.detach()), "reward": float(rewards.mean()),
            "reward_std": float(rewards.std(unbiased=False)),
            "accuracy": sum(p["result"] for p in parts) / n, "format": sum(p["format"] for p in parts) / n,
            "consistency": sum(p["consistency"] for p in parts) / n,
            "response_tokens": float(mask.sum(1).mean()), "clip_frac": stats["clip_frac"],
            "pre_clip_frac": stats["pre_clip_frac"], "max_abs_log_ratio": stats["max_abs_log_ratio"],
            "advantages_zeroed": int(((adv == 0) & (rewards != rewards.mean())).sum()),
            "elapsed_s": round(time.time() - t0, 2),
        }
        records.append(rec)
        append_jsonl(metrics, rec)
        if on_step is not None:
            on_step(step, rec)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{rec['policy_loss']:.3f}", reward=f"{rec['reward']:.2f}", acc=f"{rec['accuracy']:.2f}")
    if bar is not None:
        bar.close()
    model.eval()
    return records


def select_pairs(model: Any, pairs: Sequence[PreferencePair], k: int = 3, max_new_tokens: int = 64,
                 seed: int = 0, progress: bool = True) -> tuple[list[PreferencePair], dict[str, int]]:
    """Progressive difficulty: the pairs the cold-start judge gets wrong at its first attempt
    (right only after >= 2 of k samples, or never in k); returns them and the counts."""
    outcomes = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), desc="difficulty", unit="pair", dynamic_ncols=True)
    model.eval()
    with torch.no_grad():
        for i, pair in enumerate(pairs):
            judged, answer = _judged(pair, seed)
            draws = sample(model.backbone, judged, LEAD["longcot-grm"], n=k, max_new_tokens=max_new_tokens,
                           temperature=1.0, seed=seed * 7919 + i)
            outcomes.append([parse_verdict(LEAD["longcot-grm"] + s.text).choice == answer for s in draws])
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    keep = select_for_rl(outcomes, k)
    first_try = sum(1 for o in outcomes if o and o[0])
    return [pairs[i] for i in keep], {"candidates": len(pairs), "kept": len(keep), "easy_first_try": first_try}


def plot_dynamics(runs: dict[str, Sequence[dict[str, Any]]], path: str | Path) -> Path:
    """Policy loss and response length over steps, one line per run (e.g. with / without each
    StableReinforce component), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, recs in runs.items():
        steps = [r["step"] for r in recs]
        axes[0].plot(steps, [r["policy_loss"] for r in recs], label=name)
        axes[1].plot(steps, [r["response_tokens"] for r in recs], label=name)
        axes[2].plot(steps, [r["reward"] for r in recs], label=name)
    for ax, title in zip(axes, ("policy loss", "response length (tokens)", "reward")):
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0].set_yscale("symlog")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
