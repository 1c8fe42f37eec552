"""A real GRPO run on the CPU: TRL's GRPOTrainer, SmolLM2-135M-Instruct as the policy, and the
basereward hybrid reward (1 if the answer matches the ground truth, else sigmoid(RM reward)) from a
multimodal reward model that sees each prompt's image.

    .venv/bin/pip install -e '.[rl]'                      # TRL (never replaces the pinned torch)
    .venv/bin/python examples/grpo_trl.py --reward-model runs/demo/model
    .venv/bin/python examples/grpo_trl.py --reward-model runs/demo/model --via server   # over HTTP

The prompts are rendered by the project's generator (colour, shape and existence questions
about a picture, with their true answers). The policy is text-only: it reads the question but not
the picture, so the picture goes to the reward model alone, through the `reward_images` column
(TRL hands `image`/`images` columns to the policy's processor). Each step logs the rewards, the
rule-match rate, and how many images reached the reward model. Before training, a check shows the
RM uses those images: on the prompts' own preference pairs it prefers the true answer more often
with the right image than with images shuffled between prompts.

No reward model yet? `make demo` trains one into runs/demo/model (~30 min on 2 cores); or add
`--train-reward-model` and this script trains a small one into --reward-model first (a few
minutes: 320 rendered pairs, one epoch, the demo's recipe).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
import warnings
from pathlib import Path

# One-word answers the rule can verify; the demo's reward model is weakest on counting (56%), so
# counts are left out.
CATEGORIES = ("hallucination/color", "hallucination/object", "hallucination/existence")
INSTRUCTION = " Answer with one word."


def ground_truth(category: str, meta: dict) -> str:
    if category == "hallucination/existence":
        return "yes" if meta["present"] else "no"
    return str(meta["true"])


def render_prompts(out: Path, n: int, seed: int):
    """n rendered questions with their images and true answers (the generator's own facts)."""
    from basereward.data.synthetic import assign_categories, make_example

    (out / "images").mkdir(parents=True, exist_ok=True)
    rows, pairs = [], []
    for i, cat in enumerate(assign_categories(n, seed, CATEGORIES)):
        ex = make_example(seed, i, cat)
        path = out / "images" / f"q{seed}-{i:04d}.png"
        ex.image.save(path)
        rows.append({"prompt": [{"role": "user", "content": ex.prompt + INSTRUCTION}], "question": ex.prompt,
                     "reward_images": [str(path)], "answer": ground_truth(cat, ex.meta), "category": cat})
        pairs.append((ex.prompt, str(path), ex.chosen, ex.rejected))
    return rows, pairs


def train_quick_reward_model(model_dir: Path, work: Path, n_pairs: int = 320) -> None:
    """A small mini-vl reward model with the demo's recipe on a budget of a few CPU minutes."""
    import shutil

    from basereward.config import load_config
    from basereward.data.synthetic import generate
    from basereward.demo import demo_config_path
    from basereward.training.data import load_training_data
    from basereward.training.loop import train

    print(f"[grpo] training a quick reward model into {model_dir} ({n_pairs} rendered pairs, 1 epoch)", flush=True)
    generate(str(work / "rm-train"), n_pairs=n_pairs, seed=0, categories=CATEGORIES, progress=False)
    generate(str(work / "rm-val"), n_pairs=48, seed=1, categories=CATEGORIES, progress=False)
    cfg = load_config(demo_config_path(), [
        f"data.train=[{work / 'rm-train' / 'pairs.jsonl'}]", f"data.validation={work / 'rm-val' / 'pairs.jsonl'}",
        f"data.alignment={work / 'rm-train' / 'regions.jsonl'}", "data.text_ratio=-1", "train.epochs=1",
        f"train.output_dir={work / 'rm-run'}"])
    pairs, val = load_training_data(cfg.data, cfg.train.seed)
    result = train(cfg, pairs, val)
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.copytree(result["model_dir"], model_dir)


def is_reward_dir(path: Path) -> bool:
    from basereward.ensemble import is_ensemble_dir
    from basereward.models.reward_model import CONFIG_NAME

    return (path / CONFIG_NAME).is_file() or is_ensemble_dir(str(path))


def image_check(source, pairs, seed: int) -> tuple[float, float]:
    """Pair accuracy of the RM on the prompts' own (true, hallucinated) answers: with each prompt's
    image, and with images shuffled between prompts. The gap is what the image contributes."""
    from basereward.data.schema import Group

    shuffled = [p[1] for p in pairs]
    random.Random(seed).shuffle(shuffled)

    def accuracy(images):
        scores = source.score_groups([Group(q, (c, r), (img,)) for (q, _, c, r), img in zip(pairs, images)])
        return sum(s[0] > s[1] for s in scores) / len(scores)

    return accuracy([p[1] for p in pairs]), accuracy(shuffled)


@contextlib.contextmanager
def reward_source(args, out: Path):
    """The reward model in-process, over a server started here on loopback, or at --reward-url."""
    from basereward.rl import HttpRewardSource, open_reward_source

    if args.reward_url:
        with HttpRewardSource(args.reward_url) as src:
            yield src, f"server {args.reward_url}"
    elif args.via == "server":
        from basereward.load import load_scorer
        from basereward.serve import ServeOptions, create_app, running_server
        from basereward.serve.images import ImagePolicy

        app = create_app(load_scorer(args.reward_model), ServeOptions(
            model_name=Path(args.reward_model).name, images=ImagePolicy(root=str(out))))
        with running_server(app) as url, HttpRewardSource(url, inline_paths=False) as src:
            # image paths travel as paths; the server opens them inside its image root (the run folder)
            yield src, f"server {url} (image root {out})"
    else:
        yield open_reward_source(args.reward_model, batch_size=32), "in-process"


def make_logger(func, log_path: Path, t0: float):
    from transformers import TrainerCallback

    class StepLog(TrainerCallback):
        """One line per optimizer step: TRL's reward statistics and what the RM was given."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "reward" not in logs:
                return
            ours = func.history[-1] if func.history else {}
            row = {"step": state.global_step, "reward_mean": logs["reward"], "reward_std": logs.get("reward_std"),
                   "rule_match": ours.get("rule_match"), "rm_reward_mean": ours.get("rm_reward_mean"),
                   "images_to_rm": ours.get("images_to_rm"), "samples_to_rm": ours.get("samples_to_rm"),
                   "samples": ours.get("samples"), "loss": logs.get("loss"), "seconds": round(time.time() - t0, 1)}
            with log_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"[grpo] step {row['step']:>3}  reward {row['reward_mean']:.3f} ± {row['reward_std'] or 0:.3f}  "
                  f"rule match {row['rule_match'] or 0:.2f}  RM raw {row['rm_reward_mean'] or 0:+.3f}  "
                  f"images→RM {int(row['images_to_rm'] or 0)} (for {int(row['samples_to_rm'] or 0)}/"
                  f"{int(row['samples'] or 0)} completions)  {row['seconds']:.0f} s", flush=True)

    return StepLog()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--reward-model", default="runs/demo/model", help="reward model (or ensemble) directory")
    p.add_argument("--train-reward-model", action="store_true", help="train a small one there first if it is missing")
    p.add_argument("--via", choices=("inprocess", "server"), default="inprocess",
                   help="score in this process, or through `basereward serve`'s app on loopback")
    p.add_argument("--reward-url", default=None, help="use a running reward server (comma-separated URLs) instead")
    p.add_argument("--out", default="runs/grpo", help="run folder (prompts, images, steps.jsonl, TRL output)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--prompts-per-step", type=int, default=2)
    p.add_argument("--num-generations", type=int, default=4, help="completions per prompt (the GRPO group)")
    p.add_argument("--max-completion-length", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' renamed-argument notices

    t0 = time.time()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.reward_url and not is_reward_dir(Path(args.reward_model)):
        if not args.train_reward_model:
            print(f"error: --reward-model {args.reward_model}: no reward model there. Train one with `make demo` "
                  "(runs/demo/model), or add --train-reward-model to train a small one there (a few minutes).",
                  file=sys.stderr)
            return 2
        train_quick_reward_model(Path(args.reward_model), out / "reward-model-work")

    try:
        from datasets import Dataset
        from transformers import PrinterCallback
        from trl import GRPOConfig, GRPOTrainer
    except ImportError:
        print("error: this example needs TRL: .venv/bin/pip install -e '.[rl]'", file=sys.stderr)
        return 2
    from basereward.models.mini_vl.weights import smollm2_dir
    from basereward.rl.trl import trl_reward

    n_prompts = max(args.steps * args.prompts_per_step, 32)  # >= 32 for the image check
    rows, pairs = render_prompts(out, n_prompts, seed=10 + args.seed)
    print(f"[grpo] {n_prompts} rendered prompts with images and ground truths in {out}", flush=True)
    with reward_source(args, out) as (source, where):
        with_image, shuffled = image_check(source, pairs, args.seed)
        print(f"[grpo] reward model ({where}): prefers the true answer on {100 * with_image:.0f}% of these prompts' "
              f"pairs with their images, {100 * shuffled:.0f}% with images shuffled", flush=True)
        func = trl_reward(source, reward="hybrid")
        config = GRPOConfig(
            output_dir=str(out / "trl"), max_steps=args.steps, learning_rate=args.lr, seed=args.seed,
            per_device_train_batch_size=args.prompts_per_step * args.num_generations,
            num_generations=args.num_generations, max_completion_length=args.max_completion_length,
            temperature=1.0, logging_steps=1, report_to="none", use_cpu=True, save_strategy="no",
            disable_tqdm=True, bf16=False, gradient_checkpointing=False)
        log_path = out / "steps.jsonl"
        log_path.unlink(missing_ok=True)
        trainer = GRPOTrainer(model=str(smollm2_dir()), reward_funcs=[func], args=config,
                              train_dataset=Dataset.from_list(rows), callbacks=[make_logger(func, log_path, t0)])
        trainer.remove_callback(PrinterCallback)  # our one line per step replaces its raw dicts
        print(f"[grpo] GRPO: SmolLM2-135M-Instruct, {args.steps} steps × {args.prompts_per_step} prompts × "
              f"{args.num_generations} completions, hybrid reward", flush=True)
        trainer.train()
    steps = [json.loads(line) for line in log_path.read_text().splitlines()]
    print(f"[grpo] done in {time.time() - t0:.0f} s; per-step log in {log_path}")
    print("[grpo] rewards per step: " + ", ".join(f"{s['reward_mean']:.3f}" for s in steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
