"""Component-wise noise schedules γ(t, params) ∈ R^D, one module per family group, registered
by name (docs/maths.md §3).

Adding a family: a frozen dataclass subclass of `Schedule` decorated with
`@register_schedule("myfamily")` (define `param_names`, `options`, `build` and `_gamma`;
optionally `kinks` and `example`), in a module imported below. The tests and the oracle table
run `example()` of every registered family, so the new family is tested by registering it.
"""

from gudjax.schedules import autoregressive, linear, scalar  # noqa: F401  (registration)
from gudjax.schedules.autoregressive import label_blocks  # noqa: F401
from gudjax.schedules.core import (  # noqa: F401
    GAMMA_DEN,
    GAMMA_END,
    GAMMA_NOISE,
    MIN_TERMINAL_SIGMA2,
    VDM_GAMMA_MAX,
    VDM_GAMMA_MIN,
    Schedule,
    check_endpoints,
    endpoint_report,
    family_corners,
    family_params,
    get_family,
    is_standard_diffusion,
    make_schedule,
    prior_kl,
    register_schedule,
    registered_schedules,
    schedule_from_config,
)
from gudjax.schedules.linear import (  # noqa: F401
    TAIL,
    LinearSchedule,
    Windows,
    a_to_b,
    b_to_a,
    normalise_labels,
)
