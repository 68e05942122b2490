"""Training: data-parallel step, retracing, checkpoint round trip, resume, bad input."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import count_compiles
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs import digits_haar
from gudjax import bases, experiment, input_pipeline, schedules, step, train
from gudjax.checkpointing import Checkpointer, CheckpointError
from gudjax.models import create_model


def tiny_config(data_dir, **overrides):
    c = digits_haar.get_config("runlocal")
    c.data.data_dir = str(data_dir)
    c.batch_size = 16
    m = c.model
    m.ch, m.ch_mult, m.num_res_blocks = 8, (1, 2), 1
    m.attn_resolutions, m.cross_attn_resolutions = (4,), (4,)
    m.token_dim, m.num_heads, m.dropout = 16, 2, 0.0
    c.optim.decay, c.optim.warmup_steps = "constant", 2
    c.train.num_steps, c.train.log_every, c.train.checkpoint_every = 4, 1, 2
    c.train.progress = False
    # Euler–Maruyama for the sample grids: the sampler is not the subject of these tests (the
    # digits default, dpmpp_2m_cov, runs end to end in test_main_e2e and test_evaluate)
    c.sample.solver, c.sample.num, c.sample.steps = "sde", 4, 5
    for k, v in overrides.items():
        node = c
        *path, leaf = k.split(".")
        for p in path:
            node = node[p]
        node[leaf] = v
    return c


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def setup(data_dir):
    """A fitted basis, schedule, tiny model and optimiser on digits."""
    c = tiny_config(data_dir)
    batches = (input_pipeline.to_model_input(b) for b in input_pipeline.fit_batches(c.data))
    basis = bases.fit_basis("haar", batches, whiten=True, levels=3)
    schedule = schedules.schedule_from_config(c.schedule, basis)
    graphdef, params = create_model(
        c.model, image_shape=basis.shape, num_groups=basis.num_groups, rng=jax.random.PRNGKey(0)
    )
    tx = step.make_optimizer(c.optim, c.train.num_steps)
    data = input_pipeline.TrainData(c.data, global_batch_size=16, seed=0)
    return c, basis, schedule, graphdef, params, tx, data


def _run_steps(mesh, setup, n_steps):
    c, basis, schedule, graphdef, params, tx, data = setup
    fn = step.make_sharded_train_step(
        mesh,
        graphdef=graphdef,
        tx=tx,
        family_ranges=dict(c.family),
        weighting="unweighted",
        ema_decay=0.9,
    )
    state = train.replicate(step.init_train_state(jax.tree.map(jnp.copy, params), tx), mesh)
    args = train.replicate((basis, schedule, jax.random.PRNGKey(3)), mesh)
    losses = []
    for s in range(n_steps):
        x = input_pipeline.to_model_input(data.batch(s))
        state, metrics = fn(state, *args[:2], train.shard_batch(x, mesh), args[2])
        losses.append(float(metrics["loss"]))
    return jax.device_get(state), losses, fn


@pytest.mark.slow
def test_data_parallel_step_equals_single_device(setup):
    assert jax.device_count() == 8
    mesh8 = train.make_mesh()
    mesh1 = jax.make_mesh((1,), (step.AXIS,), devices=jax.devices()[:1])
    with count_compiles("train_step") as compiles:
        s8, l8, fn8 = _run_steps(mesh8, setup, 3)
    s1, l1, _ = _run_steps(mesh1, setup, 3)
    np.testing.assert_allclose(l8, l1, rtol=2e-5)
    for a, b in zip(jax.tree.leaves(s8["params"]), jax.tree.leaves(s1["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # three steps, one compilation: no retrace across steps (step counter is traced data)
    assert len(compiles) == 1, compiles


def test_noise_differs_across_devices_and_matches_global_draw():
    mesh = train.make_mesh()
    rng = jax.random.PRNGKey(0)
    ranges = {"a": (0.0, 2.0)}

    def per_device(x):
        t, fam, eps = step.draw_randomness(
            rng, global_batch=16, local=x.shape[0], dim=5, family_ranges=ranges
        )
        return t, fam["a"], eps

    x = jax.device_put(jnp.zeros((16, 1)), NamedSharding(mesh, P(step.AXIS)))
    sharded = jax.shard_map(per_device, mesh=mesh, in_specs=P(step.AXIS), out_specs=P(step.AXIS))
    t8, a8, eps8 = jax.jit(sharded)(x)
    mesh1 = jax.make_mesh((1,), (step.AXIS,), devices=jax.devices()[:1])
    single = jax.shard_map(per_device, mesh=mesh1, in_specs=P(step.AXIS), out_specs=P(step.AXIS))
    x1 = jax.device_put(jnp.zeros((16, 1)), NamedSharding(mesh1, P(step.AXIS)))
    t1, a1, eps1 = jax.jit(single)(x1)
    np.testing.assert_array_equal(eps8, eps1)
    np.testing.assert_array_equal(t8, t1)
    np.testing.assert_array_equal(a8, a1)
    eps8 = np.asarray(eps8)
    assert len({tuple(np.round(r, 6)) for r in eps8}) == 16  # every example its own noise
    assert np.all((np.asarray(a8) >= 0.0) & (np.asarray(a8) <= 2.0))


def test_no_retrace_across_family_parameter_values(setup):
    c, basis, schedule, graphdef, params, tx, _ = setup

    def score_at(p, fam):
        return step.make_score_fn(graphdef, p, basis, schedule, fam)(jnp.zeros((2, basis.dim)), 0.5)

    fn = jax.jit(score_at)
    with count_compiles("score_at") as compiles:
        for a in (0.1, 0.7, 1.9):
            fn(params, {"a": jnp.asarray(a)})
    assert len(compiles) == 1, compiles


def test_checkpoint_round_trip_of_train_state(setup, tmp_path):
    mesh = train.make_mesh()
    state, _, _ = _run_steps(mesh, setup, 2)
    with Checkpointer(tmp_path / "ck", async_save=True) as ck:
        ck.save(2, state, meta={"note": "x"})
    with Checkpointer(tmp_path / "ck") as ck:
        step_, restored, meta = experiment.restore_state(ck, state, mesh)
    assert step_ == 2 and meta["note"] == "x"
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_resume_equals_uninterrupted(data_dir, tmp_path):
    full = train.train_and_evaluate(
        tiny_config(data_dir, **{"train.num_steps": 6}), str(tmp_path / "a")
    )
    # "interrupted" run: stops at step 3 (checkpoint), then the same command continues to 6
    wd = str(tmp_path / "b")
    part = train.train_and_evaluate(
        tiny_config(data_dir, **{"train.num_steps": 3, "train.checkpoint_every": 3}), wd
    )
    assert part["step"] == 3
    resumed = train.train_and_evaluate(
        tiny_config(data_dir, **{"train.num_steps": 6, "train.checkpoint_every": 3}), wd
    )
    assert resumed["step"] == 6
    for key in ("params", "ema_params", "opt_state"):
        for a, b in zip(
            jax.tree.leaves(jax.device_get(full["state"][key])),
            jax.tree.leaves(jax.device_get(resumed["state"][key])),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
    rows = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert os.path.exists(os.path.join(wd, "basis.npz"))
    assert json.load(open(os.path.join(wd, "config.json")))["basis"]["name"] == "haar"


def test_checkpoint_from_different_model_shape_is_one_line_error(data_dir, tmp_path):
    wd = str(tmp_path / "r")
    train.train_and_evaluate(tiny_config(data_dir, **{"train.num_steps": 2}), wd)
    c = tiny_config(data_dir, **{"train.num_steps": 4, "model.ch": 16, "allow_config_change": True})
    with pytest.raises(CheckpointError) as e:
        train.train_and_evaluate(c, wd)
    msg = str(e.value)
    assert "\n" not in msg and "fresh --workdir" in msg


@pytest.mark.parametrize(
    "content, match",
    [
        ('{\n  "seed": oops\n}\n', r"config\.json is not valid JSON \(line 2\)"),
        ("[1, 2]", r"config\.json does not hold a config"),
        (b"\xff\xfe\x00", r"cannot read .*config\.json"),
    ],
)
def test_damaged_config_json_is_one_line_error(tmp_path, content, match):
    path = tmp_path / "config.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    c = tiny_config(str(tmp_path / "data"))
    with pytest.raises(train.TrainingError, match=match) as e:
        experiment.check_config_change(c, str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "delete it" in msg


def test_damaged_basis_npz_and_metrics_jsonl_are_one_line_errors(tmp_path):
    from gudjax import plotting

    basis_path = tmp_path / "basis.npz"
    basis_path.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ValueError, match="delete it to refit") as e:
        experiment.fit_or_load_basis(tiny_config(str(tmp_path / "data")), str(tmp_path))
    assert "\n" not in str(e.value) and str(basis_path) in str(e.value)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo')
    with pytest.raises(ValueError, match=r"line 2 is not a JSON object; delete that line") as e:
        plotting.plot_loss(str(metrics), str(tmp_path / "loss.png"))
    assert "\n" not in str(e.value) and str(metrics) in str(e.value)


def test_config_change_refused_unless_allowed(data_dir, tmp_path):
    wd = str(tmp_path / "r")
    train.train_and_evaluate(tiny_config(data_dir, **{"train.num_steps": 2}), wd)
    with pytest.raises(train.TrainingError, match="allow_config_change"):
        train.train_and_evaluate(tiny_config(data_dir, **{"optim.lr": 0.5}), wd)


@pytest.mark.slow
def test_non_finite_loss_stops_run_and_keeps_last_good_checkpoint(data_dir, tmp_path):
    wd = str(tmp_path / "nan")
    train.train_and_evaluate(tiny_config(data_dir, **{"train.num_steps": 2}), wd)
    ck_dir = os.path.join(wd, "checkpoints")
    assert sorted(os.listdir(ck_dir)) == ["2"]
    bad = tiny_config(
        data_dir,
        **{
            "train.num_steps": 8,
            "optim.lr": 1e30,
            "optim.grad_clip": 1e30,
            "allow_config_change": True,
        },
    )
    with pytest.raises(train.TrainingError, match=r"non-finite at step \d+") as e:
        train.train_and_evaluate(bad, wd)
    assert "\n" not in str(e.value) and "last good checkpoint: step" in str(e.value)
    built = experiment.build(tiny_config(data_dir), wd)
    state, ck = built.state, built.ckpt
    for s in sorted(int(d) for d in os.listdir(ck_dir) if d.isdigit()):
        restored_step, restored, _ = ck.restore(
            jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state), step=s
        )
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(restored)), s
    ck.close()


@pytest.mark.parametrize(
    "override, match",
    [
        ({"data.name": "mnist_nope"}, "allowed: digits"),
        ({"data.image_size": 32}, "config.data.image_size"),
        ({"basis.name": "wavelet9"}, "allowed:"),
        ({"schedule.name": "zigzag"}, "allowed:"),
        ({"family": {"a": (2.0, 0.5)}}, "min > max"),
        ({"batch_size": 12}, "not divisible"),
        ({"train.loss_weighting": "snr"}, "allowed: unweighted, elbo"),
    ],
)
def test_bad_config_values_give_one_line_errors(data_dir, tmp_path, override, match):
    c = tiny_config(data_dir)
    for k, v in override.items():
        if k == "family":
            c.family.a = v["a"]
        else:
            tiny = tiny_config(data_dir, **{k: v})
            c = tiny
    with pytest.raises(ValueError, match=match) as e:
        train.train_and_evaluate(c, str(tmp_path / "bad"))
    assert "\n" not in str(e.value)


def test_missing_prepared_dataset_names_the_command(tmp_path):
    c = tiny_config(
        tmp_path / "empty", **{"data.name": "cifar10", "data.image_size": 32, "data.channels": 3}
    )
    with pytest.raises(input_pipeline.DatasetNotFoundError, match="tfds build cifar10"):
        train.train_and_evaluate(c, str(tmp_path / "wd"))


def test_no_retrace_of_sampler_across_family_values(setup):
    """The jitted sampler compiles once for a sweep over (a, b) of a two-parameter
    family: family values are traced data, so a sweep never recompiles."""
    from gudjax import generation, score_model

    _, basis, _, graphdef, params, _, _ = setup
    sched = schedules.make_schedule("haar_column", basis)
    model = score_model.network_model(graphdef, params, basis, sched, {"a": 0.0, "b": 0.1})
    with count_compiles("sample_batch") as compiles:
        for a, b in ((0.0, 0.1), (1.3, 0.4), (2.0, 0.0)):
            generation.generate(
                model.with_family({"a": a, "b": b}),
                2,
                rng=jax.random.PRNGKey(0),
                solver="sde",
                steps=2,
                batch_size=2,
            )
    assert len(compiles) == 1, compiles


def test_image_space_loss_equals_component_space_loss(setup):
    """The unweighted ε-loss in image space (no basis transform on the network output) is the
    component-space loss: U is orthonormal, so mean (Uᵀε̂ − Uᵀε)² = mean (ε̂ − ε)². Equal as
    functions of the parameters, so their gradients are equal too (checked by value here;
    differentiating both would double the test's compile time)."""
    c, basis, schedule, graphdef, params, tx, data = setup
    x = input_pipeline.to_model_input(data.batch(0))
    mesh1 = jax.make_mesh((1,), (step.AXIS,), devices=jax.devices()[:1])

    def losses(rng):
        def both(p, b, s, xb, r):
            kw = dict(family_ranges=dict(c.family), weighting="unweighted", global_batch=16)
            return jnp.stack(
                [
                    step.loss_fn(p, graphdef, b, s, xb, r, loss_space=space, **kw)
                    for space in ("image", "components")
                ]
            )

        # loss_fn reads its device index on the data axis: run it on a one-device mesh
        fn = jax.jit(jax.shard_map(both, mesh=mesh1, in_specs=P(), out_specs=P(), check_vma=False))
        return np.asarray(fn(params, basis, schedule, x, rng))

    for seed in (5, 6):
        l_img, l_comp = losses(jax.random.PRNGKey(seed))
        assert l_img > 0.1  # a real loss, not a degenerate zero
        np.testing.assert_allclose(l_img, l_comp, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown loss_space"):
        step.make_sharded_train_step(
            train.make_mesh(),
            graphdef=graphdef,
            tx=tx,
            family_ranges={},
            weighting="unweighted",
            ema_decay=0.9,
            loss_space="pixels",
        )


def test_ema_warm_up_keeps_the_initial_weights_out(setup):
    """EMA update after `step` steps uses min(decay, (1 + step)/(10 + step)): after one step
    the average is 0.1·p0 + 0.9·p1, not 0.9·p0 + 0.1·p1; the cap holds from then on."""
    np.testing.assert_allclose(
        np.asarray(step.ema_decay_at(jnp.arange(4), 0.999)), [0.1, 2 / 11, 3 / 12, 4 / 13],
        rtol=1e-6,
    )
    assert float(step.ema_decay_at(10**6, 0.999)) == np.float32(0.999)
    mesh1 = jax.make_mesh((1,), (step.AXIS,), devices=jax.devices()[:1])
    p0 = setup[4]
    s1, _, _ = _run_steps(mesh1, setup, 1)
    for e, a, b in zip(jax.tree.leaves(s1["ema_params"]), jax.tree.leaves(p0),
                       jax.tree.leaves(s1["params"]), strict=True):
        np.testing.assert_allclose(e, 0.1 * np.asarray(a) + 0.9 * np.asarray(b), rtol=1e-5,
                                   atol=1e-7)
