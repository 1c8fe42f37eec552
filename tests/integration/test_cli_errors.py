"""Bad input reaches the user as one clear line (file:line: reason), exit status 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from basereward.cli import main


def _write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def _row(i, **kw):
    row = {"id": f"r{i}", "prompt": "q?", "images": [], "chosen": "yes", "rejected": "no", "source": "s", "category": "c"}
    row.update(kw)
    return row


CASES = {
    "malformed JSON": ('{"id": "r1", "prompt": ', "2: malformed JSON"),
    "missing field": (json.dumps({k: v for k, v in _row(1).items() if k != "chosen"}), "2: missing field 'chosen'"),
    "empty text": (_row(1, rejected="   "), "2: empty rejected"),
    "missing image": (_row(1, images=["nope.png"]), "2: image not found"),
    "corrupt image": (_row(1, images=["corrupt.png"]), "2: corrupt or unreadable image"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_score_bad_pairs_one_line_error(tmp_path, capsys, case):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    bad_row, expected = CASES[case]
    pairs = _write(tmp_path / "pairs.jsonl", [_row(0), bad_row])
    rc = main(["score", "--model", str(tmp_path), "--pairs", str(pairs), "--output", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: ")
    assert f"pairs.jsonl:{expected}" in err[0]
    assert not (tmp_path / "o.jsonl").exists()  # nothing half-written


def test_decompression_bomb_is_refused(tmp_path, capsys):
    Image.new("1", (9000, 9000)).save(tmp_path / "bomb.png")  # 81 Mpx, a few kB on disk
    pairs = _write(tmp_path / "pairs.jsonl", [_row(0, images=["bomb.png"])])
    rc = main(["data", "check", str(pairs), "--on-error", "fail"])
    err = capsys.readouterr().err
    assert rc == 2 and "pairs.jsonl:1: decompression bomb refused" in err


def test_skip_mode_keeps_good_rows_and_reports_each_bad_one(tmp_path, capsys):
    pairs = _write(tmp_path / "pairs.jsonl", [_row(0), "{not json", _row(2, chosen=""), _row(3)])
    rc = main(["data", "check", str(pairs), "--on-error", "skip"])
    captured = capsys.readouterr()
    assert rc == 0
    assert "pairs.jsonl:2: malformed JSON" in captured.err and "pairs.jsonl:3: empty chosen" in captured.err
    assert "2 valid pairs" in captured.out


def test_config_errors_are_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  learning_rate: 1\n")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key" in err[0] and "learning_rate" in err[0]
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_not_a_model_dir(tmp_path, capsys):
    pairs = _write(tmp_path / "pairs.jsonl", [_row(0)])
    assert main(["score", "--model", str(tmp_path / "nope"), "--pairs", str(pairs), "--output", str(tmp_path / "o")]) == 2
    assert "not a basereward model directory" in capsys.readouterr().err


def test_real_process_prints_no_traceback(tmp_path):
    pairs = _write(tmp_path / "pairs.jsonl", [_row(0), "{oops"])
    proc = subprocess.run([sys.executable, "-m", "basereward.cli", "data", "check", str(pairs), "--on-error", "fail"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "pairs.jsonl:2: malformed JSON" in proc.stderr


@pytest.mark.parametrize("cmd", ["score", "eval"])
def test_an_output_that_is_a_directory_is_refused_before_any_work(tmp_path, capsys, cmd):
    pairs = _write(tmp_path / "p.jsonl", [_row(1)])
    # The model path does not exist: the output check must come first (no model is loaded).
    args = ["--model", str(tmp_path / "no-model"), "--output", str(tmp_path)]
    args += ["--pairs", str(pairs)] if cmd == "score" else ["--bench", "pairs", "--data", str(pairs)]
    assert main([cmd, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the output is a directory; give a file path" in err[0]
    blocker = _write(tmp_path / "file", ["x"])
    assert main([cmd, *args[:2], "--output", str(blocker / "out.jsonl"), *args[4:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f"the output's folder {blocker} is a file")


def _errors(capsys) -> list[str]:
    """The error lines on stderr (model loading also logs there); never a traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_a_damaged_model_directory_is_one_line(tmp_path, capsys):
    from helpers.tiny_models import tiny_causal_lm_dir

    from basereward.config import BackboneConfig, ModelConfig
    from basereward.models.reward_model import HEAD_NAME, RewardModel

    cfg = ModelConfig(backbone=BackboneConfig(name="causal-lm", path=str(tiny_causal_lm_dir(tmp_path)),
                                              dtype="float32"))
    model_dir = RewardModel(cfg).save_pretrained(tmp_path / "model")
    pairs = _write(tmp_path / "p.jsonl", [_row(1)])
    score = ["score", "--model", str(model_dir), "--pairs", str(pairs), "--output", str(tmp_path / "s.jsonl")]
    head = model_dir / HEAD_NAME
    head.write_bytes(head.read_bytes()[:40])  # truncated
    assert main(score) == 2
    err = _errors(capsys)
    assert len(err) == 1 and f"{head}: not a readable safetensors file" in err[0]
    head.unlink()
    assert main(score) == 2
    assert _errors(capsys) == [f"error: {head}: missing (the model directory is incomplete)"]
    cfg_file = model_dir / "model_config.json"
    cfg_file.write_text(cfg_file.read_text()[:30])
    assert main(score) == 2
    err = _errors(capsys)
    assert len(err) == 1 and "model_config.json" in err[0] and "invalid JSON" in err[0]
