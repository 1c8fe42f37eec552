"""Activation memory of one training step (forward + backward) on mini-vl, measured per setting.

Does gradient checkpointing, or freezing the lower part of the model, cut the memory a training
step needs? Each setting runs in a fresh child process (same model, same batch, same seed):

    rss_step_mb     peak resident memory during forward + backward minus resident memory just
                    before it, gradient buffers already allocated (so: activations and temporaries;
                    the kernel's high-water mark, reset through /proc/self/clear_refs;
                    glibc returns every block over 64 KiB to the system when freed, so the RSS
                    follows the live tensors)
    saved_mb        bytes of the tensors autograd keeps for backward (saved_tensors_hooks, one
                    count per storage); inside a checkpointed layer autograd keeps nothing, so
                    this shows what checkpointing removes, not the layer inputs it keeps
    gpu_step_mb     with CUDA: torch.cuda.max_memory_allocated during the step minus the
                    allocation before it

Settings (share_prefix off everywhere: it is off under gradient checkpointing anyway):
    full                  every LM layer, the projector and the head train
    checkpointing         the same, with gradient checkpointing
    frozen_below_top      only the top LM layer (and head) train; the projector and lower layers
                          are frozen, so nothing below the top layer needs gradients
    frozen_weights_only   the lower layers are frozen but the projector still trains: gradients
                          must flow back through the frozen layers, so they keep activations

Prints a table and the ratios to `full`; writes benchmarks/results/memory/results.json.
Usage: python benchmarks/memory.py [--pairs 8] [--words 160] [--layers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {
    "full": [],
    "checkpointing": ["model.backbone.gradient_checkpointing=true"],
    "frozen_below_top": ["model.backbone.train_lm_layers=1", "model.backbone.mini_vl.train_projector=false"],
    "frozen_weights_only": ["model.backbone.train_lm_layers=1"],
}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(setting: str, n_pairs: int, n_words: int, layers: int, image_dir: str) -> dict:
    import torch
    from bench_common import noise_image, words

    from basereward.config import load_config
    from basereward.data.schema import PreferencePair
    from basereward.losses import reward_loss
    from basereward.models.reward_model import RewardModel

    cfg = load_config(None, ["model.backbone.name=mini-vl", "model.backbone.dtype=float32",
                             f"model.backbone.mini_vl.lm_layers={layers}", "model.backbone.mini_vl.share_prefix=false",
                             "model.backbone.max_length=512", *SETTINGS[setting]])
    torch.manual_seed(0)
    model = RewardModel(cfg.model).train()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    pairs = []
    for i in range(n_pairs):
        path = Path(image_dir) / f"img{i}.png"
        if not path.exists():
            noise_image(224, seed=i).save(path)
        pairs.append(PreferencePair(id=str(i), prompt=f"What does picture {i} show? " + words(20, i),
                                    chosen=words(n_words, 2 * i), rejected=words(n_words, 2 * i + 1),
                                    images=(str(path),)))
    batch = model.collate([p.to_group() for p in pairs])
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # Gradient buffers exist before the step (as from the second step of a run on): backward adds
    # into them, so what the step allocates is activations and temporaries, not gradients.
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)

    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return t

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_before = torch.cuda.memory_allocated()
    Path("/proc/self/clear_refs").write_text("5")  # high-water mark := current RSS
    rss_before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        rewards = model(batch).float().view(-1, 2)  # (B, 2): chosen, rejected
        lens = batch["response_lengths"].view(-1, 2)
        loss = reward_loss(rewards[:, 0], rewards[:, 1], len_w=lens[:, 0], len_l=lens[:, 1])
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    step_s = time.perf_counter() - t0
    out = {"setting": setting, "rss_step_mb": round((_status_kb("VmHWM") - rss_before) / 1024, 1),
           "saved_mb": round(sum(saved.values()) / 2**20, 1), "step_s": round(step_s, 2),
           "tokens": int(batch["attention_mask"].sum()), "sequences": int(rewards.numel()),
           "trainable_params": trainable, "device": device.type}
    if device.type == "cuda":
        out["gpu_step_mb"] = round((torch.cuda.max_memory_allocated() - gpu_before) / 2**20, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--words", type=int, default=160, help="words per response")
    ap.add_argument("--layers", type=int, default=4, help="mini-vl LM layers kept")
    ap.add_argument("--child", default="")
    ap.add_argument("--image-dir", default="")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.pairs, args.words, args.layers, args.image_dir)))
        return
    from bench_common import machine, write_results

    here = Path(__file__).resolve().parent
    # Freed blocks over 64 KiB go straight back to the system, so RSS follows the live tensors.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0",
               PYTHONPATH=os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]))
    rows = []
    with tempfile.TemporaryDirectory() as images:
        for setting in SETTINGS:
            cmd = [sys.executable, str(here / "memory.py"), "--child", setting, "--pairs", str(args.pairs),
                   "--words", str(args.words), "--layers", str(args.layers), "--image-dir", images]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"  {setting}: {rows[-1]}", flush=True)
    base = rows[0]
    keys = ["rss_step_mb", "saved_mb"] + (["gpu_step_mb"] if "gpu_step_mb" in base else [])
    for r in rows:
        r["ratio_to_full"] = {k: round(r[k] / base[k], 3) if base[k] else None for k in keys}
    lines = [(f"mini-vl, {args.layers} LM layers, {base['sequences']} sequences, {base['tokens']} tokens, "
              f"device {base['device']}"),
             f"{'setting':<22}" + "".join(f"{k:>14}" for k in keys) + f"{'x full (' + keys[0] + ')':>22}{'step s':>9}"]
    for r in rows:
        lines.append(f"{r['setting']:<22}" + "".join(f"{r[k]:>14.1f}" for k in keys)
                     + f"{r['ratio_to_full'][keys[0]]:>22.3f}{r['step_s']:>9.2f}")
    table = "\n".join(lines)
    print(table)
    write_results("memory", {"machine": machine(), "args": vars(args), "rows": rows}, table)
    summary = {r["setting"]: r["ratio_to_full"] for r in rows}
    print(json.dumps({"activation_ratio_to_full": summary}))


if __name__ == "__main__":
    main()
