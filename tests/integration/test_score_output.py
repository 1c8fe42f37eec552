"""What `score` and `eval` write: valid JSON only, non-finite rewards refused (or written as null
when asked), output replaced atomically, and RM-Bench computed from per-pair `score` output equal
to `eval --bench rm-bench`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers.tiny_models import tiny_causal_lm_dir

from basereward import load as load_module
from basereward.cli import main
from basereward.config import BackboneConfig, HeadConfig, ModelConfig
from basereward.data.pairs import save_pairs
from basereward.data.schema import PreferencePair
from basereward.eval.benchmarks import rm_bench
from basereward.models.reward_model import RewardModel
from basereward.scoring.interface import (
    NonFiniteRewardError,
    ScoringMixin,
    writable_rewards,
)

NAN, INF = float("nan"), float("inf")


class TableScorer(ScoringMixin):
    """Rewards from a table keyed by response text (default 0.5): NaN / inf exactly where wanted."""

    def __init__(self, table: dict[str, float]):
        self.table = table

    def score_groups(self, groups):
        return [[self.table.get(r, 0.5) for r in g.responses] for g in groups]


def _pairs(tmp_path: Path, n: int = 4) -> Path:
    pairs = [PreferencePair(id=f"p{i}", prompt=f"question {i}", chosen=f"good {i}", rejected=f"bad {i}",
                            category="a" if i % 2 else "b") for i in range(n)]
    save_pairs(pairs, tmp_path / "pairs.jsonl")
    return tmp_path / "pairs.jsonl"


def _errors(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_writable_rewards_names_the_first_item_and_counts():
    rows, n = writable_rewards(["a", "b"], [[1.0, 2.0], [3.0, 4.0]])
    assert (rows, n) == ([[1.0, 2.0], [3.0, 4.0]], 0)
    with pytest.raises(NonFiniteRewardError) as e:
        writable_rewards(["a", "b", "c"], [[1.0, 2.0], [1.0, NAN], [-INF, INF]], labels=("chosen", "rejected"))
    assert str(e.value) == ("item b: the rejected reward is nan (3 non-finite rewards in all); nothing was written "
                            "(--allow-nonfinite writes them as null)")
    with pytest.raises(NonFiniteRewardError, match=r"^item g: reward 3 of 4 is inf \(1 non-finite reward in all\)"):
        writable_rewards(["g"], [[0.0, 1.0, INF, 2.0]])
    rows, n = writable_rewards(["a", "b"], [[1.0, NAN], [-INF, 4.0]], allow_nonfinite=True)
    assert (rows, n) == ([[1.0, None], [None, 4.0]], 2)


def test_score_refuses_nonfinite_rewards_and_keeps_the_old_output(tmp_path, capsys, monkeypatch):
    pairs = _pairs(tmp_path)
    monkeypatch.setattr(load_module, "load_scorer", lambda *a, **k: TableScorer({"bad 2": INF, "good 3": NAN}))
    out = tmp_path / "scores.jsonl"
    out.write_text("previous\n")
    args = ["score", "--model", "unused", "--pairs", str(pairs), "--output", str(out)]
    assert main(args) == 2
    assert _errors(capsys) == [("error: item p2: the rejected reward is inf (2 non-finite rewards in all); "
                               "nothing was written (--allow-nonfinite writes them as null)")]
    assert out.read_text() == "previous\n"  # the failed run left the earlier file whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl", "scores.jsonl"]  # no temp file left


def test_score_allow_nonfinite_writes_null_and_counts(tmp_path, capsys, monkeypatch):
    pairs = _pairs(tmp_path)
    monkeypatch.setattr(load_module, "load_scorer", lambda *a, **k: TableScorer({"bad 2": INF, "good 3": NAN}))
    out, summary = tmp_path / "scores.jsonl", tmp_path / "summary.json"
    assert main(["score", "--model", "unused", "--pairs", str(pairs), "--output", str(out),
                 "--summary", str(summary), "--allow-nonfinite"]) == 0
    assert "wrote 4 scores to" in capsys.readouterr().out.splitlines()[-1]
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    rows = [json.loads(line) for line in text.splitlines()]
    assert rows[2] == {"id": "p2", "chosen_reward": 0.5, "rejected_reward": None}
    assert rows[3] == {"id": "p3", "chosen_reward": None, "rejected_reward": 0.5}
    # 0.5 vs 0.5 is a tie (wrong), 0.5 vs inf wrong, NaN vs 0.5 wrong: nothing is right.
    # Wilson 95% of 0 of 4: centre = half-width = (3.8415 / 8) / (1 + 3.8415 / 4) = 0.24495 -> [0, 0.4899].
    overall = json.loads(summary.read_text())["overall"]
    assert overall == {"accuracy": 0.0, "n": 4, "interval95": pytest.approx([0.0, 0.48990], abs=1e-4)}


def test_score_with_a_nan_model_end_to_end(tmp_path, capsys):
    """A saved model whose head outputs NaN (what a diverged run would have saved before the
    training guards): `score` refuses with one line and exit 2, writing nothing."""
    cfg = ModelConfig(backbone=BackboneConfig(name="causal-lm", path=str(tiny_causal_lm_dir(tmp_path)),
                                              dtype="float32"))
    model = RewardModel(cfg)
    with torch.no_grad():
        model.head.net[-1].bias.fill_(NAN)
    model_dir = model.save_pretrained(tmp_path / "model")
    out = tmp_path / "s.jsonl"
    assert main(["score", "--model", str(model_dir), "--pairs", str(_pairs(tmp_path, 2)), "--output", str(out)]) == 2
    assert _errors(capsys) == [("error: item p0: the chosen reward is nan (4 non-finite rewards in all); "
                               "nothing was written (--allow-nonfinite writes them as null)")]
    assert not out.exists()


def test_eval_refuses_nonfinite_or_writes_null(tmp_path, capsys, monkeypatch):
    pairs = _pairs(tmp_path)
    monkeypatch.setattr(load_module, "load_scorer", lambda *a, **k: TableScorer({"good 1": 2.0, "bad 0": NAN}))
    out = tmp_path / "m.json"
    args = ["eval", "--model", "unused", "--bench", "pairs", "--data", str(pairs), "--output", str(out)]
    assert main(args) == 2
    assert _errors(capsys) == [("error: item p0: reward 2 of 2 is nan (1 non-finite reward in all); "
                               "nothing was written (--allow-nonfinite writes them as null)")]
    assert not out.exists() and not (tmp_path / "m.scores.jsonl").exists()
    assert main(args + ["--allow-nonfinite"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["nonfinite_rewards"] == 1
    assert metrics["accuracy"] == 0.25  # only p1 (2.0 > 0.5) is right; the NaN pair counts as wrong
    lines = [json.loads(x) for x in (tmp_path / "m.scores.jsonl").read_text().splitlines()]
    assert lines[0]["scores"] == [0.5, None]


# ------------------------------------------------------------------ RM-Bench: pairs == groups


def _rm_subset(src: Path, dst: Path, per_file: int) -> list:
    """The first `per_file` items of every RM-Bench file, as a smaller RM-Bench directory."""
    dst.mkdir()
    for f in sorted(src.glob("*_filtered.json")):
        (dst / f.name).write_text(json.dumps(json.loads(f.read_text())[:per_file]))
    return rm_bench.load(str(dst))


def _rm_bench_from_pairs(items, pair_rewards: dict[str, tuple[float, float]]) -> dict:
    """RM-Bench's definition applied to per-pair rewards: M[i][j] is the fraction of a domain's
    prompts whose (chosen style i, rejected style j) pair has chosen > rejected."""
    domains = {}
    for domain in rm_bench.DOMAINS:
        ids = [item.id for item in items if item.meta["domain"] == domain]
        if not ids:
            continue
        m = [[sum(pair_rewards[f"{x}#c{i}r{j}"][0] > pair_rewards[f"{x}#c{i}r{j}"][1] for x in ids) / len(ids)
              for j in range(3)] for i in range(3)]
        lower = [m[i][j] for i in range(3) for j in range(3) if i > j]
        upper = [m[i][j] for i in range(3) for j in range(3) if i < j]
        d = {"easy": sum(lower) / 3, "normal": sum(m[i][i] for i in range(3)) / 3, "hard": sum(upper) / 3}
        d["score"] = (d["easy"] + d["normal"] + d["hard"]) / 3
        domains[domain] = d
    out = {"domains": domains, "total": sum(d["score"] for d in domains.values()) / len(domains)}
    for key in ("easy", "normal", "hard"):
        out[key] = sum(d[key] for d in domains.values()) / len(domains)
    return out


def test_rm_bench_from_per_pair_score_output_equals_eval(tmp_path, shared_data_path):
    items = _rm_subset(shared_data_path("rm-bench"), tmp_path / "rm", per_file=2)
    cfg = ModelConfig(backbone=BackboneConfig(name="causal-lm", path=str(tiny_causal_lm_dir(tmp_path)),
                                              dtype="float32", max_length=256))
    torch.manual_seed(0)
    model = RewardModel(cfg)
    with torch.no_grad():  # a random last layer: the zero-initialised one would tie every reward at 0
        model.head.net[-1].weight.normal_()
    model_dir = model.save_pretrained(tmp_path / "model")

    # Every (chosen style i, rejected style j) of every prompt as one pair of a pair file.
    pairs = [PreferencePair(id=f"{item.id}#c{i}r{j}", prompt=item.group.prompt, chosen=item.group.responses[i],
                            rejected=item.group.responses[3 + j], category=item.meta["domain"])
             for item in items for i in range(3) for j in range(3)]
    save_pairs(pairs, tmp_path / "pairs.jsonl")
    assert main(["score", "--model", str(model_dir), "--pairs", str(tmp_path / "pairs.jsonl"),
                 "--output", str(tmp_path / "s.jsonl"), "--batch-size", "5"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    from_pairs = _rm_bench_from_pairs(items, {r["id"]: (r["chosen_reward"], r["rejected_reward"]) for r in rows})

    assert main(["eval", "--model", str(model_dir), "--bench", "rm-bench", "--data", str(tmp_path / "rm"),
                 "--output", str(tmp_path / "rm.json"), "--batch-size", "7"]) == 0
    evaluated = json.loads((tmp_path / "rm.json").read_text())
    assert set(evaluated["domains"]) == {"chat", "code", "safety"}
    assert evaluated["domains"] == from_pairs["domains"]  # exactly, not approximately
    for key in ("easy", "normal", "hard", "total"):
        assert evaluated[key] == from_pairs[key], key
    # Not a degenerate agreement: the model separates styles (some comparisons right, some wrong).
    assert 0.0 < evaluated["total"] < 1.0
    # And the per-response rewards themselves agree: a chosen reward scored in a pair equals the
    # same response's reward scored in the group of six.
    per_item = {json.loads(x)["id"]: json.loads(x)["scores"]
                for x in (tmp_path / "rm.scores.jsonl").read_text().splitlines()}
    for r in rows:
        item_id, tag = r["id"].split("#")
        i, j = int(tag[1]), int(tag[3])
        assert math.isclose(r["chosen_reward"], per_item[item_id][i], abs_tol=1e-5)
        assert math.isclose(r["rejected_reward"], per_item[item_id][3 + j], abs_tol=1e-5)


def test_score_precision_flag_reaches_the_scorer(tmp_path, capsys):
    """`score --precision`: `no` writes the float32 rewards of the default on a CPU, `bf16` rewards
    from a bf16 autocast (close to them, not equal)."""
    cfg = ModelConfig(backbone=BackboneConfig(name="causal-lm", path=str(tiny_causal_lm_dir(tmp_path)),
                                              dtype="float32"), head=HeadConfig(zero_init_last=False))
    torch.manual_seed(0)
    model_dir = RewardModel(cfg).save_pretrained(tmp_path / "model")
    pairs = _pairs(tmp_path, 4)

    def rewards(*extra):
        out = tmp_path / f"s{len(extra)}{'-'.join(extra)}.jsonl"
        assert main(["score", "--model", str(model_dir), "--pairs", str(pairs), "--output", str(out), *extra]) == 0
        return torch.tensor([[r["chosen_reward"], r["rejected_reward"]]
                             for r in map(json.loads, out.read_text().splitlines())])

    default, fp32, bf16 = rewards(), rewards("--precision", "no"), rewards("--precision", "bf16")
    assert torch.equal(default, fp32) and not torch.equal(bf16, fp32)
    assert (bf16 - fp32).abs().max() < 0.1 * fp32.std()
    with pytest.raises(SystemExit) as e:  # argparse refuses it: one usage line, exit 2
        main(["score", "--model", str(model_dir), "--pairs", str(pairs), "--output", str(tmp_path / "x"),
              "--precision", "fp8"])
    assert e.value.code == 2 and "invalid choice: 'fp8'" in capsys.readouterr().err
