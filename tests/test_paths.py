"""Training over any path: the random path draw, the config checks, and the train step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from test_train import tiny_config

from configs import digits_haar
from gudjax import bases, experiment, input_pipeline, paths, process, schedules, step, train
from gudjax.models import create_model

D = 6
RHO = np.array([-3.0, -1.0, 0.0, 0.5, 2.0, -6.0], np.float32)


def _schedule(name="soft"):
    if name == "autoregressive":
        return schedules.make_schedule(name, dim=D, rho=RHO, labels=np.arange(D) % 3)
    return schedules.make_schedule(name, dim=D, rho=RHO, labels=np.linspace(0, 1, D), clip=True)


UNITS = np.array([0, 0, 1, 1, 2, 2])


def _draw(n=64, units=UNITS, min_length=0.1, seed=0):
    w = paths.draw_windows(jax.random.PRNGKey(seed), n, int(units.max()) + 1, min_length)
    return w, jnp.asarray(units)


# ------------------------------------------------------------------ the draw
def test_windows_lie_inside_unit_interval_with_min_length():
    (w, _), lmin = _draw(n=512, min_length=0.25), 0.25
    s, e = np.asarray(w.start), np.asarray(w.end)
    assert s.shape == (512, 3)
    assert np.all(s >= 0.0) and np.all(e <= 1.0)
    assert np.all(e - s >= lmin - 1e-6)
    assert s.min() < 0.05 and e.max() > 0.95  # the windows reach both ends


@pytest.mark.parametrize("name", ["soft", "autoregressive"])
def test_paths_are_monotone_and_hit_the_end_points_exactly(name):
    sched = _schedule(name)
    w, units = _draw()
    n = w.start.shape[0]
    ts = jnp.linspace(0.0, 1.0, 201)
    gammas = np.stack(
        [np.asarray(paths.path_state(sched, jnp.full((n,), t), w, units).gamma) for t in ts]
    )
    assert np.all(np.diff(gammas, axis=0) >= 0.0)
    g0 = np.asarray(sched.gamma_den + sched.rho)
    g1 = np.asarray(sched.terminal_targets() + sched.rho)
    np.testing.assert_array_equal(gammas[0], np.broadcast_to(g0, gammas[0].shape))
    np.testing.assert_array_equal(gammas[-1], np.broadcast_to(g1, gammas[-1].shape))
    # the same end points as every member of the family, bit for bit
    for params in (None, *([{"a": 0.0}, {"a": 2.0}] if name == "soft" else [])):
        np.testing.assert_array_equal(np.asarray(sched.gamma(0.0, params)), g0)
        np.testing.assert_array_equal(np.asarray(sched.gamma(1.0, params)), g1)


def test_units_share_their_window():
    sched = _schedule()
    w, units = _draw()
    gt, _ = paths.path_gamma_tilde(
        jnp.full((64,), 0.4), w, units, sched.gamma_den, sched.terminal_targets()
    )
    u = (np.asarray(gt) - float(sched.gamma_den)) / np.asarray(
        sched.terminal_targets() - sched.gamma_den
    )
    np.testing.assert_allclose(u[:, 0], u[:, 1], atol=1e-6)
    np.testing.assert_allclose(u[:, 4], u[:, 5], atol=1e-6)


def test_dgamma_matches_finite_differences_away_from_kinks():
    sched = _schedule()
    w, units = _draw(n=32)
    t = jax.random.uniform(jax.random.PRNGKey(1), (32,), minval=0.01, maxval=0.99)
    h = 1e-3
    state = paths.path_state(sched, t, w, units)
    up = paths.path_state(sched, t + h, w, units).gamma
    down = paths.path_state(sched, t - h, w, units).gamma
    fd = np.asarray((up - down) / (2 * h))
    dgamma = np.asarray(state.beta / jnp.square(state.sigma))
    s, e = np.asarray(w.start)[:, units], np.asarray(w.end)[:, units]
    tt = np.asarray(t)[:, None]
    away = (np.abs(tt - s) > 2 * h) & (np.abs(tt - e) > 2 * h)
    assert away.mean() > 0.8
    np.testing.assert_allclose(dgamma[away], fd[away], rtol=2e-2, atol=2e-2)
    inside = away & (tt > s) & (tt < e)
    assert inside.any() and np.all(dgamma[inside] > 0) and np.all(dgamma[~inside & away] == 0)


def test_mix_states_picks_per_example():
    a = process.state_from_gamma(jnp.zeros((3, 2)), jnp.ones((3, 2)))
    b = process.state_from_gamma(jnp.ones((3, 2)), jnp.zeros((3, 2)))
    m = paths.mix_states(jnp.array([True, False, True]), a, b)
    np.testing.assert_array_equal(np.asarray(m.gamma)[:, 0], [0.0, 1.0, 0.0])


def test_common_end_points_only_for_clipped_families():
    assert paths.has_common_end_points(_schedule("soft"))
    assert paths.has_common_end_points(_schedule("autoregressive"))
    unclipped = schedules.make_schedule("soft", dim=D, labels=np.linspace(0, 1, D), clip=False)
    assert not paths.has_common_end_points(unclipped)
    assert not paths.has_common_end_points(schedules.make_schedule("scalar_linear", dim=D))


# ------------------------------------------------------------------ config
def test_config_checks_are_one_line_errors():
    c = digits_haar.get_config("runlocal")
    assert c.train.paths == "family" and experiment.any_paths_options(c) is None
    experiment.validate_config(c)
    c.train.paths = "some"
    with pytest.raises(ValueError, match=r"config\.train\.paths .*allowed: family, any"):
        experiment.validate_config(c)
    c.train.paths = "any"
    experiment.validate_config(c)
    assert experiment.any_paths_options(c) == paths.AnyPaths(0.1, 0.5, False)
    for field, value, match in (
        ("path_min_length", 0.0, "path_min_length"),
        ("path_p_family", 1.5, "path_p_family"),
        ("path_units", "pixels", "path_units"),
        ("path_units", "components", "gamma_map_channel"),
    ):
        bad = digits_haar.get_config("runlocal")
        bad.train.paths = "any"
        bad.train[field] = value
        with pytest.raises(ValueError, match=match):
            experiment.validate_config(bad)
    bad = digits_haar.get_config("runlocal")
    bad.train.paths, bad.model.conditioning = "any", "t"
    with pytest.raises(ValueError, match="conditioning='gamma'"):
        experiment.validate_config(bad)


def test_old_workdir_without_the_new_fields_still_resumes(tmp_path):
    import json

    c = digits_haar.get_config("runlocal")
    stored = json.loads(c.to_json_best_effort())
    for k in ("paths", "path_min_length", "path_p_family", "path_units"):
        del stored["train"][k]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    experiment.check_config_change(c, str(tmp_path))  # as before: no error
    c.train.paths = "any"
    with pytest.raises(Exception, match="train.paths"):
        experiment.check_config_change(c, str(tmp_path))


# ------------------------------------------------------------------ the train step
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    # test_train's tiny network, no warm-up and a larger step so a few steps lower the loss
    c = tiny_config(tmp_path_factory.mktemp("tfds"), **{"optim.warmup_steps": 0,
                                                         "optim.lr": 3e-3})
    batches = (input_pipeline.to_model_input(b) for b in input_pipeline.fit_batches(c.data))
    basis = bases.fit_basis("haar", batches, whiten=True, levels=3)
    schedule = schedules.make_schedule("soft", basis, labels="level", clip=True)
    graphdef, params = create_model(
        c.model, image_shape=basis.shape, num_groups=basis.num_groups, rng=jax.random.PRNGKey(0)
    )
    tx = step.make_optimizer(c.optim, 100)
    data = input_pipeline.TrainData(c.data, global_batch_size=16, seed=0)
    return c, basis, schedule, graphdef, params, tx, data


def _previous_loss_fn(params, graphdef, basis, schedule, x, rng, *, family_ranges, global_batch):
    """The family-path loss as it was written before any-path training existed."""
    from gudjax.models import apply_model

    k_draw, k_drop = jax.random.split(rng)
    t, fam, eps = step.draw_randomness(
        k_draw, global_batch=global_batch, local=x.shape[0], dim=basis.dim,
        family_ranges=family_ranges,
    )
    k_drop = jax.random.fold_in(k_drop, jax.lax.axis_index(step.AXIS))

    def eps_fn(z_t, state, t):
        cond = step.conditioning(basis, schedule, state, t)
        return apply_model(graphdef, params, basis.to_image(z_t), train=True, rng=k_drop, **cond)

    per_example = process.loss_given_noise(
        eps_fn, schedule, basis.encode(x), t, eps, params=fam or None,
        weighting="unweighted", to_output=basis.to_image,
    )
    return jnp.mean(per_example)


@pytest.mark.slow
def test_family_paths_loss_is_bit_for_bit_the_previous_loss(setup):
    c, basis, schedule, graphdef, params, tx, data = setup
    x = input_pipeline.to_model_input(data.batch(0))
    mesh1 = jax.make_mesh((1,), (step.AXIS,), devices=jax.devices()[:1])
    ranges = {"a": (0.0, 2.0)}
    always_family = paths.AnyPaths(min_length=0.1, p_family=1.0, per_component=False)

    def losses(p, b, s, xb, r):
        kw = dict(family_ranges=ranges, weighting="unweighted", global_batch=16)
        return jnp.stack(
            [
                _previous_loss_fn(p, graphdef, b, s, xb, r, family_ranges=ranges, global_batch=16),
                step.loss_fn(p, graphdef, b, s, xb, r, **kw),
                step.loss_fn(p, graphdef, b, s, xb, r, any_paths=always_family, **kw),
                step.loss_fn(p, graphdef, b, s, xb, r, any_paths=always_family._replace(
                    p_family=0.0), **kw),
            ]
        )

    # the untrained network returns ε̂ = 0 whatever its conditioning: perturb it
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(9), len(leaves))
    noisy = [
        v + 0.05 * jax.random.normal(k, v.shape, v.dtype)
        for v, k in zip(leaves, keys, strict=True)
    ]
    params = jax.tree.unflatten(tree, noisy)
    fn = jax.jit(jax.shard_map(losses, mesh=mesh1, in_specs=P(), out_specs=P(), check_vma=False))
    before, family, mixed_all_family, any_path = np.asarray(
        fn(params, basis, schedule, x, jax.random.PRNGKey(4))
    )
    assert before == family  # "family": today's loss, bit for bit
    assert before == mixed_all_family  # p_family = 1: every example keeps its family member
    assert any_path != before and np.isfinite(any_path)


def _run_any(mesh, setup, n_steps, weighting="unweighted"):
    c, basis, schedule, graphdef, params, tx, data = setup
    fn = step.make_sharded_train_step(
        mesh,
        graphdef=graphdef,
        tx=tx,
        family_ranges={"a": (0.0, 2.0)},
        weighting=weighting,
        ema_decay=0.9,
        any_paths=paths.AnyPaths(min_length=0.1, p_family=0.5, per_component=False),
    )
    state = train.replicate(step.init_train_state(jax.tree.map(jnp.copy, params), tx), mesh)
    args = train.replicate((basis, schedule, jax.random.PRNGKey(3)), mesh)
    losses = []
    for s in range(n_steps):
        x = input_pipeline.to_model_input(data.batch(s % 4))
        state, metrics = fn(state, *args[:2], train.shard_batch(x, mesh), args[2])
        losses.append(float(metrics["loss"]))
    return losses


@pytest.mark.slow
def test_any_paths_trains_and_is_device_count_invariant(setup):
    assert jax.device_count() == 8
    l8 = _run_any(train.make_mesh(), setup, 12)
    assert np.all(np.isfinite(l8))
    assert np.mean(l8[-4:]) < np.mean(l8[:4]), l8
    mesh1 = jax.make_mesh((1,), (step.AXIS,), devices=jax.devices()[:1])
    l1 = _run_any(mesh1, setup, 3)
    np.testing.assert_allclose(l8[:3], l1, rtol=2e-5)


def test_elbo_weighting_uses_the_drawn_paths_dgamma():
    """"elbo" on a random path weights component i by ½ dγ_i/dt of that path (β/σ²)."""
    sched = _schedule()
    w, units = _draw(n=8)
    t = jax.random.uniform(jax.random.PRNGKey(2), (8,))
    eps = jax.random.normal(jax.random.PRNGKey(3), (8, D))
    z0 = jax.random.normal(jax.random.PRNGKey(4), (8, D))
    state = paths.path_state(sched, t, w, units)
    _, dgamma = paths.path_gamma_tilde(t, w, units, sched.gamma_den, sched.terminal_targets())

    def eps_fn(z_t, s, t):
        return 0.5 * z_t

    loss = process.loss_given_noise(eps_fn, sched, z0, t, eps, weighting="elbo", state=state)
    z_t = state.alpha * z0 + state.sigma * eps
    want = jnp.mean(0.5 * dgamma * jnp.square(0.5 * z_t - eps), axis=-1)
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-7)
    assert np.any(np.asarray(dgamma) > 0)
