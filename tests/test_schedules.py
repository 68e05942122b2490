"""Schedules (docs/maths.md §3): β from jvp, end points in every basis and prior, the
standard-diffusion identity, windows, generation order, the Haar+column family, b ↔ a,
jit/vmap without retracing, the registry, and one-line errors.
"""

import functools
import math
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gudjax import bases, process, schedules
from gudjax.schedules import GAMMA_DEN, GAMMA_END, GAMMA_NOISE, a_to_b, b_to_a, make_schedule

W = GAMMA_NOISE - GAMMA_DEN
SHAPE = (8, 8, 1)
D = math.prod(SHAPE)


# ---------------------------------------------------------------------------- helpers
@functools.cache
def unwhitened(name, shape=SHAPE, **options) -> bases.Basis:
    """Unwhitened basis with very different component variances (so ρ is not constant)."""
    d = math.prod(shape)
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # other variances per basis
    if bases.get_spec(name).needs_covariance:  # PCA: fit on anisotropic correlated data
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        x = (rng.normal(size=(4 * d, d)) * np.geomspace(0.5, 0.01, d)) @ q.T
        return bases.fit_basis(name, [x.reshape(-1, *shape)], **options)
    variance = np.geomspace(0.3, 1e-4, d)[rng.permutation(d)]
    return bases.make_basis(name, shape, variance=variance, **options)


def function_gamma(t):
    """A smooth, increasing, component-wise γ(t) for the 'function' kind."""
    ramp = jnp.linspace(0.0, 1.0, D)
    return -9.0 + 12.0 * t + 2.0 * jnp.sin(jnp.pi * t) * ramp


@functools.cache
def schedule_of_kind(kind) -> schedules.Schedule:
    """One representative schedule per kind (a clipped soft schedule counts as a kind);
    a registered family without a case here runs its own `example()` on an unwhitened basis."""
    if kind not in KNOWN:
        return schedules.get_family(kind).example(unwhitened("pixel"))
    if kind == "scalar_linear":
        return make_schedule("scalar_linear", unwhitened("pca"))
    if kind == "cosine":
        return make_schedule("cosine", unwhitened("pca"))
    if kind == "soft":
        return make_schedule("soft", unwhitened("pca"), labels="variance", a=0.7)
    if kind == "soft_clipped":
        return make_schedule("soft", unwhitened("fourier"), labels="frequency", a=1.5, clip=True)
    if kind == "soft_mixed":
        return make_schedule("soft_mixed", unwhitened("fourier"), a=0.8, r=0.4)
    if kind == "column":
        return make_schedule("column", unwhitened("pixel"), b=0.3)
    if kind == "haar_column":
        return make_schedule("haar_column", unwhitened("haar", levels=2), a=0.5, b=0.3)
    if kind == "function":
        return make_schedule("function", dim=D, fn=function_gamma)
    raise AssertionError(kind)


KNOWN = ("scalar_linear", "cosine", "soft", "soft_clipped", "soft_mixed", "column",
         "haar_column", "function")
#: every registered family (a new family is tested by registering it) plus a clipped soft one
KINDS = tuple(sorted(set(schedules.registered_schedules()) | {"soft_clipped"}))
CLIPPED = ("soft_clipped", "column", "haar_column")
LINEAR = ("soft", "soft_clipped", "soft_mixed", "column", "haar_column")


#: Two compilations of the same γ may differ by an ulp of its O(20) intermediates (e.g. the
#: path coordinate s), which is large relative to γ where γ crosses 0.
ATOL_F32 = 4 * float(np.spacing(np.float32(20)))
T = 13  # length of the time grids (one compile per schedule structure and grid length)


@functools.partial(jax.jit, static_argnames="method")
def vmap_t(sched, ts, params=None, method="gamma"):
    """sched.<method>(t, params) for a vector of times, jitted (schedule is a pytree)."""
    return jax.vmap(lambda t: getattr(sched, method)(t, params))(ts)


@jax.jit
def states(sched, ts, params=None):
    return jax.vmap(lambda t: process.noise_state(sched, t, params))(ts)


def path_times(sched, params=None):
    """(t_of_s, t*, Δ) of a linear member in float64, straight from docs/maths.md §3: the
    generation phase s ∈ [0, W + E] takes t ∈ [0, t*], the tail [W + E, W + E + Δ] the rest,
    1 − t* = min(Δ/(W + E + Δ), tail)."""
    e = np.asarray(sched.effective_labels(params), np.float64)
    top = np.asarray(sched.terminal_targets(), np.float64)
    ext = W + e.max() - e.min()
    extra = max(0.0, np.max(top - GAMMA_NOISE - (e - e.min())))
    t_star = 1.0 - min(extra / (ext + extra), schedules.TAIL)

    def t_of_s(s):
        s = np.asarray(s, np.float64)
        tail = t_star + (s - ext) * (1.0 - t_star) / max(extra, 1e-300)
        return np.where(s <= ext, s * t_star / ext, tail)

    return t_of_s, t_star, extra


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg, f"error message is not one line: {msg!r}"
    return msg


# ---------------------------------------------------------------------------- β from jvp
@pytest.mark.parametrize("kind", KINDS)
def test_beta_is_sigma2_times_finite_difference(kind):
    sched = schedule_of_kind(kind)
    ts = jnp.linspace(0.05, 0.95, T)
    h = 1e-3
    st = states(sched, ts)
    g_plus = np.asarray(vmap_t(sched, ts + h), np.float64)
    g_minus = np.asarray(vmap_t(sched, ts - h), np.float64)
    fd = (g_plus - g_minus) / (2 * h)
    sigma2 = np.asarray(jax.nn.sigmoid(st.gamma), np.float64)
    ok = np.ones_like(fd, bool)
    kinks = sched.kinks()  # leave out t within 2h of a kink (where β jumps)
    if kinks is not None:
        near = np.abs(np.asarray(ts)[:, None] - np.asarray(kinks)[None, :]) <= 2 * h
        ok &= ~near.any(axis=1, keepdims=True)
    beta = np.asarray(st.beta, np.float64)
    np.testing.assert_allclose(beta[ok], (sigma2 * fd)[ok], rtol=5e-3, atol=1e-6)
    # the rest of the noising state (docs/maths.md §2)
    np.testing.assert_allclose(st.gamma, vmap_t(sched, ts), rtol=1e-6, atol=ATOL_F32)
    np.testing.assert_allclose(st.alpha**2 + st.sigma**2, 1.0, atol=1e-6)
    np.testing.assert_allclose(st.sigma**2, sigma2, rtol=1e-5)
    assert np.all(beta >= 0)  # γ is non-decreasing
    assert st.gamma.shape == (len(ts), D)


@pytest.mark.parametrize("kind", KINDS)
def test_gamma_is_increasing_and_matches_endpoints(kind):
    sched = schedule_of_kind(kind)
    ts = jnp.linspace(0.0, 1.0, T)
    g = np.asarray(vmap_t(sched, ts))
    assert np.all(np.diff(g, axis=0) >= -1e-5)
    gt = g - np.asarray(sched.rho)
    # every family, basis and prior ends at the N(0, I) prior (the check would refuse it)
    rep = schedules.endpoint_report(sched)
    assert rep["num_below"] == 0 and rep["worst_sigma2_at_1"] >= schedules.MIN_TERMINAL_SIGMA2
    if kind in ("scalar_linear", "cosine"):
        np.testing.assert_allclose(g[0], schedules.VDM_GAMMA_MIN, atol=1e-4)
        np.testing.assert_allclose(g[-1], schedules.VDM_GAMMA_MAX, atol=1e-4)
    elif kind in LINEAR:
        e = np.asarray(sched.effective_labels(), np.float64)
        rho = np.asarray(sched.rho, np.float64)
        top = np.maximum(GAMMA_NOISE, GAMMA_END - np.minimum(rho, 0.0))  # T_i
        np.testing.assert_allclose(sched.terminal_targets(), top, rtol=1e-6)
        stretch = max(0.0, np.max(top - GAMMA_NOISE - (e - e.min())))
        # t = 0: true log-SNR high; t = 1: both γ̃ and γ reach γ_end (σ² ≥ sigmoid(γ_end))
        assert gt[0].max() <= GAMMA_DEN + 1e-5
        assert np.all(gt[-1] >= top - 1e-4) and np.all(g[-1] >= GAMMA_END - 1e-4)
        assert stretch > 0  # these unwhitened bases need it: their small components
        if sched.clip:  # clipped: γ̃_i spans exactly [γ̃_den, T_i]
            np.testing.assert_allclose(gt[0], GAMMA_DEN, atol=1e-5)
            np.testing.assert_allclose(gt[-1], top, atol=1e-4)
        else:  # γ̃_i(0) = γ̃_den − (e_max − e_i), γ̃_i(1) = γ̃_noise + (e_i − e_min) + Δ
            np.testing.assert_allclose(gt[0], GAMMA_DEN - (e.max() - e), atol=1e-4)
            np.testing.assert_allclose(gt[-1], GAMMA_NOISE + (e - e.min()) + stretch, atol=1e-4)
        np.testing.assert_allclose(gt[0, np.argmax(e)], GAMMA_DEN, atol=1e-5)  # starts first


@pytest.mark.parametrize("whiten", [False, True])
def test_autoregressive_limit_changes_one_block_at_a_time(whiten):
    """K blocks by label, lowest label generated first; each block moves from γ̃_den to its
    T_i only inside its own window [(K−1−k)/K, (K−k)/K]; the end points equal the clipped
    (matched) linear family's."""
    basis = unwhitened("haar", levels=2).with_prior(whiten)
    sched = make_schedule("autoregressive", basis, labels="level")
    level = np.asarray(basis.label("level")).astype(int)
    K = level.max() + 1
    np.testing.assert_array_equal(np.asarray(sched.block), level)  # one block per level
    ts = np.linspace(0.0, 1.0, 2001)
    st = states(sched, jnp.asarray(ts, jnp.float32))
    beta, gt = np.asarray(st.beta), np.asarray(st.gamma) - np.asarray(sched.rho)
    moving = np.stack([(beta[:, level == k] > 0).any(axis=1) for k in range(K)], axis=1)
    assert moving.sum(axis=1).max() == 1 and moving.any(axis=0).all()
    for k in range(K):  # block k moves exactly inside its window
        inside = (ts > (K - 1 - k) / K + 1e-3) & (ts < (K - k) / K - 1e-3)
        outside = (ts < (K - 1 - k) / K - 1e-3) | (ts > (K - k) / K + 1e-3)
        assert moving[inside, k].all() and not moving[outside, k].any()
    # the coarsest level (label 0) is generated first = noised last
    assert np.argmax(moving[:, 0]) > np.argmax(moving[:, K - 1])
    clipped = make_schedule("soft", basis, labels="level", a=2.0, clip=True)
    np.testing.assert_allclose(gt[0], GAMMA_DEN, atol=1e-5)
    np.testing.assert_allclose(gt[-1], np.asarray(clipped.terminal_targets()), atol=1e-4)
    np.testing.assert_allclose(gt[-1], np.asarray(clipped.gamma_tilde(1.0)), atol=1e-4)
    assert schedules.endpoint_report(sched)["num_below"] == 0
    # equal-size blocks by label rank
    np.testing.assert_array_equal(schedules.label_blocks(np.arange(12.0), 3),
                                  np.repeat(np.arange(3), 4))
    np.testing.assert_array_equal(schedules.label_blocks(np.array([2.0, 0, 0, 1]), None),
                                  [2, 0, 0, 1])


def test_unwhitened_end_points_reach_the_prior_where_window_targets_alone_do_not():
    """Digits-like pixels (variances 1e-6 … 1): the window targets alone (γ_end ≤ γ̃_noise, the
    old definition) leave tiny components far from N(0, I), and the check refuses that; the
    default end points reach it, with the generation order and relative timing unchanged."""
    basis = bases.make_basis("pixel", SHAPE, variance=np.geomspace(1.0, 1e-6, D))
    old = make_schedule("column", basis, b=0.5, gamma_end=-100.0)  # T_i = γ̃_noise: no stretch
    new = make_schedule("column", basis, b=0.5)
    s_old = np.asarray(jax.nn.sigmoid(old.gamma(1.0)))
    assert s_old.min() < 1e-4 and np.sum(s_old < 0.5) > D // 4  # the defect, reproduced
    with pytest.raises(ValueError) as e:
        schedules.check_endpoints(old, where="config.schedule")
    msg = one_line(e)
    assert "prior" in msg and f"of {D} components" in msg and "gamma_end" in msg
    rep = schedules.check_endpoints(new)
    assert rep["worst_sigma2_at_1"] >= float(jax.nn.sigmoid(GAMMA_END)) - 1e-6
    assert rep["prior_bpd"] < 0.01 and rep["min_log_snr_at_0"] >= -GAMMA_DEN - 1e-5
    # same order and relative timing: every window time scales by one factor
    w_old, w_new = old.windows(), new.windows()
    scale = np.asarray(w_new.end)[0] / np.asarray(w_old.end)[0]
    assert 0 < scale < 1
    np.testing.assert_allclose(scale, float(w_new.t_star), rtol=1e-5)  # the generation phase
    assert 1.0 - float(w_new.t_star) <= schedules.TAIL + 1e-6  # the tail takes ≤ 20% of time
    np.testing.assert_allclose(np.asarray(w_new.start), scale * np.asarray(w_old.start), atol=1e-6)
    np.testing.assert_allclose(np.asarray(w_new.end), scale * np.asarray(w_old.end), atol=1e-6)
    # whitened, γ_end = γ̃_noise reproduces the window-only schedule exactly (no stretch)
    wh = basis.with_prior(True)
    ts = jnp.linspace(0.0, 1.0, T)
    np.testing.assert_array_equal(
        vmap_t(make_schedule("column", wh, b=0.5, gamma_end=GAMMA_NOISE), ts),
        vmap_t(make_schedule("column", wh, b=0.5, gamma_end=-100.0), ts),
    )


def test_config_front_end_refuses_a_schedule_that_misses_the_prior():
    basis = unwhitened("pixel")
    with pytest.raises(ValueError) as e:
        schedules.schedule_from_config({"name": "scalar_linear", "gamma_max": 1.0}, basis)
    assert "config.schedule 'scalar_linear'" in one_line(e)
    # checked at every corner of the trained family range too
    fn = schedules.get_family("function")
    assert fn.param_names == ()
    sched = schedules.schedule_from_config({"name": "column", "b": 0.3}, basis,
                                           family={"b": (0.0, 0.9)})
    assert sched.name == "column"
    corners = schedules.family_corners(sched, {"b": (0.0, 0.9)})
    assert len(corners) == 3 and corners[0] is None


# ---------------------------------------------------------------------------- identities
@pytest.mark.parametrize("name", bases.registered_bases())
def test_standard_diffusion_identity_is_exact(name):
    """Unwhitened, a = 1, variance labels: every γ_i(t) is bit-identical (docs/maths.md §3)."""
    basis = unwhitened(name)
    assert np.ptp(np.asarray(basis.rho)) > 1.0  # the components do differ
    sched = make_schedule("soft", basis, labels="variance", a=1.0)
    ts = jnp.linspace(0.0, 1.0, T)
    eager = np.stack([np.asarray(sched.gamma(t)) for t in ts[::4]])
    jitted = np.asarray(vmap_t(sched, ts, {"a": jnp.float32(1.0)}))
    vmapped = np.asarray(jax.jit(jax.vmap(sched.gamma))(ts, {"a": jnp.ones(len(ts))}))
    for g in (eager, jitted, vmapped):
        np.testing.assert_array_equal(g, g[:, :1] * np.ones_like(g))
    np.testing.assert_allclose(jitted, vmapped, rtol=1e-6, atol=ATOL_F32)
    assert schedules.is_standard_diffusion(sched)
    # β equal too (derivative of identical γ), hence one shared white-noise process
    beta = np.asarray(states(sched, ts).beta)
    np.testing.assert_array_equal(beta, beta[:, :1] * np.ones_like(beta))
    # ... and only at a = 1 with that prior
    assert not schedules.is_standard_diffusion(sched, {"a": jnp.float32(0.8)})
    assert not schedules.is_standard_diffusion(
        make_schedule("soft", basis.with_prior(True), labels="variance", a=1.0))


@pytest.mark.parametrize("name", bases.registered_bases())
def test_a_zero_shares_one_true_snr(name):
    for whiten in (False, True):
        basis = unwhitened(name).with_prior(whiten)
        ts = jnp.linspace(0.0, 1.0, T)
        for sched in (make_schedule("soft", basis, labels="variance", a=0.0),
                      make_schedule("soft_mixed", basis, labels="variance", mix_labels="index",
                                    a=0.0, r=0.5)):
            gt = np.asarray(vmap_t(sched, ts, method="gamma_tilde"))
            np.testing.assert_allclose(gt, gt[:, :1] * np.ones_like(gt), atol=2e-6)
            # one shared path from γ̃_den through γ̃_noise (at t*) on to max_i T_i (at t = 1)
            t_of_s, t_star, extra = path_times(sched)
            top = float(np.max(sched.terminal_targets()))
            assert extra >= GAMMA_END - GAMMA_NOISE - 1e-6 and 1 - t_star <= schedules.TAIL
            s_grid = np.linspace(0.0, top - GAMMA_DEN, 2001)
            expected = np.interp(np.asarray(ts), t_of_s(s_grid), GAMMA_DEN + s_grid)
            np.testing.assert_allclose(gt[:, 0], expected, atol=1e-4)
            np.testing.assert_allclose(gt[-1, 0], top, atol=1e-4)
            # whitened (ρ = 0): standard diffusion with the variance-matched prior
            assert schedules.is_standard_diffusion(sched) == whiten


# ---------------------------------------------------------------------------- windows
@pytest.mark.parametrize("kind", CLIPPED)
def test_clipped_windows_start_and_end_where_the_maths_says(kind):
    sched = schedule_of_kind(kind)
    e = np.asarray(sched.effective_labels(), np.float64)
    big_e = e.max() - e.min()
    assert big_e > 0
    rho = np.asarray(sched.rho, np.float64)
    top = np.asarray(sched.terminal_targets(), np.float64)
    t_of_s, t_star, _ = path_times(sched)
    start, end, settle = (np.asarray(w, np.float64) for w in sched.windows()[:3])
    # docs/maths.md §3: γ̃_i = γ̃_den + (e_i − e_max) + s(t): start at s = e_max − e_i, window
    # end W later (inside the generation phase [0, t*]), settle when γ̃_i reaches T_i
    np.testing.assert_allclose(start, t_of_s(e.max() - e), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(end, t_of_s(e.max() - e + W), rtol=1e-5)
    np.testing.assert_allclose(end, (e.max() - e + W) * t_star / (W + big_e), rtol=1e-5)
    np.testing.assert_allclose(settle, t_of_s(e.max() - e + top - GAMMA_DEN), rtol=1e-5)
    assert start.min() == 0.0 and settle.max() <= 1.0 + 1e-6
    # γ̃_i hits γ̃_den at its start, γ̃_noise at its window end, T_i when it settles
    for times, level in ((start, GAMMA_DEN), (end, GAMMA_NOISE), (settle, top)):
        g = np.asarray(vmap_t(sched, jnp.asarray(times, jnp.float32))) - rho
        np.testing.assert_allclose(np.diag(g), level, atol=2e-4)
    # β = 0 before the start and after settling, > 0 in between; γ̃ clipped to [γ̃_den, T_i]
    ts = np.linspace(0.0, 1.0, 201)
    st = states(sched, jnp.asarray(ts, jnp.float32))
    beta = np.asarray(st.beta)
    gt = np.asarray(st.gamma) - rho
    t = ts[:, None]
    before, after = t < start - 1e-4, t > settle + 1e-4
    inside = (t > start + 1e-4) & (t < settle - 1e-4)
    assert before.any() and inside.any()
    assert np.all(beta[before | after] == 0.0)
    assert np.all(beta[inside] > 0.0)
    np.testing.assert_allclose(gt[before], GAMMA_DEN, atol=1e-5)
    np.testing.assert_allclose(gt[after], np.broadcast_to(top, gt.shape)[after], atol=1e-4)
    assert gt.min() >= GAMMA_DEN - 1e-5 and np.all(gt <= top + 1e-4)
    # the adaptive solvers step onto exactly these kinks (and t*, where the path speeds up)
    np.testing.assert_allclose(np.asarray(sched.kinks()),
                               np.concatenate([start, settle, [t_star]]), rtol=1e-5, atol=1e-7)


def test_column_schedule_generates_the_left_column_first():
    """Pin the generation order: left column (label 0) is generated FIRST.

    (The official GUD code generates column 0 LAST while its docstring says first.)
    Generating = reverse time t: 1 → 0. A column is done when its γ̃ reaches γ̃_den, i.e. at
    the start of its forward window; the left column must have the LATEST window.
    """
    basis = unwhitened("pixel")
    w = SHAPE[1]
    b = 0.5
    sched = make_schedule("column", basis, b=b)
    col = np.asarray(basis.label("column")).astype(int)
    start, end, _ = (np.asarray(w) for w in sched.windows()[:3])
    col_start = np.array([start[col == k][0] for k in range(w)])
    assert np.all(np.diff(col_start) < 0)  # strictly: column k+1 starts before column k
    assert col_start[0] == start.max() and col_start[-1] == 0.0
    # simulate reverse time and record when each column becomes clean
    ts = np.linspace(1.0, 0.0, 401)
    gt = np.asarray(vmap_t(sched, jnp.asarray(ts, jnp.float32), method="gamma_tilde"))
    clean = gt <= GAMMA_DEN + 1e-5  # (T, D)
    done_at = np.array([np.argmax(clean[:, col == k].all(axis=1)) for k in range(w)])
    np.testing.assert_array_equal(np.argsort(done_at, kind="stable"), np.arange(w))
    assert np.all(np.diff(done_at) > 0)
    # at the moment column 0 is clean, every other column is still noisier
    t0 = col_start[0]
    g0 = np.asarray(sched.gamma_tilde(jnp.float32(t0 - 1e-3)))
    assert np.all(g0[col == 0] <= GAMMA_DEN + 1e-5) and np.all(g0[col > 0] > GAMMA_DEN + 1e-3)
    # the sequential offset form inside the generation phase [0, t*] (t* = the end of the
    # last window): window length (1 − b)·t*, column l starts at b·(l_max − l)·t*
    colpos = col / (w - 1)
    t_star = end.max()
    np.testing.assert_allclose(end - start, (1 - b) * t_star, rtol=1e-5)
    np.testing.assert_allclose(start, b * (1.0 - colpos) * t_star, rtol=1e-5, atol=1e-7)


def test_haar_column_at_a0_is_the_column_schedule_per_subband():
    # Whitened, so every sub-band shares the terminal targets and hence the time stretch
    # (unwhitened, the stretch is one factor for the whole image: equal up to time scaling).
    basis = unwhitened("haar", (8, 8, 1), levels=2).with_prior(True)  # sub-bands ≥ 2 cols
    b = 0.35
    hc = make_schedule("haar_column", basis, a=0.0, b=b)
    ts = jnp.linspace(0.0, 1.0, T)
    g_hc = np.asarray(vmap_t(hc, ts))
    e_hc = np.asarray(hc.effective_labels())
    groups = np.asarray(basis.groups)
    colpos = np.asarray(basis.label("colpos"))
    rho = np.asarray(basis.rho)
    assert basis.num_groups == 7
    for g in range(basis.num_groups):
        band = groups == g
        assert colpos[band].min() == 0 and colpos[band].max() == 1
        col = make_schedule("column", dim=int(band.sum()), rho=rho[band],
                            labels=colpos[band], b=b)
        np.testing.assert_allclose(e_hc[band], np.asarray(col.effective_labels()), atol=1e-6)
        np.testing.assert_allclose(g_hc[:, band], np.asarray(vmap_t(col, ts)), atol=1e-5)
    # and with b = 0 it is the clipped soft schedule on the level labels
    a = 0.8
    hc0 = make_schedule("haar_column", basis, a=a, b=0.0)
    soft = make_schedule("soft", basis, labels="level", a=a, clip=True)
    np.testing.assert_allclose(vmap_t(hc0, ts), vmap_t(soft, ts), atol=1e-6)
    # levels are noised coarse-last: the coarsest LL (level 0) has the latest window
    start = np.asarray(hc0.windows().start)
    level = np.asarray(basis.label("level"))
    assert start[level == 0].min() > start[level == 2].max()


def test_b_a_conversion():
    for b in (0.0, 0.1, 0.3, 0.5, 0.9, 0.99):
        np.testing.assert_allclose(a_to_b(b_to_a(b)), b, rtol=1e-12, atol=1e-15)
    for a in (0.0, 0.5, 3.0, 100.0):
        np.testing.assert_allclose(b_to_a(a_to_b(a)), a, rtol=1e-12)
    assert b_to_a(0.0) == 0.0  # b → 0: diffusion
    np.testing.assert_allclose(b_to_a(0.5), W)  # b = 0.5: a = W
    np.testing.assert_allclose(b_to_a(jnp.float32(0.5)), W)  # traceable
    assert b_to_a(0.999) > 500 * W  # b → 1: autoregression
    # b = 0 gives one shared γ for a unit-variance basis: standard diffusion
    unit = bases.make_basis("pixel", SHAPE)
    assert schedules.is_standard_diffusion(make_schedule("column", unit, b=0.0))
    # b is the offset fraction of the windows: E/(W + E) = b for labels on [0, 1]
    for b in (0.2, 0.5, 0.8):
        sched = make_schedule("column", unit, b=b)
        e = np.asarray(sched.effective_labels(), np.float64)
        np.testing.assert_allclose(np.ptp(e) / (W + np.ptp(e)), b, rtol=1e-5)


# ---------------------------------------------------------------------------- jit / vmap
FAMILIES = {
    "soft": [{"a": 0.3}, {"a": 1.7}],
    "soft_mixed": [{"a": 0.5, "r": 0.0}, {"a": 1.2, "r": 0.9}],
    "column": [{"b": 0.2}, {"b": 0.7}],
    "haar_column": [{"a": 0.0, "b": 0.1}, {"a": 1.0, "b": 0.6}],
}


@pytest.mark.parametrize("kind", sorted(FAMILIES))
def test_jit_vmap_in_t_and_params_without_retracing(kind):
    sched = schedule_of_kind(kind)
    assert set(sched.param_names) == set(FAMILIES[kind][0])
    traces = []

    @jax.jit
    def gamma_and_beta(sched, t, params):
        traces.append(1)  # Python side effect: once per trace
        st = process.noise_state(sched, t, params)
        return st.gamma, st.beta

    f32 = lambda p: {k: jnp.float32(v) for k, v in p.items()}
    outs = []
    for t, p in zip((0.2, 0.6), FAMILIES[kind], strict=True):
        outs.append(gamma_and_beta(sched, jnp.float32(t), f32(p)))
    # the same kind for another basis (other ρ, labels, constants) of the same size
    other = {
        "soft": lambda: make_schedule("soft", unwhitened("dct"), labels="frequency"),
        "soft_mixed": lambda: make_schedule("soft_mixed", unwhitened("dct")),
        "column": lambda: make_schedule("column", unwhitened("pixel").with_prior(True)),
        "haar_column": lambda: make_schedule(
            "haar_column", unwhitened("haar", levels=2).with_prior(True), gamma_den=-5.0),
    }[kind]()
    assert not np.array_equal(other.rho, sched.rho) or not np.array_equal(other.labels,
                                                                          sched.labels)
    gamma_and_beta(other, jnp.float32(0.4), f32(FAMILIES[kind][0]))
    assert len(traces) == 1, f"{kind}: retraced for new parameter values or a new schedule"
    assert not np.allclose(outs[0][0], outs[1][0])
    np.testing.assert_allclose(outs[1][0], vmap_t(sched, jnp.full(T, 0.6),
                                                  f32(FAMILIES[kind][1]))[0], atol=1e-5)
    # vmap over t and params together (one parameter set per example)
    n = 6
    ts = jnp.linspace(0.1, 0.9, n)
    lo, hi = FAMILIES[kind]
    batch = {k: jnp.linspace(lo[k], hi[k], n, dtype=jnp.float32) for k in lo}
    g = jax.jit(jax.vmap(sched.gamma))(ts, batch)
    assert g.shape == (n, D)
    for i in range(n):
        pi = {k: v[i] for k, v in batch.items()}
        g_i = vmap_t(sched, jnp.full(T, ts[i]), pi)[0]
        np.testing.assert_allclose(g[i], g_i, rtol=1e-6, atol=1e-5)
    # the training-side helper: per-example params
    st = jax.jit(process.batch_noise_state)(sched, ts, batch)
    np.testing.assert_allclose(st.gamma, g, rtol=1e-6, atol=1e-6)
    # params() fills defaults and overrides only the named ones
    p = sched.params(**{k: 0.25 for k in list(lo)[:1]})
    assert set(p) == set(lo) and float(p[list(lo)[0]]) == 0.25


def test_scalar_kinds_jit_without_retracing():
    traces = []

    @jax.jit
    def g(sched, t):
        traces.append(1)
        return sched.gamma(t)

    s1 = make_schedule("scalar_linear", dim=D)
    s2 = make_schedule("scalar_linear", dim=D, gamma_min=-10.0, gamma_max=8.0)
    np.testing.assert_allclose(g(s1, jnp.float32(0.0)), schedules.VDM_GAMMA_MIN, atol=1e-5)
    np.testing.assert_allclose(g(s2, jnp.float32(1.0)), 8.0, atol=1e-5)
    assert len(traces) == 1  # γ_min/γ_max are data, not Python constants


# ---------------------------------------------------------------------------- errors
def test_schedule_errors_are_one_line_and_name_allowed_values():
    basis = unwhitened("pixel")
    with pytest.raises(ValueError) as e:
        make_schedule("linear_soft", basis)
    msg = one_line(e)
    assert "linear_soft" in msg and all(n in msg for n in schedules.registered_schedules())
    with pytest.raises(ValueError) as e:
        make_schedule("soft", basis, labels=np.zeros(D + 1))
    assert str(D) in one_line(e)
    with pytest.raises(ValueError) as e:
        make_schedule("soft_mixed", dim=D, labels=np.zeros(D), mix_labels=np.zeros((D, 2)))
    one_line(e)
    with pytest.raises(ValueError) as e:
        make_schedule("soft", basis, labels="frequency")  # pixel has no frequency labels
    assert "column" in one_line(e)
    with pytest.raises(ValueError) as e:
        make_schedule("soft", dim=D, rho=np.zeros(3))
    one_line(e)
    with pytest.raises(ValueError) as e:
        make_schedule("soft", dim=D, gamma_den=3.0, gamma_noise=-7.0)
    one_line(e)
    for b in (-0.1, 1.0):
        with pytest.raises(ValueError) as e:
            make_schedule("column", basis, b=b)
        one_line(e)
    with pytest.raises(ValueError) as e:
        make_schedule("function", dim=D)
    one_line(e)
    with pytest.raises(ValueError) as e:
        make_schedule("soft")  # neither basis nor dim
    one_line(e)
    # unknown family parameter
    sched = make_schedule("column", basis)
    with pytest.raises(ValueError) as e:
        sched.params(a=1.0)
    msg = one_line(e)
    assert "'a'" in msg and "b" in msg.split("allowed:")[1]
    with pytest.raises(ValueError) as e:
        make_schedule("scalar_linear", dim=D).params(a=1.0)
    assert "none" in one_line(e)
    # ... also when passed straight to gamma (a typo'd key must not silently use the default)
    with pytest.raises(ValueError) as e:
        sched.gamma(0.5, {"bb": 0.3})
    assert "'bb'" in one_line(e)
    with pytest.raises(ValueError) as e:
        make_schedule("cosine", dim=D).effective_labels()
    one_line(e)
    # config front end
    with pytest.raises(ValueError) as e:
        schedules.schedule_from_config({"name": "soft", "softness": 2.0}, basis)
    assert "softness" in one_line(e) and "labels" in str(e.value)
    with pytest.raises(ValueError) as e:
        schedules.schedule_from_config({"a": 2.0}, basis)
    assert all(n in one_line(e) for n in schedules.registered_schedules())
    with pytest.raises(ValueError) as e:  # an option of another family
        schedules.schedule_from_config({"name": "soft", "b": 0.3}, basis)
    assert "'b'" in one_line(e) and "labels" in str(e.value)
    ok = schedules.schedule_from_config({"name": "soft", "a": 0.5, "clip": True}, basis)
    assert ok.kind == "soft" and ok.clip
    # the registry refuses a second family under a taken name
    with pytest.raises(ValueError) as e:
        schedules.register_schedule("soft")(type(ok))
    assert "already registered" in one_line(e)
    # basis-side errors the schedule depends on
    with pytest.raises(ValueError) as e:
        bases.make_basis("wavelets", SHAPE)
    assert all(n in one_line(e) for n in bases.registered_bases())
    with pytest.raises(ValueError) as e:
        bases.make_basis("pixel", SHAPE, variance=np.r_[0.0, np.ones(D - 1)])
    one_line(e)
    with pytest.raises(ValueError) as e:
        bases.make_basis("haar", (12, 8, 1))
    assert "divisible" in one_line(e)
