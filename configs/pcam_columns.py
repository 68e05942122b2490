"""GUD §5.2 on PCAM (PatchCamelyon histology patches, 96×96 area-averaged 3×3 to 32×32):
pixel basis, white prior, column-sequential soft conditioning with offset fraction b,
one network per b ∈ {0.3, 0.5}; image extension to the right in the sample settings.

Schedule (`column`, docs/maths.md §3): labels l = column index normalised to [0, 1] (left
column = generated FIRST), effective labels e = c(b)·l with c(b) = b·W/(1 − b), clipped:
inside the generation phase [0, t*] every column's window has length (1 − b)·t*, column j
starting at b·(1 − j/31)·t*. With the white prior, low-variance pixels need more noise than
γ̃_noise to reach N(0, I): the schedule is slowed uniformly (t* < 1) until every pixel ends
at σ²(1) ≥ sigmoid(5) (the end points of docs/maths.md §3). b → 0: all pixels share one SNR
(diffusion-like; with the white prior not exactly standard diffusion, since pixel variances
differ); b → 1: autoregression.

Commands (`python -m experiments.sweep configs/pcam_columns.py` launches both b):
    python -m gudjax.main --config=configs/pcam_columns.py:b=0.3 \\
        --workdir=workdirs/pcam_columns/b=0.3
    python -m gudjax.main --config=configs/pcam_columns.py:b=0.5 \\
        --workdir=workdirs/pcam_columns/b=0.5
    python -m gudjax.main --config=configs/pcam_columns.py:b=0.5 \\
        --workdir=workdirs/pcam_columns/b=0.5 --mode=eval     # NLL (bits/dim), whole test split
    python -m gudjax.main --config=configs/pcam_columns.py:b=0.5 \\
        --workdir=workdirs/pcam_columns/b=0.5 --mode=sample   # extension to 64 columns
    python -m gudjax.main --config=configs/pcam_columns.py:runlocal --workdir=/tmp/rl_pcam_columns
Add --config.sample.extend_from=test to extend real test patches instead of generated ones.
Unconditional samples: samples.png, written at the end of training.

Data: patch_camelyon prepared once as TFDS ArrayRecord (see gudjax/input_pipeline.py).
`runlocal` trains on the OFFLINE STAND-IN photo_patches (scikit-image photo tiles), NOT on
PCAM.

Expected cost, per b: 300k steps at batch 128 of the default U-Net (10.4M parameters, 1.07 TFLOP per
step, 3.2e17 FLOP in all): roughly 1.5–3 h at 30–60 TFLOP/s sustained on one accelerator
(an estimate, not measured).
runlocal: 500 steps, about 10 min end to end on 2 shared CPU cores (experiments/README.md).
Expected result (paper): NLL 3.90 bits/dim (b = 0.3) and 3.94 bits/dim (b = 0.5); extended
images continue the tissue texture to the right.
"""

import ml_collections

from gudjax.config_base import arg_float, base_config, import_sibling, parse_arg

common = import_sibling(__file__, "common")

ARGS = {"runlocal": ("",), "b": ("0.3", "0.5")}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, ARGS)
    runlocal = "runlocal" in args
    b = arg_float(args, "b", 0.3)
    if not 0.0 <= b < 1.0:
        raise ValueError(f"config argument b={b} must lie in [0, 1) (0.3 and 0.5 in the paper)")
    c = base_config()
    # runlocal: 500 steps; at 200 the white-prior pixel samples still carry speckle.
    common.cifar_defaults(c, dataset="patch_camelyon", runlocal=runlocal, runlocal_steps=500)
    c.basis = ml_collections.ConfigDict(dict(name="pixel", whiten=False))
    c.schedule = ml_collections.ConfigDict(dict(name="column", b=b, clip=True))
    c.family = ml_collections.ConfigDict()  # one network per b
    # --mode=sample: extension to the right, `extend_columns` new columns per window.
    c.sample.extend_columns = 8
    c.sample.extend_width = 64
    if not runlocal:
        c.eval.fd_num_samples = 5000
        c.eval.fd_num_reference = 10_000
    return c


def sweep(add):
    """One network per offset fraction b (the paper's two PCAM numbers)."""
    for b in (0.3, 0.5):
        add(b=b)
