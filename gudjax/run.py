"""The three modes behind `gudjax.main`: train, sample, eval."""

from __future__ import annotations

import logging
import os

import jax
import numpy as np

from gudjax import plotting
from gudjax import train as training
from gudjax.checkpointing import CheckpointError

log = logging.getLogger("gudjax")

USER_ERRORS = (ValueError, training.TrainingError, CheckpointError)


def train(config, workdir: str) -> dict:
    result = training.train_and_evaluate(config, workdir)
    files = {}
    if jax.process_index() == 0:
        files = training.report_files(config, workdir, result)
        log.info("step %d, final loss %.4f", result["step"], result["loss"] or float("nan"))
        for k, v in files.items():
            log.info("%-10s %s", k, v)
    return {**result, "files": files}



def load_trained(config, workdir: str):
    """(basis, schedule, graphdef, restored state, step) of a trained workdir."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir) or not os.listdir(ckpt_dir):
        raise CheckpointError(
            f"no checkpoint in {workdir}; train first with --mode=train --workdir={workdir}"
        )
    training.check_config_change(config, workdir)
    mesh, basis, schedule, graphdef, _, state, ckpt, _ = training.build(config, workdir)
    try:
        restored = training.restore_state(ckpt, state, mesh)
    finally:
        ckpt.close()
    if restored is None:
        raise CheckpointError(
            f"no checkpoint in {workdir}; train first with --mode=train --workdir={workdir}"
        )
    step, state, _ = restored
    return basis, schedule, graphdef, state, step


def sample(config, workdir: str) -> dict:
    """EMA parameters → samples of the configured family member: PNG grid + .npz."""
    basis, schedule, graphdef, state, step = load_trained(config, workdir)
    fam = training.family_member(config)
    sample_cfg = config.sample
    images = training.generate(
        graphdef, state["ema_params"], basis, schedule, fam, num=int(sample_cfg.num),
        rng=jax.random.PRNGKey(int(sample_cfg.get("seed", 0))), solver=sample_cfg.solver,
        num_steps=int(sample_cfg.steps),
    )
    tag = "_".join(f"{k}{v:.3g}" for k, v in sorted(fam.items())) or "default"
    stem = os.path.join(workdir, f"sample_{sample_cfg.solver}{sample_cfg.steps}_{tag}_step{step}")
    np.savez_compressed(stem + ".npz", images=images, family=fam, step=step)
    plotting.save_image_grid(images, stem + ".png")
    log.info("wrote %s.png and %s.npz", stem, stem)
    return {"images": images, "png": stem + ".png", "npz": stem + ".npz"}


def evaluate(config, workdir: str) -> dict:
    raise ValueError(
        "--mode=eval (NLL in bits/dim, Fréchet distance, family sweeps) is not implemented yet; "
        "use --mode=sample, or experiments/oracle_check.py for the likelihood code on Gaussian data"
    )
