"""Tests run JAX on CPU with 8 fake devices so the data-parallel code is exercised."""

import os

#: Compiling without LLVM's backend optimisations nearly halves the compile time of a U-Net
#: (a 4-step run through the CLI: 50 s → 30 s; the quick AR study, in-process: 150 s → 118 s),
#: and the suite is mostly compilation. It applies to the test processes and to every
#: process they start (the CLI, the reliability, sweep and multi-host runs, the tutorial's
#: kernel). The few numeric-heavy loops (the oracle check's n samples × hundreds of steps)
#: ask for full optimisation themselves (`jax.jit(..., compiler_options=...)`).
FAST_COMPILE_XLA_FLAGS = "--xla_backend_optimization_level=0"
_flags = os.environ.get("XLA_FLAGS") or "--xla_force_host_platform_device_count=8"
if FAST_COMPILE_XLA_FLAGS not in _flags:
    _flags += " " + FAST_COMPILE_XLA_FLAGS
os.environ["XLA_FLAGS"] = _flags  # before JAX starts its backend
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import contextlib  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402

# Identical programs compiled by several tests (same tiny model, fresh jit objects) are
# compiled once per test run through JAX's persistent compilation cache. The directory goes
# into the environment, so the pytest-xdist workers and every `python -m gudjax.main`
# subprocess the tests start (CLI, reliability, sweep, multi-host) share it.
_CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="gudjax-jax-cache-")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_collection_modifyitems(config, items):
    """Files with the most slow weight run first (each slow test weighs 1, or its marker's
    `weight=`; a stable sort keeps each file's tests together): with `-n 2 --dist loadfile`
    the long files start early, instead of one of them running alone at the end while the
    other worker idles."""
    weight: dict = {}
    for item in items:
        mark = item.get_closest_marker("slow")
        w = 0 if mark is None else mark.kwargs.get("weight", 1)
        weight[item.path] = weight.get(item.path, 0) + w
    items.sort(key=lambda item: -weight[item.path])


@contextlib.contextmanager
def count_compiles(name: str):
    """Counts XLA compilations of jitted functions called `name` inside the block."""
    seen = []

    class Handler(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            if msg.startswith(f"Compiling jit({name})") or msg.startswith(f"Compiling {name}"):
                seen.append(msg)

    handler = Handler(level=logging.DEBUG)
    logger = logging.getLogger("jax._src.interpreters.pxla")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    with jax.log_compiles(True):
        try:
            yield seen
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
