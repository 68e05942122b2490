"""End points of a config's schedule on its fitted basis, before training (docs/maths.md §3.6).

    python -m experiments.endpoints [CONFIG[:ARG] ...] [--json PATH]

For every config (default: every experiment config, at its `runlocal` argument where it has one,
which is the offline stand-in data for the CIFAR-10/PCAM configs): fit the basis on the train
split (as training does), build the schedule, and report over the default member and every
corner of `config.family`: the worst σ_i²(1), the prior term in bits/dim (L = 256) and the
smallest true log-SNR at t = 0; next to the same numbers for the window-only end points
(γ_end ≤ γ̃_noise: targets set on γ̃ alone, the definition before end points were introduced).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile

from gudjax import experiment, schedules
from gudjax.config_base import load_config_file


def report(config_path: str) -> dict:
    path, _, arg = config_path.partition(":")
    config = load_config_file(path, arg or None)
    with tempfile.TemporaryDirectory() as tmp:
        basis = experiment.fit_or_load_basis(config, tmp)
    family = dict(config.get("family", {}))
    out = {"config": config_path, "basis": basis.kind, "whiten": bool(basis.whiten),
           "schedule": config.schedule.name}
    cfg = dict(config.schedule)
    for tag, extra in (("now", {}), ("window_only", {"gamma_end": -100.0})):
        name = cfg["name"]
        if extra and "gamma_end" not in schedules.get_family(name).options:
            out[tag] = None  # a process-level family: not defined by windows
            continue
        options = {k: v for k, v in cfg.items() if k != "name"} | extra
        sched = schedules.make_schedule(name, basis, **options)
        reps = [schedules.endpoint_report(sched, p)
                for p in schedules.family_corners(sched, family)]
        out[tag] = {
            "worst_sigma2_at_1": min(r["worst_sigma2_at_1"] for r in reps),
            "num_below": max(r["num_below"] for r in reps),
            "prior_bpd": max(r["prior_bpd"] for r in reps),
            "min_log_snr_at_0": min(r["min_log_snr_at_0"] for r in reps),
        }
    return out


def default_configs() -> list[str]:
    here = os.path.join(os.path.dirname(__file__), "..", "configs")
    out = []
    for p in sorted(glob.glob(os.path.join(here, "*.py"))):
        name = os.path.basename(p)
        if name in ("__init__.py", "common.py"):
            continue
        rel = os.path.relpath(p)
        out.append(f"{rel}:runlocal" if "runlocal" in open(p).read() else rel)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="*")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    rows = [report(c) for c in (args.configs or default_configs())]
    print(f"{'config':44s} {'basis':14s} {'worst σ²(1) now':>15s} {'prior bpd':>9s} "
          f"{'logSNR(0)':>9s} | {'window-only σ²(1)':>17s} {'below 0.9':>9s}")
    for r in rows:
        now, old = r["now"], r["window_only"]
        basis = f"{r['basis']}{'' if r['whiten'] else ' white'}"
        old_s = (f"{old['worst_sigma2_at_1']:17.2e} {old['num_below']:9d}" if old
                 else f"{'(process-level)':>17s} {'':9s}")
        print(f"{r['config']:44s} {basis:14s} {now['worst_sigma2_at_1']:15.4f} "
              f"{now['prior_bpd']:9.4f} {now['min_log_snr_at_0']:9.2f} | {old_s}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
