"""Column-sequential generation on scikit-learn's 8×8 digits: pixel basis, WHITE prior, the
`column` schedule (the digits-sized analogue of the paper's PCAM experiment, §5.2).

Schedule (`column`, docs/maths.md §3): labels = column index normalised to [0, 1] (left
column = generated FIRST), e = c(b)·colpos with c(b) = b·W/(1 − b), clipped. With the white
prior the digits' border pixels have variance ≈ 5e-6 (ρ ≈ −12): the end points make every
pixel reach σ²(1) ≥ sigmoid(5) at t = 1 by slowing the whole schedule uniformly (the order
and relative timing of the columns are unchanged), so sampling from N(0, I) is sampling from
the terminal marginal. `python -m gudjax.main ... --mode=train` logs the worst σ²(1).

Arguments: `b=<float in [0, 1)>` (default 0.5): one network at that offset fraction;
`family=1`: one network over b ∈ [0, 0.5] instead (sample/evaluate members with
--config.sample.b=... or --config.eval.sweep="b=0,0.3,0.5"); `runlocal`.

Commands:
    python -m gudjax.main --config=configs/digits_columns.py:b=0.5 --workdir=workdirs/dcol_b0.5
    python -m gudjax.main --config=configs/digits_columns.py:b=0.5 --workdir=workdirs/dcol_b0.5 \\
        --mode=sample --config.sample.inpaint=left:4      # column completion from test digits
    python -m gudjax.main --config=configs/digits_columns.py:b=0.5 --workdir=workdirs/dcol_b0.5 \\
        --mode=sample --config.sample.extend_columns=2    # extension to 16 columns
    python -m gudjax.main --config=configs/digits_columns.py:runlocal --workdir=/tmp/dcol
Expected cost: like `make demo` (3000 steps, ~8–10 min on 2 CPU cores); runlocal ~1 min.
Expected result: samples that read as digits, at b = 0.5 as at b = 0 (see experiments/README.md
for the measured FD and NLL).
"""

import ml_collections

from gudjax.config_base import arg_bool, arg_float, base_config, import_sibling, parse_arg

common = import_sibling(__file__, "common")

ARGS = {"runlocal": ("",), "b": ("0", "0.3", "0.5"), "family": ("0", "1")}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, ARGS)
    b = arg_float(args, "b", 0.5)
    if not 0.0 <= b < 1.0:
        raise ValueError(f"config argument b={b} must lie in [0, 1)")
    c = base_config()
    common.digits_defaults(c, runlocal="runlocal" in args)
    c.basis = ml_collections.ConfigDict(dict(name="pixel", whiten=False))
    c.schedule = ml_collections.ConfigDict(dict(name="column", b=b, clip=True))
    c.family = ml_collections.ConfigDict(
        dict(b=(0.0, 0.5)) if arg_bool(args, "family") else {}
    )
    c.sample.b = ml_collections.config_dict.placeholder(float)
    # The digits default sampler (dpmpp_2m_cov) needs 20 calls on this schedule: on the
    # 3000-step b = 0.5 model its FD is 23.7 at 20 calls but 162 at 10 (experiments/BENCHMARKS.md).
    c.sample.steps = 20
    # --mode=sample with extend_columns: slide the 8-column window 2 columns at a time to 16.
    c.sample.extend_width = 16
    return c


def sweep(add):
    """One network per offset fraction b."""
    for b in (0.0, 0.3, 0.5):
        add(b=b)
