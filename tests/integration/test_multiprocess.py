"""Two processes equal one: `accelerate launch --multi_gpu --num_processes 2` on CPU (gloo, DDP).

One launch of two real processes runs five CLI commands in a row (`basereward.cli.main` with the
argv a user would type after `-m basereward.cli`; one launch, not five, keeps the process start-up
cost to one): training the tiny Qwen2.5-VL, resuming it from a one-process checkpoint, training
mini-vl, `score` and `eval`. The same commands then run in this one process. Checked:

- the same global batch on 2 processes x 1 micro-batch and on 1 process x 2 micro-batches gives
  the same weights (within 1e-5; in practice bit-equal) and the same per-step metrics;
- a checkpoint written by 2 processes resumed on 1, and one written by 1 resumed on 2, both end
  where the uninterrupted 1-process run ends (the data order is a function of (seed, step), the
  optimizer state is keyed by parameter name, not by process);
- mini-vl with a text-only micro-batch on one process (its projector then gets no gradient
  there: DDP must find the unused parameters, or the gradient all-reduces fall out of step);
- `score` / `eval` shard their input over the processes and write the files in input order,
  equal to one process's files, with truncation counts summed and peak memory reported.

Processes are started with ACCELERATE_USE_CPU=1 and `--multi_gpu` (accelerate's `--cpu` alone
starts one process unless an MPI hostfile is given).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.tiny_models import solid_image, tiny_qwen25vl_dir
from safetensors.torch import load_file

from basereward.cli import main
from basereward.data.pairs import load_pairs, save_pairs
from basereward.data.schema import PreferencePair
from basereward.scoring.shard import Processes, score_sharded, shard_bounds
from basereward.training.plan import StepPlan

pytestmark = pytest.mark.slow

MINI_VL_SEED = 6  # its first step puts both text-only pairs in one process's micro-batch (checked below)

_DRIVER = '''
import json, os, sys
from basereward.cli import main
for argv in json.load(open(sys.argv[1])):
    rc = main(argv)
    if rc != 0:
        os.write(2, f"rank {os.environ['RANK']}: {argv[0]} exited {rc}\\n".encode())
        sys.exit(rc)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp")
    (root / "img").mkdir()
    pairs = []
    for i in range(8):
        images: tuple[str, ...] = ()
        if i % 4 != 3:  # pairs 3 and 7 are text-only
            path = root / "img" / f"i{i}.png"
            solid_image(56 + 14 * (i % 3), 56, seed=i).save(path)
            images = (str(path),)
        pairs.append(PreferencePair(id=f"p{i}", prompt=f"Question number {i}?", chosen=f"good answer {i}",
                                    rejected=f"bad {i} answer here", images=images, category="ab"[i % 2]))
    save_pairs(pairs, root / "pairs.jsonl")
    save_pairs(pairs[:7], root / "score.jsonl")  # 7 items: shards of 4 and 3
    (root / "empty.yaml").write_text("{}\n")
    return {"root": root, "qwen": tiny_qwen25vl_dir(root), "pairs": root / "pairs.jsonl",
            "score": root / "score.jsonl", "yaml": str(root / "empty.yaml")}


def _train(ws, backbone: str, out: Path, *extra: str) -> list[str]:
    common = [f"data.train=[{ws['pairs']}]", "train.global_batch_size=4", "train.micro_batch_size=2",
              "train.lr=1e-3", "train.warmup_ratio=0", f"train.output_dir={out}"]
    if backbone == "qwen":
        model = ["model.backbone.name=qwen2.5-vl", f"model.backbone.path={ws['qwen']}", "model.backbone.dtype=float32",
                 "model.backbone.attn_implementation=eager", "train.seed=7", "train.max_steps=4", "train.save_every=2"]
    else:  # mini-vl on its pretrained weights, cut to 2 LM layers, small images and sequences
        model = ["model.backbone.name=mini-vl", "model.backbone.max_length=64", "model.backbone.mini_vl.lm_layers=2",
                 "model.backbone.mini_vl.image_grid=2", "model.backbone.mini_vl.image_size=64",
                 f"train.seed={MINI_VL_SEED}", "train.max_steps=2"]
    return ["train", ws["yaml"], *model, *common, *extra]


def _commands(ws, out: Path, resume_from: Path, scored_model: Path) -> list[list[str]]:
    """The five commands, writing under `out`; the qwen run resumes from `resume_from`."""
    return [
        _train(ws, "qwen", out / "qwen"),
        _train(ws, "qwen", out / "qwen_resumed", f"train.resume={resume_from}"),
        _train(ws, "mini", out / "mini"),
        ["score", "--model", str(scored_model), "--pairs", str(ws["score"]), "--output", str(out / "score.jsonl"),
         "--summary", str(out / "score.json"), "--batch-size", "2"],
        ["eval", "--model", str(scored_model), "--bench", "pairs", "--data", str(ws["score"]),
         "--output", str(out / "eval" / "pairs.json"), "--batch-size", "2"],
    ]


@pytest.fixture(scope="module")
def runs(ws):
    # One intra-op thread here as in the launched processes (OMP_NUM_THREADS=1): with another
    # thread count the matmuls sum in another order and the weights drift apart at the 1e-5 level
    # (seen: 1.6e-5 on mini-vl's head after 2 steps), whatever the number of processes.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_all(ws)
    finally:
        torch.set_num_threads(threads)


def _run_all(ws) -> dict:
    root = ws["root"]
    one, two = root / "one", root / "two"
    # The one-process qwen run first: its step-2 checkpoint is what the two processes resume from,
    # and its model is what both score.
    assert main(_train(ws, "qwen", one / "qwen")) == 0
    one_ckpt = one / "qwen" / "checkpoints" / "step-000002"
    jobs = root / "jobs.json"
    jobs.write_text(json.dumps(_commands(ws, two, one_ckpt, one / "qwen" / "model")))
    (root / "driver.py").write_text(_DRIVER)
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(root / "driver.py"), str(jobs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=480, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # The same commands in this one process; the qwen resume reads the two processes' checkpoint.
    for argv in _commands(ws, one, two / "qwen" / "checkpoints" / "step-000002", one / "qwen" / "model")[1:]:
        assert main(argv) == 0, argv
    return {"one": one, "two": two, "stdout": proc.stdout}


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("reward_head.safetensors", "backbone.safetensors"):
        if (model_dir / name).is_file():
            out.update({f"{name}:{k}": v for k, v in load_file(str(model_dir / name)).items()})
    return out


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and any(k.startswith("backbone") for k in wa)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=0, msg=k)


def _steps(run_dir: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in x.items() if k not in ("elapsed_s", "peak_rss_mb")} for x in lines if "loss" in x]


@pytest.mark.parametrize("run", ["qwen", "mini"])
def test_two_processes_train_to_the_weights_of_one(runs, run):
    _assert_same_weights(runs["one"] / run / "model", runs["two"] / run / "model")
    one, two = _steps(runs["one"] / run), _steps(runs["two"] / run)
    assert len(one) == len(two) == (4 if run == "qwen" else 2)
    for a, b in zip(one, two):  # loss, accuracy, gap, grad norm: sums over both processes, then divided
        assert a == pytest.approx(b, rel=1e-5, abs=1e-7)
    assert one[-1]["loss"] < one[0]["loss"]  # it did train
    # The two processes report their peak RSS on the last metrics line and in result.json.
    result = json.loads((runs["two"] / run / "result.json").read_text())
    assert result["train"]["peak_rss_mb"] > 100


def test_mini_vl_run_has_a_text_only_micro_batch(ws):
    """What makes the mini-vl case above a test of DDP's unused parameters: step 1 of that run gives
    one process both text-only pairs (no image tokens, so no projector gradient there)."""
    pairs = load_pairs(ws["pairs"])
    from basereward.data.built import pair_lengths

    plan = StepPlan(len(pairs), 4, 2, 2, MINI_VL_SEED, lengths=pair_lengths(pairs))
    micro = [[pairs[i].is_multimodal for i in plan.micro_indices(0, rank, 0)] for rank in (0, 1)]
    assert [False, False] in micro and [True, True] in micro


def test_resume_across_a_change_of_process_count(runs):
    """Checkpoint of step 2 from 2 processes resumed on 1 (and from 1 resumed on 2) to step 4 ends
    where the uninterrupted one-process run ends."""
    straight = runs["one"] / "qwen" / "model"
    for resumed in (runs["one"] / "qwen_resumed", runs["two"] / "qwen_resumed"):
        _assert_same_weights(straight, resumed / "model")
        steps = _steps(resumed)
        assert [s["step"] for s in steps] == [3, 4]
        for a, b in zip(steps, _steps(runs["one"] / "qwen")[2:]):
            assert a == pytest.approx(b, rel=1e-5, abs=1e-7)


def test_score_shards_and_merges_in_input_order(runs, ws):
    rows = {k: [json.loads(x) for x in (runs[k] / "score.jsonl").read_text().splitlines()] for k in ("one", "two")}
    assert [r["id"] for r in rows["two"]] == [p.id for p in load_pairs(ws["score"])]
    for a, b in zip(rows["one"], rows["two"]):
        assert a["id"] == b["id"]
        assert (a["chosen_reward"], a["rejected_reward"]) == pytest.approx((b["chosen_reward"], b["rejected_reward"]),
                                                                          abs=1e-5)
    summaries = {k: json.loads((runs[k] / "score.json").read_text()) for k in ("one", "two")}
    # Truncation counts are summed over the processes: 7 pairs = 14 sequences either way.
    assert summaries["one"]["truncation"] == summaries["two"]["truncation"]
    assert summaries["two"]["truncation"][0]["sequences"] == 14
    assert summaries["one"]["overall"] == summaries["two"]["overall"]
    assert summaries["two"]["memory"]["processes"] == 2 and summaries["one"]["memory"]["processes"] == 1
    assert summaries["two"]["memory"]["peak_rss_mb"] > 100
    # Only rank 0 printed the table and the memory line.
    assert runs["stdout"].count("wrote 7 scores") == 1
    assert runs["stdout"].count("peak memory: ") == 1 and "(largest of 2 processes)" in runs["stdout"]


def test_eval_shards_and_merges_in_input_order(runs, ws):
    files = {k: runs[k] / "eval" / "pairs.scores.jsonl" for k in ("one", "two")}
    one, two = ([json.loads(x) for x in files[k].read_text().splitlines()] for k in ("one", "two"))
    assert [r["id"] for r in two] == [p.id for p in load_pairs(ws["score"])] == [r["id"] for r in one]
    for a, b in zip(one, two):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)
    m1, m2 = (json.loads((runs[k] / "eval" / "pairs.json").read_text()) for k in ("one", "two"))
    assert m1["num_items"] == m2["num_items"] == 7
    assert m1["truncation"] == m2["truncation"]
    assert m1["accuracy"] == m2["accuracy"]


# ------------------------------------------------------------------ the shard arithmetic alone


@pytest.mark.parametrize("n,world", [(0, 2), (1, 2), (7, 2), (8, 3), (5, 8)])
def test_shards_are_contiguous_and_cover_the_input(n, world):
    bounds = [shard_bounds(n, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [e - s for s, e in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_one_process_scores_everything_in_one_call():
    calls = []

    class Source:
        def __init__(self):
            self.truncated = {"sequences": 0, "prompt": 0, "response": 0}

        def score_groups(self, groups):
            calls.append(len(groups))
            return [[float(len(g.responses))] * len(g.responses) for g in groups]

    groups = [PreferencePair(id=str(i), prompt="q", chosen="a", rejected="b").to_group() for i in range(5)]
    assert score_sharded(Source(), groups, Processes()) == [[2.0, 2.0]] * 5
    assert calls == [5]
