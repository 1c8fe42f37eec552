#!/usr/bin/env python
"""The paper's Table 1 in miniature: Naive-RM, GRM, LongCoT-GRM, LongCoT-GRM + StableReinforce
(and the Critic-RM when `basereward.grm.critic` is there), trained on the same embedded visual
pairs, measured on the same held-out pairs in one run: accuracy and wall time per judgement.

Every model is a `basereward.training.train` run (the paradigm chosen by `model.paradigm`) on the
embedded mini-vl backbone with the demo model's aligned projector (`--model`, e.g. the demo's
`runs/demo/model`), fresh pretrained LM layers and the same budget; every score goes through the
one scoring interface (`source_for_model`). The RL stage is `basereward.grm.rl.rl_train` on the
pairs the cold-started judge finds hard (progressive difficulty), and its dynamics are recorded
with and without each StableReinforce component. Voting@k is measured on the RL judge.

    python experiments/paradigms.py --model runs/demo/model --data runs/demo/data
    python experiments/paradigms.py --model runs/demo/model --data runs/demo/data --quick   # smoke run

`--start-from-model`: every judge starts from `--model`'s trained layers (`train.init_from`); the
Naive-RM row is `--model` itself. The README's table of judges started from the Naive-RM:

    python experiments/paradigms.py --model runs/demo/model --data runs/demo/data --start-from-model \
        --verdict-weight 1 --n-train 1600 --epochs 3 --voting-pairs 60 --ks 1 3 5 7
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablations import start_backbone  # noqa: E402

from basereward import metrics  # noqa: E402
from basereward.config import Config, DataConfig, JudgeConfig, TrainConfig  # noqa: E402
from basereward.data.pairs import load_pairs  # noqa: E402
from basereward.data.schema import PreferencePair  # noqa: E402
from basereward.io import write_json, write_text  # noqa: E402

FULL = {"n_train": 320, "n_test": 100, "rl_candidates": 32, "rl_steps": 8, "ablation_steps": 4,
        "voting_pairs": 30, "ks": [1, 3, 5], "critic_train": 96}
MAX_NEW = 32  # judge reasoning budget (the cold-start traces take ~15-25 tokens)
QUICK = {"n_train": 16, "n_test": 8, "rl_candidates": 4, "rl_steps": 2, "ablation_steps": 2,
         "voting_pairs": 4, "ks": [1, 3], "critic_train": 16}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def subset(pairs: list[PreferencePair], n: int, seed: int) -> list[PreferencePair]:
    keep = np.sort(np.random.default_rng([seed, 5]).permutation(len(pairs))[: min(n, len(pairs))])
    return [pairs[i] for i in keep]


def build(model_dir: str, paradigm: str, judge: JudgeConfig, max_length: int, max_prompt: int,
          start_from_model: bool = False):
    """A model on `model_dir`'s projector; with `start_from_model` also on its trained LM layers
    (and its head for a Naive-RM): `RewardModel.init_from`, as `train.init_from` does."""
    from basereward.models.reward_model import RewardModel

    base, backbone = start_backbone(model_dir, train_lm_layers=4, max_length=max_length, max_prompt_length=max_prompt)
    cfg = dataclasses.replace(base, paradigm=paradigm, judge=judge if paradigm != "naive" else JudgeConfig())
    torch.manual_seed(0)
    model = RewardModel(cfg, backbone=backbone)
    if start_from_model:
        model.init_from(model_dir)
    return model


def train_one(model, pairs, out: Path, epochs: int, seed: int) -> float:
    from basereward.training.loop import train

    tc = TrainConfig(lr=3e-4, head_lr=1e-3, global_batch_size=16, micro_batch_size=8, epochs=epochs,
                     warmup_ratio=0.05, seed=seed, output_dir=str(out), eval_every=0, save_every=0)
    cfg = Config(model=model.cfg, data=DataConfig(), train=tc)
    t0 = time.time()
    train(cfg, pairs, model=model, progress=True)
    model.backbone.disable_trunk_cache()
    return time.time() - t0


def measure(source, pairs: list[PreferencePair]) -> dict[str, Any]:
    from basereward.scoring import score_pairs

    t0 = time.time()
    scores = score_pairs(source, pairs)
    dt = time.time() - t0
    chosen = [c for c, _ in scores]
    rejected = [r for _, r in scores]
    return {"accuracy": metrics.pair_accuracy(chosen, rejected), "seconds_per_judgement": dt / len(pairs),
            "pairs": len(pairs), "by_category": metrics.accuracy_by_key(chosen, rejected, [p.category for p in pairs])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a trained mini-vl model (its projector and vocabulary)")
    ap.add_argument("--data", required=True, help="the demo's data folder (synth-train, synth-heldout)")
    ap.add_argument("--out", default="experiments/results/paradigms")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--start-from-model", action="store_true",
                    help="judges start from --model's trained layers; the Naive-RM row is --model itself")
    ap.add_argument("--n-train", type=int, help="training pairs (default 320; 16 with --quick)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--voting-pairs", type=int, help="held-out pairs for voting@k (default 30)")
    ap.add_argument("--ks", type=int, nargs="+", help="voting@k sample counts (default 1 3 5)")
    ap.add_argument("--verdict-weight", type=float, default=0.0, help="model.judge.verdict_weight of both judges")
    args = ap.parse_args()
    size = dict(QUICK if args.quick else FULL)
    for key in ("n_train", "voting_pairs", "ks"):
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    name = "quick" if args.quick else f"seed{args.seed}"
    out = Path(args.out) / (f"{name}-from-model" if args.start_from_model else name)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    train_pairs = subset(load_pairs(data / "synth-train" / "pairs.jsonl"), size["n_train"], args.seed)
    test = subset(load_pairs(data / "synth-heldout" / "pairs.jsonl"), size["n_test"], args.seed + 1)
    log(f"paradigms: {len(train_pairs)} training pairs, {len(test)} held-out pairs -> {out}")

    from basereward.grm.rl import RLConfig, plot_dynamics, rl_train, select_pairs
    from basereward.load import source_for_model
    from basereward.models.reward_model import RewardModel

    rows: dict[str, dict[str, Any]] = {}
    judge_grm = JudgeConfig(both_orders=True, verdict_weight=args.verdict_weight)
    judge_cot = JudgeConfig(both_orders=False, samples=1, max_new_tokens=MAX_NEW, verdict_weight=args.verdict_weight)
    models = {}
    for paradigm, judge, length in (("naive", None, (128, 80)), ("grm", judge_grm, (256, 200)),
                                    ("longcot-grm", judge_cot, (320, 200))):
        log(f"== {paradigm}")
        if paradigm == "naive" and args.start_from_model:  # the model the judges start from, as it is
            model = RewardModel.from_pretrained(args.model)
            rows[paradigm] = {**measure(source_for_model(model, batch_size=16), test), "train_seconds": None}
            models[paradigm] = model
            log(f"   {paradigm} (--model as it is): accuracy {rows[paradigm]['accuracy']:.3f}")
            continue
        model = build(args.model, paradigm, judge or JudgeConfig(), *length, start_from_model=args.start_from_model)
        train_s = train_one(model, train_pairs, out / "runs" / paradigm, epochs=args.epochs, seed=args.seed)
        rows[paradigm] = {**measure(source_for_model(model, batch_size=16), test), "train_seconds": train_s}
        models[paradigm] = model
        log(f"   {paradigm}: accuracy {rows[paradigm]['accuracy']:.3f}, "
            f"{rows[paradigm]['seconds_per_judgement']:.3f} s/judgement")

    # ---- StableReinforce on the cold-started LongCoT judge, then its ablations.
    cold = models["longcot-grm"]
    cold_state = copy.deepcopy({k: v for k, v in cold.state_dict().items()})
    candidates = subset([p for p in train_pairs], size["rl_candidates"], args.seed + 2)
    hard, counts = select_pairs(cold, candidates, k=3, max_new_tokens=MAX_NEW, seed=args.seed)
    log(f"   progressive difficulty: {counts}")
    rl_pairs = hard if len(hard) >= 4 else candidates  # too few hard pairs: RL on all candidates (said in the JSON)
    variants = {
        "StableReinforce": RLConfig(),
        "no pre-clip": RLConfig(pre_clip=False),
        "no advantage filter": RLConfig(advantage_filter="none"),
        "no consistency reward": RLConfig(consistency="none"),
    }
    dynamics = {}
    for name, base_cfg in variants.items():
        steps = size["rl_steps"] if name == "StableReinforce" else size["ablation_steps"]
        cfg = dataclasses.replace(base_cfg, steps=steps, batch=4, rollouts=4, lr=2e-5, max_new_tokens=MAX_NEW,
                                  seed=args.seed)
        cold.load_state_dict(cold_state)
        log(f"== RL: {name} ({steps} steps)")
        dynamics[name] = rl_train(cold, rl_pairs, cfg, out / "rl" / name.replace(" ", "_"))
        if name == "StableReinforce":
            rows["longcot-grm + StableReinforce"] = {**measure(source_for_model(cold, batch_size=16), test),
                                                     "rl_steps": steps}
            rl_state = copy.deepcopy(cold.state_dict())
    plot_dynamics(dynamics, out / "rl_dynamics.png")
    cold.load_state_dict(rl_state)

    # ---- Voting@k on the RL judge: k samples in one answer order (chosen by the texts, as the
    # judge scores with both_orders off), and k samples in each order (position bias cancels).
    from basereward.grm.judge import voting_accuracy, voting_draws

    draws = voting_draws(cold.backbone, test[: size["voting_pairs"]], max(size["ks"]), MAX_NEW, 1.0, args.seed,
                         both_orders=True)
    voting = {str(k): v for k, v in voting_accuracy(draws, size["ks"], both_orders=False).items()}
    voting_both = {str(k): v for k, v in voting_accuracy(draws, size["ks"], both_orders=True).items()}
    log(f"   voting@k: one order {voting}, both orders {voting_both}")

    # ---- Critic-RM (when the critic module is there): critiques by the RL judge's LM.
    try:
        from basereward.grm import critic as critic_mod
    except ImportError:
        critic_mod = None
    if critic_mod is not None and hasattr(critic_mod, "add_critiques") and hasattr(critic_mod, "CriticRM"):
        log("== critic-rm")
        crit_train = critic_mod.add_critiques(cold, train_pairs[: size["critic_train"]], max_new_tokens=24)
        model = build(args.model, "naive", JudgeConfig(), 192, 80, start_from_model=args.start_from_model)
        train_s = train_one(model, crit_train, out / "runs" / "critic", epochs=args.epochs, seed=args.seed)
        from basereward.scoring import Scorer

        source = critic_mod.CriticRM(cold, Scorer(model, batch_size=16), max_new_tokens=24)
        rows["critic-rm"] = {**measure(source, test), "train_seconds": train_s, "train_pairs": len(crit_train)}

    naive_cost = rows["naive"]["seconds_per_judgement"]
    for r in rows.values():
        r["cost_vs_naive"] = r["seconds_per_judgement"] / naive_cost
    result = {"rows": rows, "voting_at_k": voting, "voting_at_k_both_orders": voting_both, "progressive_difficulty": counts,
              "rl_pairs": len(rl_pairs), "rl_on_hard_pairs": rl_pairs is hard, "sizes": size, "seed": args.seed,
              "rl_final": {k: v[-1] for k, v in dynamics.items()},
              "start_from_model": args.start_from_model, "epochs": args.epochs, "verdict_weight": args.verdict_weight}
    write_json(out / "paradigms.json", result)
    lines = ["| paradigm | held-out accuracy | s / judgement | cost vs Naive-RM |", "|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {100 * r['accuracy']:.1f}% | {r['seconds_per_judgement']:.3f} | {r['cost_vs_naive']:.1f}x |")
    lines.append("")
    lines.append("voting@k (LongCoT + StableReinforce, T=1), one order: "
                 + ", ".join(f"k={k}: {100 * v:.1f}%" for k, v in voting.items()))
    lines.append("")
    lines.append("voting@k, k samples in each order: " + ", ".join(f"k={k}: {100 * v:.1f}%" for k, v in voting_both.items()))
    write_text(out / "paradigms.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({k: round(v["accuracy"], 4) for k, v in rows.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
