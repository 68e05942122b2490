"""docs/tutorial.ipynb runs top to bottom in a fresh kernel, and is committed without outputs."""

import json
import os
import pathlib
import sys
import time

import ipykernel  # noqa: F401  (the kernel the notebook runs in; test-only requirement)
import nbclient
import nbformat
import pytest
from conftest import FAST_COMPILE_XLA_FLAGS

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


def test_tutorial_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the tutorial has no code cells"
    for i, cell in enumerate(code):
        assert not cell.get("outputs") and cell.get("execution_count") is None, (
            f"code cell {i} of {NOTEBOOK.name} has outputs; strip them before committing"
        )


@pytest.mark.slow(weight=20)  # about 3 minutes, the longest single test: start it early
@pytest.mark.timeout(2400)  # hang guard only: a shared, loaded CPU can be slow
def test_tutorial_runs(tmp_path, monkeypatch):
    """Every cell runs without error in a fresh kernel of this interpreter, on CPU with one
    device, in a temp working directory with its own data directory."""
    # a kernelspec for this interpreter (the .venv), whatever `python3` names elsewhere
    spec_dir = tmp_path / "jupyter" / "kernels" / "gudjax-tutorial"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "gudjax tutorial",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        # one CPU device, what a laptop user gets; compiled like the other subprocesses
        "XLA_FLAGS": FAST_COMPILE_XLA_FLAGS,
        "GUDJAX_DATA_DIR": str(tmp_path / "data"),
        "TMPDIR": str(work),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=900,  # seconds per cell (wall clock; about 3 CPU-minutes in all when idle)
        kernel_name="gudjax-tutorial",
        resources={"metadata": {"path": str(work)}},
    )
    t0 = time.time()
    client.execute(env=env)  # raises CellExecutionError on the first failing cell
    for cell in nb.cells:  # the printed numbers (shown with pytest -s)
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                print(out["text"], end="")
    print(f"tutorial ran in {time.time() - t0:.0f} s")
