"""`basereward grm ...`: the generative judges' own steps (training a judge is `basereward train`
with model.paradigm grm / longcot-grm; scoring and evaluating one is `score` / `eval`).

    grm rl      StableReinforce on a cold-started longcot-grm judge (optionally only the pairs it
                finds hard: --select K), saving the model, metrics.jsonl and the dynamics plot
    grm voting  accuracy of a longcot-grm judge vs the number of votes k (test-time scaling)
    grm critique / critic-rm / route   the critic-RM (grm/critic.py) and the task-aware router
                (ensemble/task_router.py): their own modules hold the arguments and the steps
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields
from pathlib import Path

from ..errors import BaseRewardError


def add_grm_arguments(p: argparse.ArgumentParser) -> None:
    from .rl import RLConfig

    sub = p.add_subparsers(dest="grm_cmd", required=True)
    r = sub.add_parser("rl", help="StableReinforce RL of a longcot-grm judge")
    r.add_argument("--model", required=True, help="a cold-started longcot-grm model directory")
    r.add_argument("--pairs", required=True, help="training pair file (never a benchmark)")
    r.add_argument("--out", required=True)
    r.add_argument("--select", type=int, default=0, metavar="K",
                   help="progressive difficulty: keep only pairs the judge gets wrong at its first of K tries")
    r.add_argument("--max-pairs", type=int, default=0, help="use at most this many pairs (seeded sample)")
    defaults = RLConfig()
    for f in fields(RLConfig):
        value = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            r.add_argument(flag, type=_bool, default=value, metavar="true|false")
        else:
            r.add_argument(flag, type=type(value), default=value)
    v = sub.add_parser("voting", help="accuracy vs number of sampled verdicts k (voting@k)")
    v.add_argument("--model", required=True)
    v.add_argument("--pairs", required=True)
    v.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5])
    v.add_argument("--out", required=True, help="JSON with the accuracy per k")
    v.add_argument("--temperature", type=float, default=1.0)
    v.add_argument("--max-new-tokens", type=int, default=0, help="0 = the model's judge.max_new_tokens")
    v.add_argument("--limit", type=int, default=0)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--both-orders", action="store_true",
                   help="k samples with the chosen response shown first and k with it shown second "
                        "(position bias cancels); default: one order per pair, chosen by its texts")
    _add_critic_and_route(sub)


def _add_critic_and_route(sub) -> None:
    from ..ensemble.task_router import add_route_arguments
    from .critic import add_critic_rm_arguments, add_critique_arguments

    add_critique_arguments(sub.add_parser("critique", help="append the critic's critique to every response "
                                          "of a pair file (train a critic-RM on it with basereward train)"))
    add_critic_rm_arguments(sub.add_parser("critic-rm", help="save a critic-RM directory (critic + trained RM)"))
    add_route_arguments(sub.add_parser("route", help="fit a task-aware router between reward sources on "
                                       "validation pairs (accuracy vs seconds per judgement per task key)"))


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def run_grm_command(args: argparse.Namespace) -> int:
    if args.grm_cmd == "rl":
        return _rl(args)
    if args.grm_cmd in ("critique", "critic-rm"):
        from .critic import run_critic_rm_command, run_critique_command

        return (run_critique_command if args.grm_cmd == "critique" else run_critic_rm_command)(args)
    if args.grm_cmd == "route":
        from ..ensemble.task_router import run_route_command
        from ..load import load_scorer

        return run_route_command(args, load_scorer)
    return _voting(args)


def _load(model_dir: str, paradigm: str):
    from ..models.reward_model import RewardModel

    model = RewardModel.from_pretrained(model_dir)
    if model.cfg.paradigm != paradigm:
        raise BaseRewardError(f"{model_dir}: a {model.cfg.paradigm} model; this command needs a {paradigm} judge")
    return model


def _pairs(path: str, limit: int, seed: int):
    import numpy as np

    from ..data.pairs import load_pairs

    pairs = load_pairs(path)
    if limit and len(pairs) > limit:
        keep = np.sort(np.random.default_rng([seed, 1]).permutation(len(pairs))[:limit])
        pairs = [pairs[i] for i in keep]
    return pairs


def _rl(args: argparse.Namespace) -> int:
    from .rl import RLConfig, plot_dynamics, rl_train, select_pairs

    cfg = RLConfig(**{f.name: getattr(args, f.name) for f in fields(RLConfig)})
    model = _load(args.model, "longcot-grm")
    pairs = _pairs(args.pairs, args.max_pairs, cfg.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = {"pairs": len(pairs)}
    if args.select:
        pairs, counts = select_pairs(model, pairs, k=args.select, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
        info["selection"] = counts
        print(f"[basereward] progressive difficulty: kept {counts['kept']} of {counts['candidates']} pairs "
              f"({counts['easy_first_try']} right at the first try)", flush=True)
    records = rl_train(model, pairs, cfg, out)
    model.save_pretrained(out / "model", extra={"stable_reinforce": {**info, "steps": cfg.steps}})
    plot = plot_dynamics({"stable-reinforce": records}, out / "dynamics.png")
    last = records[-1]
    print(f"[basereward] {cfg.steps} RL steps: reward {records[0]['reward']:.2f} -> {last['reward']:.2f}, "
          f"verdict accuracy {records[0]['accuracy']:.2f} -> {last['accuracy']:.2f}; "
          f"model {out / 'model'}, metrics {out / 'metrics.jsonl'}, plot {plot}")
    return 0


def _voting(args: argparse.Namespace) -> int:
    from ..io import write_json
    from .judge import voting_accuracy, voting_draws

    model = _load(args.model, "longcot-grm")
    pairs = _pairs(args.pairs, args.limit, args.seed)
    max_new = args.max_new_tokens or model.cfg.judge.max_new_tokens
    t0 = time.time()
    draws = voting_draws(model.backbone, pairs, max(args.ks), max_new, args.temperature, args.seed,
                         both_orders=args.both_orders, progress=True)
    curve = voting_accuracy(draws, args.ks, args.both_orders)
    drawn = [v for _, d in draws for verdicts in d.values() for v in verdicts]
    formats = sum(v.format_ok for v in drawn) / max(1, len(drawn))
    result = {"pairs": len(pairs), "accuracy_vs_k": {str(k): curve[k] for k in args.ks}, "format_rate": formats,
              "both_orders": args.both_orders, "temperature": args.temperature,
              "seconds": round(time.time() - t0, 1)}
    write_json(args.out, result)
    print(json.dumps(result))
    return 0
