"""Score networks behind a functional interface (docs/maths.md §5).

    graphdef, params = create_model(config.model, image_shape=(H, W, C), num_groups=G, rng=key)
    eps_hat = apply_model(graphdef, params, x, gamma_groups=..., train=True, rng=dropout_key)

``params`` is a plain nested dict of float32 jnp arrays (string keys only), so optax,
EMA (jax.tree.map), jax.grad and orbax need nothing model-specific. ``graphdef`` is the
hashable, static NNX graph definition (safe to close over or pass as a static argument).
``apply_model`` is pure: usable under jax.jit, jax.grad and jax.shard_map; with
``train=False`` it is deterministic and needs no rng.

Models are registered by ``config.model.name``; add one with ``register_model``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from gudjax.config_base import default_model_config
from gudjax.models.unet import CONDITIONINGS, UNet

__all__ = [
    "CONDITIONINGS",
    "UNet",
    "apply_model",
    "count_params",
    "create_model",
    "default_model_config",
    "register_model",
    "registered_models",
]

# name -> constructor(config, *, image_shape, num_groups, rng) -> nnx.Module.
_MODELS: dict[str, Callable[..., nnx.Module]] = {}


def register_model(name: str, constructor: Callable[..., nnx.Module]) -> None:
    """Add a model under ``config.model.name == name``; a duplicate name is an error."""
    if name in _MODELS:
        raise ValueError(f"model name {name!r} is already registered")
    _MODELS[name] = constructor


def registered_models() -> tuple[str, ...]:
    return tuple(sorted(_MODELS))


register_model("unet", UNet)


def _build(model_config, image_shape, num_groups, rng) -> nnx.Module:
    name = model_config.name
    if name not in _MODELS:
        raise ValueError(f"unknown model name {name!r}; allowed: {', '.join(sorted(_MODELS))}")
    return _MODELS[name](
        model_config, image_shape=tuple(image_shape), num_groups=num_groups, rng=rng
    )


def create_model(
    model_config: ml_collections.ConfigDict,
    *,
    image_shape: tuple[int, int, int],
    num_groups: int,
    rng: jax.Array,
) -> tuple[nnx.GraphDef, dict]:
    """Build the network; returns (graphdef, params) with params a nested dict of arrays.

    Raises a one-line ValueError for an unknown ``model_config.name`` or a bad field.
    """
    # Built eagerly on the host (numpy values, one random draw: see unet.NoisePool), then
    # moved to the device; no per-tensor compiles.
    graphdef, state = nnx.split(_build(model_config, image_shape, num_groups, rng))
    if jax.tree.leaves(nnx.filter_state(state, nnx.Not(nnx.Param))):
        raise ValueError("model has non-Param state; apply_model only carries params")
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), nnx.to_pure_dict(state))
    return graphdef, params


def apply_model(
    graphdef: nnx.GraphDef,
    params: dict,
    x: jax.Array,
    *,
    gamma_groups: jax.Array | None = None,
    gamma_map: jax.Array | None = None,
    t: jax.Array | None = None,
    train: bool = False,
    rng: jax.Array | None = None,
    skip: Callable[[], jax.Array] | None = None,
) -> jax.Array:
    """eps_hat = network(x; conditioning), (B, H, W, C) → (B, H, W, C). Pure function.

    Args:
      graphdef, params: from ``create_model`` (params may be any pytree of the same
        structure, e.g. an EMA copy or tracers under jax.grad).
      x: (B, H, W, C) whitened image Uᵀz_t.
      gamma_groups: (B, G, 3) (mean, min, max) of γ̃ per group ("gamma" conditioning).
      gamma_map: (B, H, W, C) γ̃ in image layout (``gamma_map_channel=True``).
      t: (B,) time in [0, 1] ("t" conditioning).
      train: enables dropout, which then needs ``rng``.
      rng: dropout key (ignored when train=False).
      skip: () -> (B, H, W, C), the image-shaped term a network built with
        ``gaussian_skip=True`` adds to its output (the caller's Gaussian-optimal ε̂); called
        only then, so it costs nothing otherwise.
    """
    module = nnx.merge(graphdef, params, copy=True)
    out = module(x, gamma_groups=gamma_groups, gamma_map=gamma_map, t=t, train=train, rng=rng)
    if getattr(module, "gaussian_skip", False):
        if skip is None:
            raise ValueError("this network was built with gaussian_skip=True; pass skip=")
        out = out + skip()
    return out


def count_params(params) -> int:
    """Total number of scalars in a params pytree."""
    return int(sum(leaf.size for leaf in jax.tree.leaves(params)))
