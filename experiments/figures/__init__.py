"""Figure scripts of the paper (docs/maths.md §9), one module per figure.

    python -m experiments.figures.gamma_snr_pca --out DIR [--data digits|cifar10] [--num 8]
    python -m experiments.figures.forward_processes --out DIR [--data ...] [--num 6]
    python -m experiments.figures.snr_paths --out DIR [--data ...] [--num 3]
    python -m experiments.figures.family_results --out DIR EVAL_JSON [EVAL_JSON ...]

Each writes <name>.png and <name>.pdf into --out and prints their paths. The maths figures
use gudjax's own bases, schedules and forward process on real data: the offline digits
(8×8) by default, or CIFAR-10 once prepared with
`tfds build cifar10 --file_format=array_record --data_dir=DIR` (never downloaded).
"""
