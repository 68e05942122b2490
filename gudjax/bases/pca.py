"""PCA basis: U = eigenvectors of the training-data covariance.

Rows of U are sorted by DESCENDING variance (component 0 = largest eigenvalue; `eigh`
returns ascending order, so we reverse). Signs are fixed deterministically: the entry
of largest magnitude of every eigenvector is made positive. The eigendecomposition is
done in float64 on the host, then stored as float32.

Groups (conditioning tokens): octave bands of the component index, group g holds
indices [2^g − 1, 2^(g+1) − 1), i.e. 1, 2, 4, 8, ... components per token.
"""

import numpy as np

from gudjax.bases.core import BasisSpec, register_basis


def sorted_eigh(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors as ROWS, with deterministic signs."""
    evals, evecs = np.linalg.eigh(np.asarray(cov, np.float64))
    order = np.argsort(evals)[::-1]
    evals = evals[order]
    rows = evecs[:, order].T
    pivot = np.argmax(np.abs(rows), axis=1)
    signs = np.sign(rows[np.arange(rows.shape[0]), pivot])
    signs[signs == 0] = 1.0
    return evals, rows * signs[:, None]


@register_basis("pca")
class PCABasis(BasisSpec):
    needs_covariance = True

    @classmethod
    def arrays_from_covariance(cls, cov, shape, options):
        evals, rows = sorted_eigh(cov)
        return {"U": rows.astype(np.float32)}, evals

    @classmethod
    def forward(cls, arrays, x, shape, options):
        flat = x.reshape(*x.shape[:-3], -1)
        return flat @ arrays["U"].T

    @classmethod
    def inverse(cls, arrays, c, shape, options):
        return (c @ arrays["U"]).reshape(*c.shape[:-1], *shape)

    @classmethod
    def groups(cls, shape, options, variance):
        d = int(np.prod(shape))
        return np.floor(np.log2(np.arange(d) + 1.0)).astype(np.int32)
