"""Tests of gudjax.input_pipeline and the offline `digits` TFDS builder (no downloads).

cifar10 / patch_camelyon are exercised through the real TFDS reading path on tiny fake
copies: a subclass of the TFDS builder (same name, version and features) writes random
images into tmp_path in ArrayRecord format, then the pipeline reads them as it would the
real data.
"""

import subprocess
import sys
import time

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import registered

from gudjax import input_pipeline as ip
from gudjax.datasets import digits as digits_lib

N_DIGITS = 1797


def _config(data_dir, **overrides):
    config = ip.default_data_config()
    config.data_dir = str(data_dir)
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    ip.load_split(_config(data_dir), "train")  # builds once for the module
    return data_dir


def _ids_and_images(source):
    examples = source.examples
    ids = np.array([examples[i]["id"] for i in range(len(examples))])
    return ids, source.read(range(len(source)))


# ---------------------------------------------------------------------------------------
# digits builder


def test_digits_builds_offline_fixed_split(digits_dir, tmp_path):
    config = _config(digits_dir)
    train, test = ip.load_split(config, "train"), ip.load_split(config, "test")
    assert len(train) + len(test) == N_DIGITS
    assert len(test) == 364  # every 5th example of each class
    train_ids, train_images = _ids_and_images(train)
    test_ids, test_images = _ids_and_images(test)
    assert not set(train_ids) & set(test_ids)
    assert sorted([*train_ids, *test_ids]) == list(range(N_DIGITS))
    for images in (train_images, test_images):
        assert images.shape[1:] == (8, 8, 1) and images.dtype == np.uint8
    assert train_images.min() == 0 and train_images.max() == 255
    # Values: k = round(v * 255 / 16) of scikit-learn's images.
    expected, labels = digits_lib.digits_arrays()
    np.testing.assert_array_equal(train_images, expected[train_ids])
    # Stratified: every class has ~1/5 of its examples in test.
    test_counts = np.bincount(labels[test_ids], minlength=10)
    assert np.all(np.abs(test_counts - np.bincount(labels) / 5) <= 1)
    # A second build (another directory) gives the same split and the same stored order.
    again = ip.load_split(_config(tmp_path / "again"), "test")
    ids2, images2 = _ids_and_images(again)
    np.testing.assert_array_equal(ids2, test_ids)
    np.testing.assert_array_equal(images2, test_images)


def test_default_data_dir_for_digits(monkeypatch, tmp_path):
    monkeypatch.setenv("GUDJAX_DATA_DIR", str(tmp_path / "gud"))
    config = ip.default_data_config()
    assert ip.resolve_data_dir(config) == str(tmp_path / "gud")
    monkeypatch.delenv("GUDJAX_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ip.resolve_data_dir(config) == str(tmp_path / "tensorflow_datasets")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    config.name = "cifar10"
    assert ip.resolve_data_dir(config) == str(tmp_path / "tfds")


# ---------------------------------------------------------------------------------------
# training batches


def test_train_batches_are_pure_functions_of_seed_and_step(digits_dir):
    config = _config(digits_dir, random_flip=True)
    a = ip.TrainData(config, global_batch_size=64, seed=3)
    b = ip.TrainData(config, global_batch_size=64, seed=3)
    other = ip.TrainData(config, global_batch_size=64, seed=4)
    assert a.local_batch_size == 64
    for step in (0, 1, 57, 1000):
        batch = a.batch(step)
        assert batch.shape == (64, 8, 8, 1) and batch.dtype == np.uint8
        np.testing.assert_array_equal(batch, b.batch(step))
        assert not np.array_equal(batch, other.batch(step))
    assert not np.array_equal(a.batch(0), a.batch(1))
    # Resuming at step k replays exactly the uninterrupted stream (prefetching or not).
    uninterrupted = a.iter_from(0)
    stream = [next(uninterrupted) for _ in range(8)]
    uninterrupted.close()
    resumed = b.iter_from(5)
    for step in (5, 6, 7):
        np.testing.assert_array_equal(next(resumed), stream[step])
    resumed.close()
    no_prefetch = a.iter_from(2, prefetch=0)
    np.testing.assert_array_equal(next(no_prefetch), stream[2])


def test_each_epoch_is_a_new_permutation(digits_dir):
    data = ip.TrainData(_config(digits_dir), global_batch_size=64, seed=0)
    n = data.num_examples
    steps = -(-2 * n // 64) + 1
    stream = np.concatenate([data.indices(s) for s in range(steps)])
    first, second = stream[:n], stream[n : 2 * n]
    np.testing.assert_array_equal(np.sort(first), np.arange(n))
    np.testing.assert_array_equal(np.sort(second), np.arange(n))
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, np.arange(n))


def test_hosts_get_disjoint_slices_of_the_single_host_batch(digits_dir):
    config = _config(digits_dir, random_flip=True)
    single = ip.TrainData(config, global_batch_size=64, seed=7)
    hosts = [
        ip.TrainData(config, global_batch_size=64, seed=7, process_index=p, process_count=2)
        for p in range(2)
    ]
    assert all(h.local_batch_size == 32 for h in hosts)
    for step in (0, 3, 22, 23):  # 22/23 straddle the first epoch boundary (1433 / 64)
        ids = [h.indices(step) for h in hosts]
        assert not set(ids[0]) & set(ids[1])
        np.testing.assert_array_equal(np.concatenate(ids), single.indices(step))
        np.testing.assert_array_equal(
            np.concatenate([h.batch(step) for h in hosts]), single.batch(step)
        )


def test_random_flip(digits_dir):
    plain = ip.TrainData(_config(digits_dir), global_batch_size=64, seed=1)
    flipped = ip.TrainData(_config(digits_dir, random_flip=True), global_batch_size=64, seed=1)
    source = plain.source
    n_flipped = 0
    for step in range(4):
        raw = source.read(plain.indices(step))
        np.testing.assert_array_equal(plain.batch(step), raw)  # never flipped
        batch = flipped.batch(step)
        is_flipped = flipped.flips(step)
        np.testing.assert_array_equal(batch[~is_flipped], raw[~is_flipped])
        np.testing.assert_array_equal(batch[is_flipped], raw[is_flipped][:, :, ::-1])
        n_flipped += is_flipped.sum()
    assert 0.3 < n_flipped / (4 * 64) < 0.7


def test_cache_changes_nothing_but_speed(digits_dir):
    cached = ip.TrainData(_config(digits_dir, cache=True), global_batch_size=32, seed=2)
    streamed = ip.TrainData(_config(digits_dir, cache=False), global_batch_size=32, seed=2)
    for step in (0, 45, 46):
        np.testing.assert_array_equal(cached.batch(step), streamed.batch(step))


def test_batch_size_must_divide_over_hosts(digits_dir):
    with pytest.raises(ValueError, match=r"config\.batch_size"):
        ip.TrainData(_config(digits_dir), global_batch_size=63, seed=0, process_count=2)


def test_unclosed_prefetch_iterator_exits_cleanly(digits_dir):
    # A daemon thread inside native code at interpreter exit aborts the process (rc 134).
    script = (
        "from gudjax import input_pipeline as ip\n"
        "c = ip.default_data_config()\n"
        f"c.data_dir = {str(digits_dir)!r}\n"
        "c.cache = False\n"
        "it = iter(ip.TrainData(c, global_batch_size=64, seed=0))\n"
        "[next(it) for _ in range(3)]\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()[-2000:]


# ---------------------------------------------------------------------------------------
# finite passes


def test_eval_batches_cover_the_test_split_once(digits_dir):
    config = _config(digits_dir)
    everything = ip.load_split(config, "test").materialize()
    batches = list(ip.eval_batches(config, batch_size=100))
    assert [len(b) for b in batches] == [100, 100, 100, 64]
    np.testing.assert_array_equal(np.concatenate(batches), everything)
    # Two hosts: same number of batches each; their rows interleave into the same pass.
    per_host = [
        list(ip.eval_batches(config, batch_size=100, process_index=p, process_count=2))
        for p in range(2)
    ]
    assert len(per_host[0]) == len(per_host[1]) == 4
    merged = np.concatenate([np.concatenate([a, b]) for a, b in zip(*per_host, strict=True)])
    np.testing.assert_array_equal(merged, everything)
    # pad=True: fixed shapes plus a mask, same examples.
    padded = [
        list(ip.eval_batches(config, batch_size=100, process_index=p, process_count=2, pad=True))
        for p in range(2)
    ]
    for host in padded:
        assert all(x.shape == (50, 8, 8, 1) and m.shape == (50,) for x, m in host)
    merged = np.concatenate(
        [np.concatenate([a[0][a[1]], b[0][b[1]]]) for a, b in zip(*padded, strict=True)]
    )
    np.testing.assert_array_equal(merged, everything)
    # max_examples: a prefix of the pass.
    head = np.concatenate(list(ip.eval_batches(config, batch_size=64, max_examples=70)))
    np.testing.assert_array_equal(head, everything[:70])


def test_fit_batches_cover_the_train_split_once(digits_dir):
    config = _config(digits_dir)
    batches = list(ip.fit_batches(config, batch_size=500))
    assert [len(b) for b in batches] == [500, 500, 433]
    np.testing.assert_array_equal(
        np.concatenate(batches), ip.load_split(config, "train").materialize()
    )


# ---------------------------------------------------------------------------------------
# errors a user can cause


def test_missing_tfds_dataset_fails_fast_with_the_build_command(tmp_path):
    config = _config(tmp_path, name="cifar10", image_size=32, channels=3)
    start = time.perf_counter()
    with pytest.raises(ip.DatasetNotFoundError) as info:
        ip.load_split(config, "train")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "\n" not in message
    assert f"tfds build cifar10 --file_format=array_record --data_dir={tmp_path}" in message
    assert isinstance(info.value, ValueError)
    with pytest.raises(ip.DatasetNotFoundError, match="tfds build"):
        ip.TrainData(config, global_batch_size=8, seed=0)


def test_tfrecord_only_dataset_is_reported(tmp_path):
    _prepare_fake(tfds.builder_cls("cifar10"), tmp_path, (32, 32, 3), 4, 2, 10)
    (info_file,) = tmp_path.glob("cifar10/*/dataset_info.json")
    info_file.write_text(info_file.read_text().replace('"array_record"', '"tfrecord"'))
    config = _config(tmp_path, name="cifar10", image_size=32, channels=3)
    with pytest.raises(ip.DatasetNotFoundError, match="tfds convert_format --dataset_version_dir="):
        ip.load_split(config, "train")


def test_unknown_split(digits_dir):
    with pytest.raises(ValueError, match="no split 'validation' \\(available: train, test\\)"):
        ip.load_split(_config(digits_dir), "validation")
    assert len(ip.load_split(_config(digits_dir), "train[:10%]")) == 143


def test_bad_config_values(digits_dir):
    with pytest.raises(ValueError, match="unknown data set 'x'; allowed: digits, cifar10, pat"):
        ip.image_shape(_config(digits_dir, name="x"))
    with pytest.raises(ValueError, match=r"config\.data\.image_size=7 .* native size 8"):
        ip.load_split(_config(digits_dir, image_size=7), "train")
    with pytest.raises(ValueError, match=r"config\.data\.image_size"):
        ip.image_shape(_config(digits_dir, name="patch_camelyon", image_size=40, channels=3))
    with pytest.raises(ValueError, match=r"config\.data\.channels"):
        ip.image_shape(_config(digits_dir, channels=3))
    assert ip.image_shape(_config(digits_dir, name="patch_camelyon", image_size=32, channels=3))
    assert ip.image_shape(_config(digits_dir)) == (8, 8, 1)
    assert ip.image_shape(_config(digits_dir, image_size=4)) == (4, 4, 1)


# ---------------------------------------------------------------------------------------
# TFDS data sets through the real reading path, on tiny fake copies


def _prepare_fake(module_builder, data_dir, shape, n_train, n_test, num_classes):
    """Writes random images under the real builder's name/version/features (ArrayRecord)."""
    with registered.skip_registration():

        class Fake(module_builder):
            name = module_builder.name

            def _split_generators(self, dl_manager):
                return {"train": self._make(n_train, 0), "test": self._make(n_test, 1)}

            def _make(self, n, seed):
                rng = np.random.default_rng(seed)
                for i in range(n):
                    image = rng.integers(0, 256, shape, dtype=np.uint8)
                    key = f"{seed}_{i}"
                    yield (
                        key,
                        {
                            "id": key,
                            "image": PIL.Image.fromarray(image),
                            "label": i % num_classes,
                        },
                    )

    Fake(data_dir=str(data_dir), file_format="array_record").download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )


def test_cifar10_path_on_fake_data(tmp_path):
    _prepare_fake(tfds.builder_cls("cifar10"), tmp_path, (32, 32, 3), 40, 12, 10)
    config = _config(tmp_path, name="cifar10", image_size=32, channels=3, random_flip=True)
    assert ip.image_shape(config) == (32, 32, 3)
    source = ip.load_split(config, "train")
    assert len(source) == 40 and source[0].shape == (32, 32, 3)
    data = ip.TrainData(config, global_batch_size=16, seed=0)
    streamed_config = config.copy_and_resolve_references()
    streamed_config.cache = False
    streamed = ip.TrainData(streamed_config, global_batch_size=16, seed=0)
    for step in (0, 2, 3):
        batch = data.batch(step)
        assert batch.shape == (16, 32, 32, 3) and batch.dtype == np.uint8
        np.testing.assert_array_equal(batch, streamed.batch(step))
    assert sum(len(b) for b in ip.eval_batches(config, batch_size=8)) == 12


def test_patch_camelyon_is_area_downsampled(tmp_path):
    _prepare_fake(tfds.builder_cls("patch_camelyon"), tmp_path, (96, 96, 3), 6, 2, 2)
    native = ip.load_split(
        _config(tmp_path, name="patch_camelyon", image_size=96, channels=3), "train"
    )
    small = ip.load_split(
        _config(tmp_path, name="patch_camelyon", image_size=32, channels=3), "train"
    )
    big = native.read(range(6)).astype(np.float64)
    expected = np.floor(big.reshape(6, 32, 3, 32, 3, 3).mean(axis=(2, 4)) + 0.5)
    np.testing.assert_array_equal(small.read(range(6)), expected.astype(np.uint8))
    np.testing.assert_array_equal(small[4], expected[4].astype(np.uint8))


# ---------------------------------------------------------------------------------------
# uint8 ↔ model space


def test_to_model_input():
    k = np.array([0, 1, 128, 255], np.uint8)
    x = ip.to_model_input(k)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, 2 * (k + 0.5) / 256 - 1, atol=1e-7)
    assert x.min() > -1 and x.max() < 1
    np.testing.assert_array_equal(ip.to_uint8(x), k)
    images = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 1), dtype=np.uint8)
    u = ip.to_model_input(images, dequantize="uniform", rng=np.random.default_rng(1))
    lo = 2 * images.astype(np.float64) / 256 - 1
    assert np.all(u >= lo - 1e-6) and np.all(u < lo + 2 / 256)
    np.testing.assert_array_equal(ip.to_uint8(u), images)

    import jax

    uj = ip.to_model_input(images, dequantize="uniform", rng=jax.random.key(0))
    assert isinstance(uj, jax.Array) and uj.dtype == np.float32 and uj.shape == images.shape
    np.testing.assert_array_equal(ip.to_uint8(uj), images)
    xj = ip.to_model_input(jax.numpy.asarray(images))
    assert isinstance(xj, jax.Array)
    np.testing.assert_allclose(np.asarray(xj), ip.to_model_input(images), atol=1e-7)
    with pytest.raises(ValueError, match="allowed: center, uniform"):
        ip.to_model_input(k, dequantize="bits")
    with pytest.raises(ValueError, match="needs rng"):
        ip.to_model_input(k, dequantize="uniform")
