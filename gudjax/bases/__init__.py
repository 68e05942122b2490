"""Bases in which GUD adds noise. One module per basis, each registered by name.

Adding a basis: write `gudjax/bases/mybasis.py` with a `BasisSpec` subclass decorated by
`@register_basis("mybasis")`, and import it below. The tests parameterise over
`registered_bases()`, so the new basis is tested by registering it.
"""

from gudjax.bases import dct, fourier, haar, pca, pixel  # noqa: F401  (registration)
from gudjax.bases.core import (  # noqa: F401
    LABEL_NAMES,
    MIN_VARIANCE,
    Basis,
    BasisSpec,
    check_image_shape,
    dequantization_variance,
    fit_basis,
    get_spec,
    load_basis,
    make_basis,
    register_basis,
    registered_bases,
    save_basis,
)
