"""End to end through the command line: train → resume → sample, and one-line errors."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--config.model.ch=8", "--config.model.num_res_blocks=1", "--config.model.token_dim=16",
    "--config.model.num_heads=2", "--config.batch_size=16", "--config.train.log_every=2",
    "--config.train.checkpoint_every=4", "--config.sample.num=4", "--config.sample.steps=5",
]


def run_main(*args, data_dir, timeout=600):
    env = dict(os.environ, GUDJAX_DATA_DIR=str(data_dir), JAX_PLATFORMS="cpu")
    env.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    return subprocess.run(
        [sys.executable, "-m", "gudjax.main", *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=timeout,
    )


@pytest.mark.slow
def test_train_resume_sample_through_cli(tmp_path):
    wd = tmp_path / "run"
    cfg = "--config=configs/digits_haar.py:runlocal"
    r = run_main(cfg, f"--workdir={wd}", "--config.train.num_steps=4", *TINY, data_dir=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "process 0/1" in r.stderr and "8 local / 8 global devices" in r.stderr
    for name in ("config.json", "basis.npz", "metrics.jsonl", "samples.png", "loss.png",
                 "gamma.png"):
        assert (wd / name).exists(), name
    assert (wd / "tb").is_dir()
    # the same command with more steps resumes at 4
    r = run_main(cfg, f"--workdir={wd}", "--config.train.num_steps=8", *TINY, data_dir=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from checkpoint at step 4" in r.stderr
    assert sorted(os.listdir(wd / "checkpoints"))[-1] == "8"
    r = run_main(cfg, f"--workdir={wd}", "--mode=sample", "--config.sample.a=0.5",
                 "--config.train.num_steps=8", *TINY, data_dir=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    # the digits configs' default sampler: the full-covariance one, moments stored once
    stem = "sample_dpmpp_2m_cov5_a0.5_step8"
    pngs = [f for f in os.listdir(wd) if f.startswith(stem)]
    assert sorted(pngs) == [f"{stem}.npz", f"{stem}.png"]
    assert (wd / "data_moments.npz").exists()


def test_sample_without_checkpoint_is_one_line_error(tmp_path):
    r = run_main("--config=configs/digits_haar.py:runlocal", f"--workdir={tmp_path / 'empty'}",
                 "--mode=sample", data_dir=tmp_path, timeout=300)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("error: no checkpoint in") and "--mode=train" in err
