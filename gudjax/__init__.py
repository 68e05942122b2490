"""gudjax: Generation with Unified Diffusion (GUD) in JAX/Flax.

Maths modules (no Flax): `bases`, `schedules`, `process`, `sampling`, `likelihood`,
`oracle`. Network in `models`, training in `step` / `train`.
"""

__version__ = "0.1.0"
