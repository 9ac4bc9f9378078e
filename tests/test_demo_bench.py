"""The README's main job (the demo) end to end, shortened, and the bench command."""

from __future__ import annotations

import json

import pytest

from hellolondon.cli import main


def test_bench_prints_the_step_time_as_json(capsys):
    argv = ["bench", "--preset", "tiny", "--device", "cpu", "--steps", "2", "--warmup", "1",
            "--batch-size", "2", "--block-size", "16", "--vocab-size", "256", "--json"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ms_per_iter"] > 0 and result["tokens_per_sec"] > 0
    assert result["dtype"] == "float32" and result["mfu_percent"] is None  # no CPU peak


@pytest.mark.slow
def test_demo_runs_every_stage_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)  # offline: never the user's account
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    argv = ["demo", "--vocab-size", "1024", "--wandb-mode", "offline",
            "train.max_iters=20", "train.eval_interval=10", "train.ckpt_interval=10"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    for stage in ("1/5 corpus", "2/5 tokenizer", "3/5 prepare", "4/5 train", "5/5 generate"):
        assert stage in out
    assert "Model parameters:" in out and "num decayed parameter tensors:" in out
    assert "wandb sync" in out  # offline without a key, with the command to upload later
    run = next((tmp_path / "runs").iterdir())
    assert run.name.startswith("london-tiny-demo-")
    assert (run / "report" / "report.html").is_file() and (run / "report" / "report.png").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_val_loss"] < summary["first_val_loss"]
    assert out.rstrip().splitlines()[-1].strip().startswith("hellolondon train --preset slm")
