"""experiments/sweep.py: expansion, printed commands, validation before launch, launchers."""

import glob
import os
import shlex
import subprocess
import sys

import pytest
from absl import flags
from conftest import FAST_COMPILE_XLA_FLAGS
from ml_collections import config_flags

from experiments import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    os.path.relpath(p, ROOT)
    for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
    if not os.path.basename(p).startswith("_") and os.path.basename(p) != "common.py"
)
PAPER = ["cifar10_pixel", "cifar10_pca", "cifar10_fourier", "pcam_columns", "cifar10_haar_columns"]


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def parse_command(command: str, monkeypatch):
    """A printed `python -m gudjax.main ...` command parsed back as gudjax.main would."""
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "gudjax.main"], command
    flags_ = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv[3:]}
    assert set(flags_) >= {"--config", "--workdir"}, command
    for name in flags_:
        assert name in ("--config", "--workdir", "--mode") or name.startswith("--config."), name
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv)
    parse_argv = ["prog", *[a for a in argv[3:] if not a.startswith(("--workdir", "--mode"))]]
    monkeypatch.setattr("sys.argv", parse_argv)  # config_flags reads overrides from sys.argv
    fv(parse_argv)  # an unknown --config.x field or a bad value raises here
    return fv.config, flags_


def test_every_config_is_covered():
    assert {f"configs/{n}.py" for n in PAPER} <= set(CONFIGS)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("arg", ["", "runlocal"])
def test_print_launcher_prints_well_formed_commands(config, arg, capsys, monkeypatch):
    spec = config + (f":{arg}" if arg else "")
    extra = ["--set", "train.num_steps=7", "--set", "optim.lr=0.0005", "--set", "seed=3"]
    extra += ["--set", "model.ch_mult=(1, 2)", "--set", "data.random_flip=False"]
    assert sweep.main([spec, "--launcher=print", "--workdir_root=/tmp/wr", *extra]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    module = sweep.load_config_module(config)
    expected = len(sweep.sweep_points(module))
    assert len(lines) == expected
    workdirs = set()
    for line in lines:
        config_obj, flags_ = parse_command(line, monkeypatch)
        assert flags_["--config"].startswith(config)
        assert config_obj.train.num_steps == 7 and config_obj.optim.lr == 0.0005
        assert config_obj.seed == 3 and tuple(config_obj.model.ch_mult) == (1, 2)
        assert config_obj.data.random_flip is False
        if arg:
            assert "runlocal" in flags_["--config"] and config_obj.train.num_steps == 7
        workdirs.add(flags_["--workdir"])
        assert flags_["--workdir"].startswith("/tmp/wr/")
    assert len(workdirs) == len(lines)  # every run has its own workdir


def test_sweeps_expand_to_the_papers_runs():
    pca = sweep.expand("configs/cifar10_pca.py")
    assert [r.arg for r in pca] == ["whiten=0", "whiten=1"]
    assert [r.workdir for r in pca] == [
        "workdirs/cifar10_pca/whiten=0",
        "workdirs/cifar10_pca/whiten=1",
    ]
    pcam = sweep.expand("configs/pcam_columns.py:runlocal")
    assert [r.arg for r in pcam] == ["runlocal,b=0.3", "runlocal,b=0.5"]
    assert pcam[0].workdir == "workdirs/pcam_columns_runlocal/b=0.3"
    assert pcam[0].num_steps <= 1000
    one = sweep.expand("configs/cifar10_pixel.py")  # no sweep → one run
    assert len(one) == 1 and one[0].workdir == "workdirs/cifar10_pixel"
    assert one[0].num_steps == 300_000


def _write_config(tmp_path, body: str) -> str:
    path = tmp_path / "cfg.py"
    path.write_text(
        "from gudjax.config_base import base_config, parse_arg\n"
        "ARGS = {'runlocal': ('',), 'whiten': ('0', '1')}\n"
        "def get_config(arg=None):\n"
        "    parse_arg(arg, ARGS)\n"
        "    return base_config()\n" + body
    )
    return str(path)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("def sweep(add):\n    add(whiten=1)\n    add(**{'optim.lrr': 1e-3})\n", "'optim.lrr'"),
        ("def sweep(add):\n    add(seed=1)\n    add(wihten=1)\n", "'wihten'"),
        (
            "def sweep(add):\n    add(seed=1)\n    add(**{'train.num_steps': 'many'})\n",
            "'train.num_steps'",
        ),
        ("def sweep(add):\n    add(**{'train.num_steps.x': 1})\n", "'train.num_steps.x'"),
    ],
    ids=["unknown-field", "unknown-arg", "wrong-type", "not-a-group"],
)
def test_bad_sweep_point_fails_before_anything_launches(
    tmp_path, monkeypatch, capsys, body, needle
):
    path = _write_config(tmp_path, body)
    launched = []
    monkeypatch.setattr(sweep.subprocess, "run", lambda *a, **k: launched.append(a))
    rc = sweep.main([path, "--launcher=local", f"--workdir_root={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and launched == []  # the valid first point was not launched either
    assert len(err.splitlines()) == 1 and needle in err and "nothing was launched" in err, err


def test_unknown_set_field_and_missing_tpu_flags_are_one_line_errors(capsys):
    assert sweep.main(["configs/cifar10_pixel.py", "--set", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'optim.lrr'" in err and "optim.lr" in err
    assert sweep.main(["configs/cifar10_pixel.py", "--launcher=tpu-pod"]) == 2
    assert "--tpu" in capsys.readouterr().err
    assert sweep.main(["configs/nope.py"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_local_launcher_skips_finished_runs_and_runs_the_rest(tmp_path, monkeypatch, capsys):
    runs = sweep.expand("configs/cifar10_pca.py:runlocal", workdir_root=str(tmp_path))
    done = runs[0]
    os.makedirs(os.path.join(done.workdir, "checkpoints", str(done.num_steps), "state"))
    # An uncommitted save of the final step does not count as finished.
    os.makedirs(
        os.path.join(
            runs[1].workdir, "checkpoints", f"{runs[1].num_steps}.orbax-checkpoint-tmp-1", "state"
        )
    )
    calls = []

    def fake_run(argv, cwd=None):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(sweep.subprocess, "run", fake_run)
    rc = sweep.main(
        ["configs/cifar10_pca.py:runlocal", "--launcher=local", f"--workdir_root={tmp_path}"]
    )
    out = capsys.readouterr().out
    assert rc == 0 and len(calls) == 1
    assert calls[0][0] == sys.executable and f"--workdir={runs[1].workdir}" in calls[0]
    assert "[1/2] whiten=0: skipped, finished" in out and "[2/2] whiten=1:" in out

    # A failing run stops the sweep with its exit code.
    monkeypatch.setattr(
        sweep.subprocess, "run", lambda argv, cwd=None: subprocess.CompletedProcess(argv, 3)
    )
    assert (
        sweep.main(
            ["configs/cifar10_pca.py:runlocal", "--launcher=local", f"--workdir_root={tmp_path}"]
        )
        == 3
    )
    assert "failed (exit 3)" in capsys.readouterr().err

    # --dry_run runs nothing.
    monkeypatch.setattr(sweep.subprocess, "run", lambda *a, **k: pytest.fail("ran"))
    assert (
        sweep.main(
            [
                "configs/cifar10_pca.py:runlocal",
                "--launcher=local",
                "--dry_run",
                f"--workdir_root={tmp_path}",
            ]
        )
        == 0
    )


def test_tpu_pod_launcher_prints_setup_and_all_worker_commands(capsys, monkeypatch):
    rc = sweep.main(
        [
            "configs/pcam_columns.py",
            "--launcher=tpu-pod",
            "--tpu=my-pod",
            "--zone=us-central2-b",
            "--project=proj",
            "--workdir_root=/mnt/shared/wd",
            "--mode=train",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    cmds = [shlex.split(line) for line in out.splitlines() if not line.startswith("#")]
    ssh = [c for c in cmds if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]]
    assert len(ssh) == 1 + 2  # setup + one per b
    for c in ssh:
        assert c[5] == "my-pod" and "--worker=all" in c and "--zone=us-central2-b" in c
        assert "--project=proj" in c
    remote = [c[c.index("--command") + 1] for c in ssh]
    assert "experiments/tpu/setup.sh" in remote[0]
    for r, b in zip(remote[1:], ("0.3", "0.5"), strict=True):
        inner = shlex.split(r.split("&&", 1)[1])
        assert inner[:3] == [".venv/bin/python", "-m", "gudjax.main"]
        assert f"--config=configs/pcam_columns.py:b={b}" in inner
        assert f"--workdir=/mnt/shared/wd/pcam_columns/b={b}" in inner
    assert any(c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] for c in cmds)
    # With a repository the hosts clone it instead of receiving a tarball.
    sweep.main(
        [
            "configs/cifar10_pixel.py",
            "--launcher=tpu-pod",
            "--tpu=p",
            "--zone=z",
            "--repo=https://example.org/gudjax.git",
            "--ref=abc123",
        ]
    )
    out = capsys.readouterr().out
    assert "git clone https://example.org/gudjax.git" in out and "scp" not in out


def test_tpu_setup_script_is_valid_bash_and_installs_requirements():
    path = os.path.join(ROOT, "experiments", "tpu", "setup.sh")
    subprocess.run(["bash", "-n", path], check=True)
    text = open(path).read()
    assert "requirements.txt" in text and "jax[tpu]" in text and "jax[cuda" in text


@pytest.mark.slow
def test_local_sweep_end_to_end(tmp_path):
    """A runlocal config through the CLI for a few steps; the second call skips it."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "GUDJAX_DATA_DIR": str(tmp_path / "data")}
    env["XLA_FLAGS"] = FAST_COMPILE_XLA_FLAGS  # one device
    cmd = [
        sys.executable,
        "-m",
        "experiments.sweep",
        "configs/cifar10_pixel.py:runlocal",
        "--launcher=local",
        f"--workdir_root={tmp_path}",
        "--set",
        "train.num_steps=3",
        "--set",
        "train.checkpoint_every=3",
        "--set",
        "sample.num=2",
        "--set",
        "sample.steps=2",
        "--set",
        "train.progress=False",
        # a smaller network than runlocal's: the launcher is under test, not the U-Net
        "--set",
        "model.ch=8",
        "--set",
        "model.token_dim=8",
        "--set",
        "batch_size=8",
    ]
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    workdir = tmp_path / "cifar10_pixel_runlocal"
    assert sweep.finished_step(str(workdir)) == 3
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "skipped, finished" in second.stdout
