"""Every configs/*.py loads (with and without runlocal) and command-line overrides apply."""

import glob
import os
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from gudjax import input_pipeline, schedules
from gudjax.config_base import load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
CONFIGS = [  # configs/common.py holds the shared presets, not a config
    c
    for c in CONFIGS
    if not os.path.basename(c).startswith("_") and os.path.basename(c) != "common.py"
]


def test_there_are_configs():
    names = {os.path.basename(c) for c in CONFIGS}
    assert {"digits_haar.py", "digits_pca.py"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_config_loads_and_is_consistent(path, arg):
    c = load_config_file(path, arg)
    assert c.schedule.name in schedules.registered_schedules()
    for name, (lo, hi) in dict(c.family).items():
        assert name in schedules.family_params(c.schedule.name)
        assert lo <= hi
    assert input_pipeline.image_shape(c.data)[0] == c.data.image_size
    if arg == "runlocal":
        assert c.train.num_steps <= 1000


def test_command_line_overrides_apply(monkeypatch):
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv)
    argv = [
        "prog",
        f"--config={os.path.join(ROOT, 'configs', 'digits_pca.py')}:runlocal,whiten=1",
        "--config.optim.lr=0.01",
        "--config.sample.a=1.25",
        "--config.model.ch=16",
    ]
    monkeypatch.setattr("sys.argv", argv)  # config_flags reads the overrides from sys.argv
    fv(argv)
    c = fv.config
    assert c.basis.whiten is True and c.basis.name == "pca"
    assert c.optim.lr == 0.01 and c.sample.a == 1.25 and c.model.ch == 16
    assert c.train.num_steps <= 1000


def test_missing_config_file_is_one_line_error():
    with pytest.raises(ValueError, match="does not exist"):
        load_config_file("configs/nope.py")


def test_loading_a_config_imports_neither_tfds_grain_nor_flax():
    """A config file is plain data: loading one (from another working directory, so the
    presets in configs/common.py are found by path) pulls in no data or network library."""
    code = (
        "import sys\n"
        "from gudjax.config_base import load_config_file\n"
        f"c = load_config_file({os.path.join(ROOT, 'configs', 'digits_haar.py')!r}, 'runlocal')\n"
        "assert c.data.name == 'digits' and c.model.ch == 32, c\n"
        "heavy = [m for m in ('tensorflow_datasets', 'grain', 'flax') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=os.path.dirname(ROOT), env=env, capture_output=True,
        text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
