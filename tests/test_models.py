"""Tests for gudjax.models: shapes, purity, conditioning, gradients, config errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gudjax import models

NUM_GROUPS = 4


def tiny_config(image_shape, **overrides):
    """ch=16, two or three levels (28×28 → 28, 14, 7), attention at the lowest level."""
    c = models.default_model_config()
    c.ch = 16
    c.ch_mult = (1, 2, 2) if image_shape[0] == 28 else (1, 2)
    c.num_res_blocks = 1
    lowest = image_shape[0] // 2 ** (len(c.ch_mult) - 1)
    c.attn_resolutions = (lowest,)
    c.cross_attn_resolutions = (lowest,)
    c.token_dim = 32
    c.num_heads = 2
    c.dropout = 0.0
    for k, v in overrides.items():
        c[k] = v
    return c


def make_inputs(image_shape, batch=2, seed=0):
    """x, gamma_groups (γ̃ in [-8, 4]), gamma_map, t for a batch."""
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(k1, (batch, *image_shape))
    gamma_groups = jax.random.uniform(k2, (batch, NUM_GROUPS, 3), minval=-8.0, maxval=4.0)
    gamma_map = jax.random.uniform(k3, (batch, *image_shape), minval=-8.0, maxval=4.0)
    t = jax.random.uniform(k4, (batch,))
    return dict(x=x, gamma_groups=gamma_groups, gamma_map=gamma_map, t=t)


def perturb(params, seed=1, scale=0.1):
    """Move every parameter off its (partly zero) initial value (host numpy noise: an
    eager jax.random call per tensor shape would compile once per shape)."""
    gen = np.random.default_rng(seed)
    noise = lambda p: jnp.asarray(np.asarray(p) + scale * gen.standard_normal(p.shape, np.float32))
    return jax.tree.map(noise, params)


@functools.cache
def jitted_apply(graphdef, train):
    """One jitted apply per (graphdef, train): equal configs share their compile."""

    def f(params, x, gamma_groups, gamma_map, t, rng):
        return models.apply_model(
            graphdef,
            params,
            x,
            gamma_groups=gamma_groups,
            gamma_map=gamma_map,
            t=t,
            train=train,
            rng=rng,
        )

    return jax.jit(f)


def run(graphdef, params, inputs, *, train=False, rng=None):
    i = inputs
    return jitted_apply(graphdef, train)(
        params, i["x"], i["gamma_groups"], i["gamma_map"], i["t"], rng
    )


@pytest.mark.parametrize("gamma_map_channel", [False, True])
@pytest.mark.parametrize("conditioning", ["gamma", "t"])
@pytest.mark.parametrize("image_shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
def test_output_shape(image_shape, conditioning, gamma_map_channel):
    """Every shape × conditioning × gamma_map_channel, traced (no compile: keeps it fast)."""
    config = tiny_config(
        image_shape, conditioning=conditioning, gamma_map_channel=gamma_map_channel
    )
    graphdef, params = models.create_model(
        config, image_shape=image_shape, num_groups=NUM_GROUPS, rng=jax.random.key(0)
    )
    inputs = make_inputs(image_shape)
    for train in (False, True):
        apply = jitted_apply(graphdef, train)
        out = jax.eval_shape(lambda key, f=apply: f(params, **inputs, rng=key), jax.random.key(1))
        assert out.shape == inputs["x"].shape and out.dtype == jnp.float32


@pytest.mark.parametrize(
    "image_shape, conditioning, gamma_map_channel",
    [((28, 28, 1), "gamma", True), ((32, 32, 3), "t", False)],
)
def test_forward_is_zero_at_init_and_finite(image_shape, conditioning, gamma_map_channel):
    config = tiny_config(
        image_shape, conditioning=conditioning, gamma_map_channel=gamma_map_channel
    )
    graphdef, params = models.create_model(
        config, image_shape=image_shape, num_groups=NUM_GROUPS, rng=jax.random.key(0)
    )
    inputs = make_inputs(image_shape)
    out = run(graphdef, params, inputs)
    assert out.shape == inputs["x"].shape and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, 0.0)  # zero-initialised output conv
    out = run(graphdef, perturb(params), inputs)
    assert bool(jnp.all(jnp.isfinite(out))) and float(jnp.std(out)) > 0.0


def test_odd_widths_and_channels():
    """GroupNorm groups adapt: ch=12 (3 groups), 36 (9 groups), a 5-channel image."""
    shape = (8, 8, 5)
    config = tiny_config(shape, ch=12, ch_mult=(1, 3), token_dim=20, num_heads=8)
    graphdef, params = models.create_model(
        config, image_shape=shape, num_groups=3, rng=jax.random.key(0)
    )
    inputs = dict(make_inputs(shape), gamma_groups=jnp.zeros((2, 3, 3)))
    out = run(graphdef, perturb(params), inputs)
    assert out.shape == inputs["x"].shape and bool(jnp.all(jnp.isfinite(out)))


def test_params_are_pure_dict_and_deterministic():
    shape = (8, 8, 1)
    config = tiny_config(shape)
    create = lambda seed: models.create_model(
        config, image_shape=shape, num_groups=NUM_GROUPS, rng=jax.random.key(seed)
    )[1]
    p0, p0b, p1 = create(0), create(0), create(1)

    def check(tree):
        assert type(tree) is dict
        for k, v in tree.items():
            assert isinstance(k, str)
            if isinstance(v, dict):
                check(v)
            else:
                assert isinstance(v, jax.Array) and v.dtype == jnp.float32

    check(p0)
    assert models.count_params(p0) > 0
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), p0, p0b)))
    kernel = p0["blocks"]["down0_res0"]["conv1"]["kernel"]
    assert float(jnp.std(kernel)) > 0.0
    assert not bool(jnp.all(kernel == p1["blocks"]["down0_res0"]["conv1"]["kernel"]))
    np.testing.assert_array_equal(p0["blocks"]["down0_res0"]["norm1"]["scale"], 1.0)


@pytest.fixture(scope="module")
def gamma_model():
    """The 8×8 "gamma" model (dropout 0.5) shared by several tests, params perturbed."""
    shape = (8, 8, 1)
    config = tiny_config(shape, dropout=0.5)
    graphdef, params = models.create_model(
        config, image_shape=shape, num_groups=NUM_GROUPS, rng=jax.random.key(0)
    )
    return graphdef, params, perturb(params), make_inputs(shape, batch=8)  # 8: one per fake device


def test_deterministic_eval_and_dropout(gamma_model):
    graphdef, _, params, inputs = gamma_model
    a = run(graphdef, params, inputs)
    b = run(graphdef, params, inputs)
    np.testing.assert_array_equal(a, b)
    d1 = run(graphdef, params, inputs, train=True, rng=jax.random.key(1))
    d1b = run(graphdef, params, inputs, train=True, rng=jax.random.key(1))
    d2 = run(graphdef, params, inputs, train=True, rng=jax.random.key(2))
    np.testing.assert_array_equal(d1, d1b)
    assert float(jnp.max(jnp.abs(d1 - d2))) > 1e-4
    assert float(jnp.max(jnp.abs(d1 - a))) > 1e-4
    with pytest.raises(ValueError, match="dropout rng"):
        models.apply_model(
            graphdef, params, inputs["x"], gamma_groups=inputs["gamma_groups"], train=True
        )


def test_output_depends_on_gamma_groups(gamma_model):
    graphdef, _, params, inputs = gamma_model
    base = run(graphdef, params, inputs)
    shifted = run(graphdef, params, dict(inputs, gamma_groups=inputs["gamma_groups"] + 1.0))
    swapped = run(graphdef, params, dict(inputs, gamma_groups=inputs["gamma_groups"][:, ::-1]))
    assert float(jnp.max(jnp.abs(base - shifted))) > 1e-4
    assert float(jnp.max(jnp.abs(base - swapped))) > 1e-4  # tokens know their group
    t_changed = run(graphdef, params, dict(inputs, t=inputs["t"] + 0.5))
    np.testing.assert_array_equal(base, t_changed)  # t is ignored in "gamma" mode
    with pytest.raises(ValueError, match="gamma_groups"):
        models.apply_model(graphdef, params, inputs["x"], t=inputs["t"])
    with pytest.raises(ValueError, match="gamma_groups must have shape"):
        models.apply_model(graphdef, params, inputs["x"], gamma_groups=jnp.zeros((2, 3, 3)))


def test_output_depends_on_t_and_gamma_map():
    shape = (8, 8, 1)
    config = tiny_config(shape, conditioning="t", gamma_map_channel=True)
    graphdef, params = models.create_model(
        config, image_shape=shape, num_groups=NUM_GROUPS, rng=jax.random.key(0)
    )
    params = perturb(params)
    inputs = make_inputs(shape)
    base = run(graphdef, params, inputs)
    half_t = run(graphdef, params, dict(inputs, t=inputs["t"] * 0.5))
    assert float(jnp.max(jnp.abs(base - half_t))) > 1e-4
    changed_map = run(graphdef, params, dict(inputs, gamma_map=inputs["gamma_map"] + 1.0))
    assert float(jnp.max(jnp.abs(base - changed_map))) > 1e-4
    with pytest.raises(ValueError, match="gamma_map"):
        models.apply_model(graphdef, params, inputs["x"], t=inputs["t"])
    with pytest.raises(ValueError, match="needs t"):
        models.apply_model(graphdef, params, inputs["x"], gamma_map=inputs["gamma_map"])


def test_jit_grad_of_mse(gamma_model):
    """jit(grad) of a dropout-on MSE: finite, same tree as params, reaches γ and every layer."""
    graphdef, params0, params, inputs = gamma_model
    eps = jax.random.normal(jax.random.key(5), inputs["x"].shape)

    @jax.jit
    def loss_and_grad(params, gamma_groups, rng):
        def loss(p, gg):
            out = models.apply_model(graphdef, p, inputs["x"], gamma_groups=gg, train=True, rng=rng)
            return jnp.mean((out - eps) ** 2)

        return jax.value_and_grad(loss, argnums=(0, 1))(params, gamma_groups)

    assert models.count_params(params0) > 0
    loss, (grads, _) = loss_and_grad(params0, inputs["gamma_groups"], jax.random.key(3))
    assert jax.tree.structure(grads) == jax.tree.structure(params0)
    assert np.isclose(float(loss), float(jnp.mean(eps**2)))  # zero output at init
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert float(jnp.max(jnp.abs(grads["conv_out"]["kernel"]))) > 0.0
    loss, (grads, grad_gamma) = loss_and_grad(params, inputs["gamma_groups"], jax.random.key(3))
    assert np.isfinite(float(loss))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    for name in ("group_embed", "conv_in", "blocks"):
        assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads[name])) > 0.0
    assert grad_gamma.shape == inputs["gamma_groups"].shape
    assert bool(jnp.all(jnp.isfinite(grad_gamma))) and float(jnp.max(jnp.abs(grad_gamma))) > 0.0


def test_apply_inside_shard_map(gamma_model):
    """Data-parallel use: params replicated, batch sharded over "data", pmean inside."""
    graphdef, _, params, inputs = gamma_model  # batch 8 (conftest: 8 fake devices)
    if inputs["x"].shape[0] % len(jax.devices()):
        pytest.skip("the batch of 8 does not split over this many devices")
    mesh = Mesh(np.array(jax.devices()), ("data",))

    def per_device(params, x, gamma_groups):
        out = models.apply_model(graphdef, params, x, gamma_groups=gamma_groups)
        return out, jax.lax.pmean(jnp.mean(out**2), "data")

    sharded = jax.jit(
        jax.shard_map(
            per_device, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=(P("data"), P())
        )
    )
    place = lambda a, spec: jax.device_put(a, NamedSharding(mesh, spec))
    out, mean_sq = sharded(
        place(params, P()), place(inputs["x"], P("data")), place(inputs["gamma_groups"], P("data"))
    )
    assert out.shape == inputs["x"].shape
    reference = run(graphdef, params, inputs)
    np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mean_sq, jnp.mean(reference**2), rtol=1e-4)


@pytest.mark.parametrize(
    "override, image_shape, match",
    [
        (dict(name="vit"), (8, 8, 1), "unknown model name 'vit'; allowed: unet"),
        (dict(conditioning="time"), (8, 8, 1), "config.model.conditioning.*allowed: gamma, t"),
        (dict(ch_mult=(1, 2, 2, 2)), (28, 28, 1), "config.model.ch_mult.*28x28"),
        (dict(attn_resolutions=(16,)), (8, 8, 1), "config.model.attn_resolutions"),
    ],
)
def test_bad_config_raises_one_line(override, image_shape, match):
    config = tiny_config(image_shape, **override)
    with pytest.raises(ValueError, match=match) as info:
        models.create_model(
            config, image_shape=image_shape, num_groups=NUM_GROUPS, rng=jax.random.key(0)
        )
    assert "\n" not in str(info.value)


def test_register_model_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        models.register_model("unet", models.UNet)
