"""The paper's experiment configs (docs/maths.md §9): every config × argument combination builds and
passes the checks training and evaluation make; the offline stand-in data set builds."""

import itertools
import os

import jax
import numpy as np
import pytest

from gudjax import bases, evaluate, experiment, input_pipeline, schedules, sweeps
from gudjax.config_base import load_config_file, parse_arg
from gudjax.datasets import photo_patches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_CONFIGS = {
    "cifar10_pixel": ("cifar10", "pixel", "scalar_linear"),
    "cifar10_pca": ("cifar10", "pca", "soft"),
    "cifar10_fourier": ("cifar10", "fourier", "soft_mixed"),
    "pcam_columns": ("patch_camelyon", "pixel", "column"),
    "cifar10_haar_columns": ("cifar10", "haar", "haar_column"),
}


def config_path(name: str) -> str:
    return os.path.join(ROOT, "configs", f"{name}.py")


def module_of(name: str):
    from experiments.sweep import load_config_module

    return load_config_module(config_path(name))


def arg_combos(module) -> list[str | None]:
    """Every combination of the config's declared ARGS (each absent or one of its values)."""
    names = list(module.ARGS)
    choices = [[None, *module.ARGS[n]] for n in names]
    out = []
    for combo in itertools.product(*choices):
        parts = [
            n if v == "" else f"{n}={v}" for n, v in zip(names, combo, strict=True) if v is not None
        ]
        out.append(",".join(parts) or None)
    return out


CASES = [(name, arg) for name in PAPER_CONFIGS for arg in arg_combos(module_of(name))]


@pytest.mark.parametrize(("name", "arg"), CASES, ids=[f"{n}:{a}" for n, a in CASES])
def test_config_builds_and_validates(name, arg):
    c = load_config_file(config_path(name), arg)
    runlocal = "runlocal" in parse_arg(arg)
    dataset, basis, schedule = PAPER_CONFIGS[name]
    assert (c.basis.name, c.schedule.name) == (basis, schedule)
    # runlocal must use the offline stand-in; the full configs the paper's data at 32×32×3.
    assert c.data.name == ("photo_patches" if runlocal else dataset)
    assert input_pipeline.image_shape(c.data) == (32, 32, 3)
    experiment.validate_config(c)  # what training checks first (batch vs 8 devices, names)
    settings = evaluate.eval_settings(c)  # what --mode=eval checks first (incl. the sweep)
    for point in settings["points"]:
        assert sweeps.out_of_range(point, dict(c.family), {}) == [], point
    bases.check_image_shape(c.basis.name, (32, 32, 3), **experiment.basis_options(c))
    if runlocal:
        assert c.train.num_steps <= 1000 and c.model.ch <= 32
    else:
        assert c.model.ch == 64 and c.train.num_steps >= 100_000


def test_full_configs_follow_the_paper():
    pca0 = load_config_file(config_path("cifar10_pca"), "whiten=0")
    pca1 = load_config_file(config_path("cifar10_pca"), "whiten=1")
    assert (pca0.basis.whiten, pca1.basis.whiten) == (False, True)
    assert tuple(pca0.family.a) == (0.4, 1.6) and pca0.schedule.labels == "variance"
    for b in (0.3, 0.5):
        c = load_config_file(config_path("pcam_columns"), f"b={b}")
        assert c.schedule.b == b and c.data.image_size == 32 and c.sample.extend_columns
    haar = load_config_file(config_path("cifar10_haar_columns"))
    assert haar.train.num_steps == 300_000 and haar.basis.whiten and haar.basis.levels == 3
    fourier = load_config_file(config_path("cifar10_fourier"))
    assert set(fourier.family) == {"a", "r"}
    # White-prior PCA and Fourier have a mean colour of variance ≫ 1: the Gaussian skip.
    assert pca0.model.gaussian_skip and pca1.model.gaussian_skip and fourier.model.gaussian_skip


def test_bad_config_argument_is_one_line_error():
    with pytest.raises(
        ValueError, match="unknown config argument 'whitne'.*allowed: runlocal, whiten"
    ):
        load_config_file(config_path("cifar10_pca"), "whitne=1")
    with pytest.raises(ValueError, match="b=1.5 must lie in"):
        load_config_file(config_path("pcam_columns"), "b=1.5")
    with pytest.raises(ValueError, match="whiten='maybe'"):
        load_config_file(config_path("cifar10_pca"), "whiten=maybe")


def _fitted_basis(name: str, whiten: bool, **opts):
    rng = np.random.default_rng(0)
    # Smooth random images (a power-law spectrum), like natural images but tiny: 8×8×3.
    white = rng.normal(size=(256, 8, 8, 3))
    k = np.sqrt(np.fft.fftfreq(8)[:, None] ** 2 + np.fft.fftfreq(8)[None] ** 2) + 0.1
    x = np.real(np.fft.ifft2(np.fft.fft2(white, axes=(1, 2)) / k[None, :, :, None], axes=(1, 2)))
    x = (0.5 * x / x.std()).astype(np.float32)
    return bases.fit_basis(name, [x], whiten=whiten, **opts)


def test_fourier_standard_diffusion_points_are_exact():
    """The points the Fourier config marks as standard diffusion have all γ_i(t) equal,
    and no other point of its evaluation grid does."""
    module = module_of("cifar10_fourier")
    c = module.get_config()
    basis = _fitted_basis("fourier", whiten=c.basis.whiten)
    sched = schedules.schedule_from_config(c.schedule, basis)
    marked = [{k: float(v) for k, v in p.items()} for p in module.STANDARD_DIFFUSION_POINTS]
    for point in marked:
        assert schedules.is_standard_diffusion(sched, sched.params(**point))
    grid = evaluate.eval_settings(c)["points"]
    assert any(p == marked[0] for p in grid)  # the marked point is on the grid
    for point in grid:
        if point not in marked:
            assert not schedules.is_standard_diffusion(sched, sched.params(**point)), point
    # r changes the ordering, not the label range: e spans a·span(−log λ) for every r.
    spans = [
        float(np.ptp(np.asarray(sched.effective_labels(sched.params(a=1.0, r=r)))))
        for r in (0.0, 1.0)
    ]
    np.testing.assert_allclose(spans[0], spans[1], rtol=1e-5)
    l2 = np.asarray(basis.label("log_frequency"))
    np.testing.assert_allclose(l2, np.log1p(np.asarray(basis.label("frequency"))), rtol=1e-6)


def test_pca_unwhitened_a1_is_standard_diffusion():
    c = load_config_file(config_path("cifar10_pca"), "whiten=0")
    basis = _fitted_basis("pca", whiten=False)
    sched = schedules.schedule_from_config(c.schedule, basis)
    assert schedules.is_standard_diffusion(sched, sched.params(a=1.0))
    assert not schedules.is_standard_diffusion(sched, sched.params(a=0.4))


def test_haar_columns_at_a0_is_the_column_schedule_in_every_subband():
    c = load_config_file(config_path("cifar10_haar_columns"))
    basis = _fitted_basis("haar", whiten=True, levels=int(c.basis.levels))
    sched = schedules.schedule_from_config(c.schedule, basis)
    e = np.asarray(sched.effective_labels(sched.params(a=0.0, b=0.5)))
    colpos = np.asarray(basis.label("colpos"))
    np.testing.assert_allclose(
        e, schedules.b_to_a(0.5) * (colpos - colpos.min()) / np.ptp(colpos), rtol=1e-5, atol=1e-6
    )


def test_photo_patches_builds_offline(tmp_path):
    data = input_pipeline.default_data_config()
    data.update(dict(name="photo_patches", image_size=32, channels=3, data_dir=str(tmp_path)))
    train = input_pipeline.load_split(data, "train")
    test = input_pipeline.load_split(data, "test")
    assert (len(train), len(test)) == (3451, 685)
    x = train.read([0, 1, len(train) - 1])
    assert x.shape == (3, 32, 32, 3) and x.dtype == np.uint8
    assert x.std() > 10  # real photo content, not flat tiles
    # The stored examples are the builder's tiles (TFDS reorders them when writing).
    rows = photo_patches.split_patches("test")
    stored_test = {bytes(test[i]) for i in range(len(test))}
    assert stored_test == {r["image"].tobytes() for r in rows}
    assert {int(r["scale"]) for r in rows} == set(photo_patches.SCALES)
    # Split by region: no tile is in both splits.
    assert not stored_test & {bytes(train[i]) for i in range(len(train))}
    # Downsampled (16×16) through the pipeline's area average.
    data.image_size = 16
    assert input_pipeline.load_split(data, "test")[0].shape == (16, 16, 3)


def test_photo_patches_split_is_by_region():
    """Tiles of the test split are cut only from the right TEST_FRACTION part of each photo."""
    img = photo_patches.load_photo("coffee")
    cut = int(round(photo_patches.TEST_FRACTION * img.shape[1]))
    test = [r for r in photo_patches.split_patches("test") if int(r["photo"]) == 1]
    for r in test:
        f, row, col = int(r["scale"]), int(r["row"]), int(r["col"])
        window = img[row * f : (row + 32) * f, cut + col * f : cut + (col + 32) * f]
        np.testing.assert_array_equal(photo_patches.area_downsample(window, f), r["image"])


def test_devices_for_validation():
    assert jax.device_count() == 8  # conftest: 8 fake CPU devices, so batch checks are real
