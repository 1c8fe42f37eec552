"""`basereward` command line: train | sweep | score | eval | ensemble | report | data | demo.

Every command shares one config system (configs/*.yaml + dotted overrides). Errors a user can fix
print one line (`error: file:line: reason`) and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .config.schema import SCORING_PRECISIONS as PRECISION_CHOICES
from .errors import BaseRewardError


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .training.data import load_training_data
    from .training.loop import train

    cfg = load_config(args.config, args.overrides)
    pairs, val = load_training_data(cfg.data, cfg.train.seed)
    print(f"[basereward] {len(pairs)} training pairs, {len(val)} validation pairs", flush=True)
    result = train(cfg, pairs, val)
    print(json.dumps({k: v for k, v in result.items()}, indent=2))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .config import load_config
    from .training.sweep import sweep

    cfg = load_config(args.config, args.overrides)
    result = sweep(cfg)
    print(json.dumps(result, indent=2))
    return 0


def _accuracy_summary(pairs, scores) -> dict[str, dict]:
    """{"overall": {accuracy, n, interval95}, category: {accuracy, n, interval95}, ...} (empty
    category: "(none)"; interval95: the accuracy's Wilson 95% interval, `metrics.accuracy_interval`)."""
    from .metrics import accuracy_by_key, accuracy_interval, pair_accuracy

    chosen, rejected = [c for c, _ in scores], [r for _, r in scores]
    ci = accuracy_interval(chosen, rejected)
    overall = {"accuracy": pair_accuracy(chosen, rejected), "n": len(scores), "interval95": ci and list(ci)}
    return {"overall": overall, **accuracy_by_key(chosen, rejected, [p.category for p in pairs], interval=True)}


def _accuracy_table(summary: dict[str, dict]) -> str:
    width = max(len(k) for k in summary)
    lines = [f"{'category':<{width}}  accuracy      n  95% interval"]
    for k in ["overall"] + sorted(k for k in summary if k != "overall"):
        row, ci = summary[k], summary[k].get("interval95")
        span = f"{100 * ci[0]:5.1f}-{100 * ci[1]:.1f}%" if ci else "-"
        lines.append(f"{k:<{width}}  {100 * row['accuracy']:7.1f}%  {row['n']:5d}  {span}")
    return "\n".join(lines)


def _cmd_score(args: argparse.Namespace) -> int:
    from .data.pairs import load_pairs
    from .data.paths import check_image_root
    from .io import check_output_file, write_json, write_jsonl
    from .load import load_scorer
    from .memory import largest, memory_line, peak_memory
    from .scoring.interface import writable_rewards
    from .scoring.shard import current_processes, score_sharded
    from .scoring.truncation import truncation_lines, truncation_summary

    check_output_file(args.output)
    if args.summary:
        check_output_file(args.summary, "summary")
    root = check_image_root(args.image_root) if args.image_root else None
    pairs = load_pairs(args.pairs, on_error=args.on_error, image_root=root)
    if args.shuffle_images:
        from .eval.controls import shuffle_images

        pairs = shuffle_images(pairs, seed=args.seed)
    # Under a launcher with several processes each scores a shard; rank 0 writes (scoring/shard.py).
    procs = current_processes()
    scorer = load_scorer(args.model, batch_size=args.batch_size, device=procs.device, progress=procs.is_main,
                         token_budget=args.token_budget, precision=args.precision)
    scores = [(s[0], s[1]) for s in score_sharded(scorer, [p.to_group() for p in pairs], procs)]
    memory = largest(procs.gather(peak_memory()))
    if not procs.is_main:
        return 0
    rows, n_bad = writable_rewards([p.id for p in pairs], scores, args.allow_nonfinite, ("chosen", "rejected"))
    write_jsonl(args.output, ({"id": p.id, "chosen_reward": c, "rejected_reward": r}
                              for p, (c, r) in zip(pairs, rows)))
    summary = _accuracy_summary(pairs, scores)
    print(_accuracy_table(summary))
    print("\n".join(truncation_lines(scorer)))
    print(memory_line(memory))
    if args.summary:
        write_json(args.summary, {**summary, "truncation": truncation_summary(scorer), "memory": memory})
    print(f"wrote {len(pairs)} scores to {args.output}" + (f" ({n_bad} non-finite rewards as null)" if n_bad else ""))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .data.paths import check_image_root
    from .eval.runner import format_table, run_benchmark
    from .io import check_output_file
    from .load import load_scorer
    from .scoring.shard import current_processes
    from .scoring.truncation import truncation_lines

    check_output_file(args.output)
    root = check_image_root(args.image_root) if args.image_root else None
    procs = current_processes()  # several under a launcher: each scores a shard, rank 0 writes
    scorer = load_scorer(args.model, batch_size=args.batch_size, device=procs.device, progress=procs.is_main,
                         token_budget=args.token_budget, precision=args.precision)
    metrics = run_benchmark(scorer, args.bench, args.data, args.output, limit=args.limit,
                            allow_nonfinite=args.allow_nonfinite, image_root=root, processes=procs)
    if not procs.is_main:
        return 0
    print(format_table(metrics))
    print("\n".join(truncation_lines(scorer)))
    print(f"wrote {args.output}")
    return 0


def _name_and_number(item: str, names: Sequence[str]) -> tuple[str | None, float | None]:
    """"NAME=NUMBER" -> (the one name of `names` that is NAME or ends in "/NAME", the number);
    None for a part that is missing, ambiguous or not a number."""
    name, sep, value = item.partition("=")
    matches = [c for c in names if c == name or c.endswith("/" + name)]
    try:
        number: float | None = float(value)
    except ValueError:
        number = None
    return (matches[0] if sep and len(matches) == 1 else None), number


def _parse_reweight(items: list[str]) -> dict[str, float]:
    """`--reweight CATEGORY=FACTOR` (repeatable) -> {category: factor}; `existence` stands for
    `hallucination/existence` when one category ends that way."""
    from .data.synthetic import CATEGORIES
    from .errors import ConfigError

    out: dict[str, float] = {}
    for item in items:
        category, factor = _name_and_number(item, CATEGORIES)
        if category is None or factor is None:
            raise ConfigError(f"data synth: --reweight {item!r}: expected CATEGORY=FACTOR with a category of "
                              f"{list(CATEGORIES)} (or its last part, e.g. existence=2)")
        out[category] = factor
    return out


def _parse_scene_shares(items: list[str], command: str) -> dict[str, float] | None:
    """`--scene-share KIND=SHARE` (repeatable) -> {kind: share} for the word scenes (None: their
    default shares); `count` stands for `hallucination/count`."""
    from .data.synthetic.word_scenes import KINDS
    from .errors import ConfigError

    if not items:
        return None
    out: dict[str, float] = {}
    for item in items:
        kind, share = _name_and_number(item, KINDS)
        if kind is None or share is None or not share >= 0:
            raise ConfigError(f"{command}: --scene-share {item!r}: expected KIND=SHARE (share >= 0) with a kind of "
                              f"{list(KINDS)} (or its last part, e.g. count=0.2)")
        out[kind] = share
    if not any(out.values()):
        raise ConfigError(f"{command}: --scene-share gives every kind a share of 0")
    return out


def _cmd_data(args: argparse.Namespace) -> int:
    if args.data_cmd == "synth":
        from dataclasses import replace

        from .data.synthetic import Variety, generate, generate_heldout
        from .demo import varied_variety
        from .errors import ConfigError

        if args.distribution != "train":
            if args.scene_share and args.distribution != "word-scenes":
                raise ConfigError("data synth: --scene-share is an option of --distribution word-scenes")
            if args.varied or args.twins or args.reweight or args.foils:
                raise ConfigError("data synth: --varied, --twins, --foils and --reweight are options of the "
                                  "training distribution")
            if args.n < 0:
                raise ConfigError(f"data synth: --n must be >= 0, got {args.n}")
            if args.distribution == "heldout":
                pairs = generate_heldout(args.out, n_pairs=args.n, seed=args.seed)
            else:
                from .data.synthetic.word_scenes import generate_word_scenes

                pairs = generate_word_scenes(args.out, n_pairs=args.n, seed=args.seed,
                                             weights=_parse_scene_shares(args.scene_share, "data synth"))
        else:
            for name in ("twins", "foils"):
                if not 0.0 <= getattr(args, name) <= 1.0:
                    raise ConfigError(f"data synth: --{name} must be in [0, 1], got {getattr(args, name)}")
            variety = varied_variety() if args.varied else Variety()
            variety = replace(variety, twins=args.twins, foils=args.foils)
            try:
                pairs = generate(args.out, n_pairs=args.n, seed=args.seed, variety=variety,
                                 reweight=_parse_reweight(args.reweight))
            except ValueError as e:
                raise ConfigError(f"data synth: {e}") from None
        print(f"wrote {len(pairs)} pairs to {Path(args.out) / 'pairs.jsonl'}")
    elif args.data_cmd == "hh-rlhf":
        from .data.sources.hh_rlhf import write_hh_split

        paths = write_hh_split(args.out, path=args.source, val_fraction=args.val_fraction, seed=args.seed)
        print(f"wrote {paths}")
    elif args.data_cmd == "check":
        from .data.pairs import iter_pairs
        from .data.paths import check_image_root

        # Streamed: memory stays bounded whatever the file's size (no pair is kept).
        root = check_image_root(args.image_root) if args.image_root else None
        n = n_mm = 0
        for pair in iter_pairs(args.file, on_error=args.on_error, image_root=root):
            n, n_mm = n + 1, n_mm + pair.is_multimodal
        print(f"{args.file}: {n} valid pairs ({n_mm} multimodal, {n - n_mm} text-only)")
    elif args.data_cmd == "build":
        from .data.build import build, load_recipe

        build(load_recipe(args.recipe), args.out)
    elif args.data_cmd == "adapters":
        from .data.build import list_adapters

        for name, multimodal, summary in list_adapters():
            print(f"{name:<14} {'multimodal' if multimodal else 'text':<10}  {summary}")
    elif args.data_cmd == "rank-pairs":
        from .data.rankings import write_ranking_pairs

        n_pairs, n_prompts = write_ranking_pairs(args.input, args.out, args.ultra_hard, args.on_error)
        print(f"wrote {n_pairs} pairs from {n_prompts} prompts to {args.out}")
    return 0


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from .ensemble_cli import run_ensemble_command

    return run_ensemble_command(args)


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    path = build_report(args.metrics, args.out, pairs_paths=args.pairs or None, title=args.title)
    print(f"wrote {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .data.synthetic import Variety
    from .demo import demo_variety, run_demo, varied_variety
    from .errors import ConfigError

    variety = varied_variety() if args.varied_data else Variety() if args.plain_data else None
    if args.foils is not None:
        if not 0.0 <= args.foils <= 1.0:
            raise ConfigError(f"demo: --foils must be in [0, 1], got {args.foils}")
        variety = replace(variety if variety is not None else demo_variety(), foils=args.foils)
    if args.word_scenes is not None and args.word_scenes < 0:
        raise ConfigError(f"demo: --word-scenes must be >= 0, got {args.word_scenes}")
    run_demo(out_dir=args.out, overrides=args.overrides, quick=args.quick, variety=variety, full=args.full,
             text_rm=not args.no_text_rm, word_scenes=args.word_scenes,
             scene_weights=_parse_scene_shares(args.scene_share, "demo"))
    return 0


_PRECISION_HELP = ("autocast of float32 models: auto = bf16 on a GPU that supports it; bf16-where-fast = also on a "
                   "CPU where bf16 measures >= 1.2x faster than float32 (how the demo scores); bf16; no = float32")
_SCENE_SHARE_HELP = ("word scenes: the share of one kind of question (repeatable; kinds given replace the default "
                     "shares existence=0.4 color=0.2 object=0.2 description=0.2), e.g. --scene-share existence=0.4 "
                     "--scene-share count=0.2; also count and spatial")
_BUDGET_HELP = "also cap each batch at this many padded tokens (sequences x the longest); 0 = count only"
_IMAGE_ROOT_HELP = "refuse images outside this folder (../, absolute paths and symlinks out); default: anywhere"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="basereward", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("train", help="train a reward model from a YAML config")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-6")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sweep", help="train once per learning rate in train.lr_grid; keep the best on validation")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("score", help="score a pair file; print accuracy overall and per category")
    p.add_argument("--model", required=True, help="model or ensemble directory")
    p.add_argument("--pairs", required=True)
    p.add_argument("--output", required=True, help="JSONL: one {id, chosen_reward, rejected_reward} per pair")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--token-budget", type=int, default=0, help=_BUDGET_HELP)
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="auto", help=_PRECISION_HELP)
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    p.add_argument("--shuffle-images", action="store_true",
                   help="permute images between pairs (control: how much accuracy comes from the image)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--summary", default="", help="also write the accuracy table as JSON here")
    p.add_argument("--image-root", default="", help=_IMAGE_ROOT_HELP)
    p.add_argument("--allow-nonfinite", action="store_true", help="write NaN / infinite rewards as null (counted) "
                   "instead of stopping with an error")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("eval", help="run a reward benchmark")
    p.add_argument("--model", required=True)
    p.add_argument("--bench", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--token-budget", type=int, default=0, help=_BUDGET_HELP)
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="auto", help=_PRECISION_HELP)
    p.add_argument("--limit", type=int, default=0, help="only the first N items (0 = all)")
    p.add_argument("--image-root", default="", help=_IMAGE_ROOT_HELP)
    p.add_argument("--allow-nonfinite", action="store_true", help="write NaN / infinite rewards as null (counted) "
                   "instead of stopping with an error")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("data", help="generate, convert or check pair files")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    d = dsub.add_parser("synth", help="render multimodal preference pairs")
    d.add_argument("--out", required=True)
    d.add_argument("--n", type=int, default=2000)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--distribution", choices=["train", "heldout", "word-scenes"], default="train",
                   help="heldout: unseen wording, padded answers, new layouts and colour/shape combinations; "
                        "word-scenes: text-only pairs whose prompt is a picture written as the words projector's "
                        "words, a binding curriculum for mini-vl (data/synthetic/word_scenes.py)")
    d.add_argument("--scene-share", action="append", default=[], metavar="KIND=SHARE", help=_SCENE_SHARE_HELP)
    d.add_argument("--varied", action="store_true", help="the varied training generator of `demo --varied-data`: "
                   "paraphrases, neutral padding, varied layouts, the held-out combinations left out")
    d.add_argument("--twins", type=float, default=0.0, metavar="P",
                   help="probability that a pair is followed by its counterfactual twin: the same texts over a "
                        "picture in which the other answer is true, chosen and rejected swapped")
    d.add_argument("--reweight", action="append", default=[], metavar="CATEGORY=FACTOR",
                   help="multiply a category's default share (repeatable; 0 leaves it out), e.g. "
                        "--reweight existence=2 --reweight chart=0.5")
    d.add_argument("--foils", type=float, default=0.0, metavar="P",
                   help="probability that an existence question about an absent object asks for one object's colour "
                        "with another's shape (a conjunction foil: neither attribute alone gives the answer)")
    d = dsub.add_parser("hh-rlhf", help="write the seeded HH-RLHF train/validation split as pair files")
    d.add_argument("--out", required=True)
    d.add_argument("--source", default=None)
    d.add_argument("--val-fraction", type=float, default=0.2)
    d.add_argument("--seed", type=int, default=0)
    d = dsub.add_parser("check", help="validate a pair file and report every bad row")
    d.add_argument("file")
    d.add_argument("--on-error", choices=["fail", "skip"], default="skip")
    d.add_argument("--image-root", default="", help=_IMAGE_ROOT_HELP)
    d = dsub.add_parser("rank-pairs", help="turn scored responses per prompt (JSONL) into a pair file")
    d.add_argument("--input", required=True, help="one {id, prompt, images, responses: [{text, score}]} per line")
    d.add_argument("--out", required=True)
    d.add_argument("--ultra-hard", action="store_true", help="only the widest-score-gap pair of each prompt")
    d.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    d = dsub.add_parser("build", help="recipe YAML -> curated pair set (Arrow, memory-mapped) + stats.json")
    d.add_argument("recipe")
    d.add_argument("--out", required=True, help="output directory (replaced when the build succeeds)")
    dsub.add_parser("adapters", help="list the dataset adapters a recipe can name")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("ensemble", help="combine reward models (mean / accuracy / confidence) with modality routing")
    from .ensemble_cli import add_ensemble_arguments

    add_ensemble_arguments(p)
    p.set_defaults(func=_cmd_ensemble)

    p = sub.add_parser("grm", help="generative judges: StableReinforce RL (grm rl), voting@k (grm voting)")
    from .grm.cli import add_grm_arguments, run_grm_command

    add_grm_arguments(p)
    p.set_defaults(func=run_grm_command)

    p = sub.add_parser("report", help="Markdown report with plots from metrics JSON files")
    p.add_argument("metrics", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--pairs", nargs="*", default=[])
    p.add_argument("--title", default="basereward report")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("serve", help="HTTP reward server (batches across requests; OpenRLHF and vLLM protocols)")
    from .serve.run import add_serve_arguments, run_serve_command

    add_serve_arguments(p)
    p.set_defaults(func=run_serve_command)

    p = sub.add_parser("demo", help="generate data, train the embedded default and a text RM, evaluate, "
                       "save runs/demo/router")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="a tiny run (smoke test), not the real demo")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--varied-data", action="store_true", help="train on the varied generator without its "
                      "counterfactual twins (paraphrases, padding, layouts, held-out combinations left out)")
    data.add_argument("--plain-data", action="store_true", help="train on the plain generator (one house style "
                      "and wording: the demo's data before issue 13)")
    p.add_argument("--full", action="store_true", help="the same recipe on twice the visual training pairs")
    p.add_argument("--foils", type=float, default=None, metavar="P",
                   help="conjunction foils in this share of the absent-object existence pairs (see `data synth --foils`)")
    p.add_argument("--scene-share", action="append", default=[], metavar="KIND=SHARE", help=_SCENE_SHARE_HELP)
    p.add_argument("--word-scenes", type=int, default=None, metavar="N",
                   help="word-scene pairs (a text-only binding curriculum) added to mini-vl's training pairs "
                        "(default 700, 1,400 with --full; 0: none)")
    p.add_argument("--no-text-rm", action="store_true", help="one model trained on visual + HH-RLHF pairs, no text "
                   "RM and no router")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BaseRewardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (a resumable checkpoint was written if training had started; "
              "resume with train.resume=auto)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
