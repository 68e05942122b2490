"""Entry point: python -m gudjax.main --config=configs/<exp>.py[:arg] --workdir=DIR [--mode=...].

Flags are only --config, --workdir and --mode; everything else is --config.a.b=v.
A multi-process (multi-host) training run adds --coordinator_address, --num_processes and
--process_id (or the JAX_* environment variables; see docs/operations.md): where the
processes are is not part of the experiment, so it is not in the config.
Errors a user can cause are reported as one line (no traceback) with exit code 2.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).")
flags.DEFINE_string(
    "workdir", None, "Run directory: checkpoints, samples, metrics. Resumes if it holds a run."
)
flags.DEFINE_enum("mode", "train", ["train", "sample", "eval"], "What to do.")
flags.DEFINE_string(
    "coordinator_address",
    None,
    "Multi-process training: HOST:PORT of process 0 (default $JAX_COORDINATOR_ADDRESS).",
)
flags.DEFINE_integer(
    "num_processes",
    None,
    "Multi-process training: process count (default $JAX_NUM_PROCESSES; 1 = one process).",
)
flags.DEFINE_integer(
    "process_id",
    None,
    "Multi-process training: this process' id in [0, num_processes) (default $JAX_PROCESS_ID).",
)
flags.mark_flags_as_required(["config", "workdir"])


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, but a bad flag or --config.a.b=v override is one line, exit 2.

    (absl prints two lines and exits 1; ml_collections raises a traceback for an unknown
    config field.)
    """
    try:
        args = FLAGS(argv)
        if FLAGS["config"].present:
            FLAGS.config.get("seed")  # ml_collections defers a config file's load error to here
        return args
    except OSError as e:  # the --config file cannot be loaded
        reason = str(e).strip().splitlines()[-1].strip()
        problem = f"--config: cannot load the config file ({reason})"
    except flags.Error as e:
        problem = str(e)
    except (AttributeError, KeyError) as e:  # ml_collections: no such config field
        while e.args and isinstance(e.args[0], BaseException):
            e = e.args[0]
        text = str(e.args[0]) if e.args else str(e)
        key = text.splitlines()[0].strip("'\"") if text else "?"
        override = next(
            (
                a.split("=")[0]
                for a in argv[1:]
                if a.startswith("--config.") and key in a.split("=")[0].split(".")
            ),
            f"config field {key!r}",
        )
        problem = f"{override}: no such config field ({' '.join(text.split())})"
    problem = " ".join(problem.split()).rstrip(".")
    print(
        f"error: {problem}; flags: --helpshort, config fields and their types: the --config file",
        file=sys.stderr,
    )
    sys.exit(2)


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("absl", "orbax", "jax._src", "tensorflow_datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv) -> int:
    del argv
    _setup_logging()
    from gudjax import run

    if FLAGS.mode != "train" and (FLAGS.num_processes or 1) > 1:
        print(
            f"error: --num_processes={FLAGS.num_processes}: only --mode=train runs as several "
            f"processes; run --mode={FLAGS.mode} as one process",
            file=sys.stderr,
        )
        return 2
    config, workdir = FLAGS.config, os.path.abspath(FLAGS.workdir)
    try:
        if FLAGS.mode == "train":
            from gudjax.distributed import maybe_initialize_distributed

            maybe_initialize_distributed(
                FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
            )
            run.train(config, workdir)
        elif FLAGS.mode == "sample":
            run.sample(config, workdir)
        else:
            run.evaluate(config, workdir)
    except run.USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=_parse_flags)
