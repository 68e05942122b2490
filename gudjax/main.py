"""Entry point: python -m gudjax.main --config=configs/<exp>.py[:arg] --workdir=DIR [--mode=...].

Flags are only --config, --workdir and --mode; everything else is --config.a.b=v.
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
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, samples, metrics. Resumes if it holds a run.")
flags.DEFINE_enum("mode", "train", ["train", "sample", "eval"], "What to do.")
flags.mark_flags_as_required(["config", "workdir"])


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("absl", "orbax", "jax._src", "tensorflow_datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv) -> int:
    del argv
    _setup_logging()
    from gudjax import run

    config, workdir = FLAGS.config, os.path.abspath(FLAGS.workdir)
    try:
        if FLAGS.mode == "train":
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
    app.run(lambda argv: sys.exit(main(argv)))
