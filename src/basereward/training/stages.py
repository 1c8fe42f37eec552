"""The named stages of a training run, in the order `train()` runs them.

    start_run      processes, step plan, output folder, the resolved config on disk
    build_model    seeded model construction (backbone, then head)
    init_from      weights of a saved model to start from (`train.init_from`)
    optimisation   AdamW + warmup-cosine schedule, with the parameter names checkpoints use
    resume         weights, optimizer, scheduler, RNG and step from a checkpoint
    alignment      the backbone's alignment stage on `data.alignment` (fresh runs only)
    trunk_cache    the backbone's frozen-trunk cache around the fit stage (if its config asks)
    fit            the optimisation loop (fit.py)
    validation     `data.validation` through the Scorer (validation.py)
    save           the final model, its training config and result.json
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import yaml

from ..config import Config, ConfigError, save_config, to_dict
from ..data.schema import PreferencePair
from ..errors import BaseRewardError, TrainingError
from ..io import append_jsonl, finite, iter_jsonl, write_json, write_jsonl
from ..models.backbone import Backbone
from ..models.reward_model import RewardModel
from .checkpoint import (CheckpointError, list_checkpoints, load_optimizer_state, read_checkpoint, set_rng_state,
                         write_checkpoint)
from .plan import StepPlan


@dataclass
class Run:
    """What every stage of one training run shares."""

    cfg: Config
    accelerator: Any
    plan: StepPlan
    total_steps: int
    out_dir: Path
    progress: bool

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def log(self, record: dict) -> None:
        """Append a line to metrics.jsonl (rank 0 only)."""
        if self.is_main:
            append_jsonl(self.out_dir / "metrics.jsonl", finite(record))

    def config_yaml(self) -> str:
        return yaml.safe_dump(to_dict(self.cfg), sort_keys=False)


@dataclass
class Optimisation:
    optimizer: torch.optim.Optimizer
    scheduler: Any
    param_names: dict[int, str]
    """Optimizer parameter index -> parameter name (how checkpoints key the optimizer state)."""


def cpu_has_native_bf16() -> bool:
    """True on a CPU with AVX-512 bf16 instructions (Intel Cooper Lake and later, AMD Zen 4 and
    later), where oneDNN runs bf16 matmuls natively. Without them bf16 is emulated and slower than
    float32; with them it may still be slower (`BF16_MIN_SPEEDUP`), so `bf16-where-fast` also
    measures (`cpu_bf16_speedup`)."""
    cpu = getattr(torch, "cpu", None)
    check = getattr(cpu, "_is_avx512_bf16_supported", None)
    return check is not None and bool(check())


# `bf16-where-fast` on a CPU takes bf16 only where it measures at least this much faster than
# float32 (`cpu_bf16_speedup`): the instructions alone do not say it. Measured with
# benchmarks/cpu_bf16.py on mini-vl's training step: 2.55x on a 2-core EPYC Zen 4, 1.5x on a Xeon
# with AMX, 0.63x on a 2-core Xeon (Emerald Rapids, AVX-512 bf16 but no AMX exposed).
BF16_MIN_SPEEDUP = 1.2


def _decoder_step_seconds(layer: torch.nn.Module, rope: torch.nn.Module, x: torch.Tensor, bf16: bool) -> float:
    positions = torch.arange(x.shape[1]).expand(x.shape[0], -1)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        h = x.clone().requires_grad_(True)
        out = layer(h, position_embeddings=rope(h, positions))
        loss = (out[0] if isinstance(out, tuple) else out).float().square().mean()
    loss.backward()
    return time.perf_counter() - start


@functools.cache
def cpu_bf16_speedup(repeats: int = 3) -> float:
    """float32 seconds / bf16-autocast seconds of one forward + backward of a decoder layer the size
    of SmolLM2-135M's (hidden 576, MLP 1536, 9 heads / 3 KV heads; 8 sequences of 128 tokens),
    measured once per process on this CPU (~1-2 s): the best of `repeats` timings of each mode,
    after one warm-up each. Printed to stderr, since it decides the run's precision."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3,
                      num_hidden_layers=1)
    cfg._attn_implementation = "sdpa"
    # Its own generator: the probe leaves the global RNG (a run's seeded draws) untouched.
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        layer, rope = LlamaDecoderLayer(cfg, 0), LlamaRotaryEmbedding(cfg)
    x = torch.randn(8, 128, 576, generator=gen)
    times: dict[bool, list[float]] = {False: [], True: []}
    for bf16 in (False, True):
        _decoder_step_seconds(layer, rope, x, bf16)  # warm-up: kernel selection, allocations
    for _ in range(repeats):
        for bf16 in (False, True):
            times[bf16].append(_decoder_step_seconds(layer, rope, x, bf16))
    speedup = min(times[False]) / min(times[True])
    verdict = "bf16 autocast" if speedup >= BF16_MIN_SPEEDUP else "float32"
    print(f"[basereward] bf16-where-fast: bf16 measured {speedup:.2f}x float32 on this CPU "
          f"(needs {BF16_MIN_SPEEDUP}x): {verdict}", file=sys.stderr, flush=True)
    return speedup


def resolve_mixed_precision(setting: str, cuda: bool | None = None) -> str:
    """The Accelerate `mixed_precision` a `train.mixed_precision` setting means on this machine.
    On a CPU, `bf16-where-fast` is bf16 only with native bf16 instructions *and* a measured
    speed-up of at least BF16_MIN_SPEEDUP (`cpu_bf16_speedup`)."""
    if setting not in ("auto", "bf16-where-fast"):
        return setting
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda:
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    if setting == "bf16-where-fast" and cpu_has_native_bf16() and cpu_bf16_speedup() >= BF16_MIN_SPEEDUP:
        return "bf16"
    return "no"


def _release_precision(precision: str) -> None:
    """Accelerate keeps one mixed-precision setting per process and refuses a later Accelerator
    with another (the demo's bf16 mini-vl, then a float32 run in the same Python process). A run
    owns its precision: forget the previous run's, keeping the process group (PartialState)."""
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision", precision) != precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def start_run(cfg: Config, train_pairs: Sequence[PreferencePair], progress: bool) -> Run:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from ..data.built import pair_lengths

    tc = cfg.train
    # A micro-batch may leave trainable parameters out of the graph (mini-vl's projector, or an
    # unfrozen Qwen vision tower, on a text-only micro-batch): DDP must then find them, or the
    # processes' gradient all-reduces no longer match and the run dies (seen with 2 processes).
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    precision = resolve_mixed_precision(tc.mixed_precision)
    _release_precision(precision)
    accelerator = Accelerator(mixed_precision=precision, kwargs_handlers=[ddp])
    if accelerator.num_processes > 1:
        from ..processes import close_process_group_at_exit

        close_process_group_at_exit()
    world = accelerator.num_processes
    tc.grad_accum_steps(world)  # checks that the global batch splits evenly
    plan = StepPlan(len(train_pairs), tc.global_batch_size, tc.micro_batch_size, world, tc.seed,
                    lengths=pair_lengths(train_pairs))
    if not train_pairs:
        raise ConfigError("no training pairs: the training set is empty (data.train)")
    if plan.steps_per_epoch() == 0:
        raise ConfigError(
            f"train.global_batch_size={tc.global_batch_size} is larger than the {len(train_pairs)} training pairs"
        )
    total_steps = tc.max_steps or max(1, math.ceil(tc.epochs * plan.steps_per_epoch()))
    run = Run(cfg, accelerator, plan, total_steps, Path(tc.output_dir), progress)
    if run.is_main:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run.out_dir / "config.yaml")
    return run


def build_model(cfg: Config, model: RewardModel | None) -> RewardModel:
    """The model to train: `model` if given, else built after seeding (backbone, then head)."""
    from accelerate.utils import set_seed

    set_seed(cfg.train.seed)
    if model is None:
        model = RewardModel(cfg.model)
    return model.train()


def init_from(run: Run, model: RewardModel) -> dict[str, Any] | None:
    """`train.init_from`: the saved model this run starts from (before any resume, which then
    replaces the trainable tensors with its checkpoint's); what was taken over, or None."""
    source = run.cfg.train.init_from
    if not source:
        return None
    started = model.init_from(source)
    if run.is_main and run.progress:
        print(f"init_from {source}: {started['backbone_tensors']} backbone tensors"
              f"{' and the head' if started['head'] else ' (head: new)'}", file=sys.stderr, flush=True)
    return started


def optimisation(run: Run, model: RewardModel) -> Optimisation:
    """AdamW over the trainable parameters; the head and projector (new, randomly initialised) may
    use their own learning rate (`train.head_lr`)."""
    from transformers import get_cosine_schedule_with_warmup

    tc = run.cfg.train
    fast, slow = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (fast if name.startswith("head.") or ".projector." in f".{name}" else slow).append((name, p))
    groups, names = [], []
    for params, group_lr in ((slow, tc.lr), (fast, tc.head_lr or tc.lr)):
        if params:
            groups.append({"params": [p for _, p in params], "lr": group_lr, "weight_decay": tc.weight_decay})
            names.extend(n for n, _ in params)
    optimizer = torch.optim.AdamW(groups, lr=tc.lr, weight_decay=tc.weight_decay)
    warmup = int(round(tc.warmup_ratio * run.total_steps))
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, run.total_steps)
    return Optimisation(optimizer, scheduler, dict(enumerate(names)))


def _resume_candidates(resume: str, out_dir: Path) -> list[Path]:
    """Checkpoints to try, newest first: every one under output_dir for `auto`, else the named one."""
    if resume == "auto":
        return list_checkpoints(out_dir)[::-1]
    p = Path(resume)
    if not (p / "trainer_state.json").is_file():
        raise ConfigError(f"train.resume: {p} is not a checkpoint directory (no trainer_state.json)")
    return [p]


def _trim_log(path: Path, step: int) -> None:
    """Drop the lines a killed run logged after the checkpoint it is resumed from, so each step
    appears once (the resumed run logs those steps again)."""
    if path.is_file():
        write_jsonl(path, [rec for _, rec in iter_jsonl(path) if int(rec.get("step", 0)) <= step])


def _restore(ckpt: Path, model: RewardModel, opt: Optimisation) -> tuple[int, dict[str, Any]]:
    state, opt_tensors, rng = read_checkpoint(ckpt)  # every file is read before anything changes
    try:
        model.load_trainable(ckpt / "model")
        if opt_tensors:
            load_optimizer_state(opt.optimizer, opt.param_names, opt_tensors, state["optimizer_groups"])
        opt.scheduler.load_state_dict(state["scheduler"])
    except torch.OutOfMemoryError:
        raise  # not the checkpoint's fault: no fallback
    except (BaseRewardError, ValueError, KeyError, RuntimeError) as e:
        # Readable files that do not fit this model (another config, a damaged tensor table).
        raise CheckpointError(f"{ckpt}: does not fit this run ({str(e).splitlines()[0]})") from None
    set_rng_state(rng)
    return int(state["step"]), state.get("history", {})


def resume(run: Run, model: RewardModel, opt: Optimisation) -> tuple[int, dict[str, Any]] | None:
    """Restore trainable weights (and the backbone's metadata), optimizer, scheduler, RNG and the
    step counter from `train.resume`; (start step, history), or None for a fresh run.

    With `auto`, a damaged latest checkpoint (a run killed while the disk filled, a truncated
    copy) is skipped with a warning for the one before it; with none readable, or a named
    checkpoint damaged, the run stops with one line naming the file.
    """
    setting = run.cfg.train.resume
    if not setting:
        return None
    candidates = _resume_candidates(setting, run.out_dir)
    if not candidates:
        return None
    problems: list[str] = []
    for ckpt in candidates:
        try:
            start_step, history = _restore(ckpt, model, opt)
        except CheckpointError as e:
            problems.append(str(e))
            if run.is_main and setting == "auto":
                print(f"[basereward] warning: cannot resume from {ckpt.name}: {e}", file=sys.stderr, flush=True)
            continue
        if run.is_main:
            _trim_log(run.out_dir / "metrics.jsonl", start_step)
            print(f"[basereward] resumed from {ckpt} at step {start_step}/{run.total_steps}", flush=True)
        return start_step, history
    if setting != "auto":
        raise TrainingError(f"train.resume: {problems[0]}")
    raise TrainingError(f"train.resume=auto: no readable checkpoint under {run.out_dir / 'checkpoints'} "
                        f"({'; '.join(problems)})")


def alignment(run: Run, model: RewardModel) -> dict[str, Any] | None:
    """The backbone's alignment stage on `data.alignment`; its metrics, or None without the file."""
    if not run.cfg.data.alignment:
        return None
    from ..data.regions import load_regions

    items = load_regions(run.cfg.data.alignment)
    metrics = model.backbone.align(items, seed=run.cfg.train.seed, progress=run.progress and run.is_main)
    model.train()
    return metrics


def check_ready(backbone: Backbone) -> None:
    """A backbone that cannot run before its alignment stage (and did not get one) stops here."""
    reason = backbone.missing_alignment()
    if reason:
        raise ConfigError(f"data.alignment: backbone {backbone.registry_name!r} needs its alignment stage "
                          f"before training ({reason}); set data.alignment")


@contextlib.contextmanager
def trunk_cache(backbone: Backbone, history: dict[str, Any]) -> Iterator[None]:
    """The frozen-trunk cache around the fit stage, when the backbone's config turns it on; its
    summary goes to `history["trunk_cache"]`."""
    if not backbone.uses_trunk_cache():
        yield
        return
    split = backbone.enable_trunk_cache()
    try:
        yield
    finally:
        history["trunk_cache"] = {"first_trained_layer": split, "cached_groups": backbone.disable_trunk_cache()}


def save_checkpoint(run: Run, step: int, model: RewardModel, opt: Optimisation, state: dict[str, Any]) -> None:
    run.accelerator.wait_for_everyone()
    if run.is_main:
        write_checkpoint(run.out_dir, step, model, opt.optimizer, opt.param_names, opt.scheduler, state,
                         run.config_yaml(), run.cfg.train.keep_checkpoints)
    run.accelerator.wait_for_everyone()


def save(run: Run, model: RewardModel, result: dict[str, Any]) -> dict[str, Any]:
    """The final model (with the result), its training config, and result.json; adds model_dir."""
    model_dir = run.out_dir / "model"
    if run.is_main:
        # The training config goes in with the model: the directory appears whole or not at all.
        model.save_pretrained(model_dir, extra={"train_result": result}, files={"train_config.yaml": run.config_yaml()})
        write_json(run.out_dir / "result.json", finite(result))
    run.accelerator.wait_for_everyone()
    result["model_dir"] = str(model_dir)
    return result
