"""Fréchet distances of an evaluation: feature extractors, reference statistics, records.

Generated images (EMA params, config sampler and steps) are quantised to uint8 like real
images and mapped back with centre dequantisation (`as_real_images`), then compared with
the test images in the features of a small classifier trained on the same data set:
"FD-<dataset>-classifier", not FID (`gudjax.features`). With config.eval.inception_weights
(a local .npz of pytorch-fid's Inception weights, `gudjax.inception`) the same samples also
give "FID" in standard InceptionV3 pool-3 features, reported under "fid" with the weights
file's sha256 (config.eval.features="inception": FID alone). `fd_train_vs_test` (train
images vs test images, same counts) is the floor a perfect model would reach with these
sample sizes. Every number carries its extractor, counts, sampler and steps (`fd_record`).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from gudjax import features, input_pipeline

log = logging.getLogger("gudjax")

#: Fréchet entries of an eval row: classifier features, standard FID (Inception pool-3)
FD_KEYS = ("fd", "fid")


def as_real_images(x, levels: int = 256) -> np.ndarray:
    """Generated x (at the data's L levels) → stored uint8 → centre-dequantised x at 256
    levels: processed exactly like the real test images the features see."""
    return input_pipeline.to_model_input(input_pipeline.to_uint8(x, levels))


def read_split(data_config, split: str, max_examples) -> np.ndarray:
    """uint8 images (N, H, W, C) of a split, at most `max_examples` (None: all)."""
    parts = list(
        input_pipeline.eval_batches(
            data_config, split=split, batch_size=512, max_examples=max_examples
        )
    )
    return np.concatenate(parts)


def fd_setup(config, s, workdir) -> dict:
    """Feature extractors with their reference statistics, keyed by report entry:
    'fd' = FD-<dataset>-classifier, 'fid' = standard FID (Inception pool-3). Each carries the
    train-vs-test floor (train images vs test images, same counts)."""
    kinds = features.feature_extractors(s)
    if not kinds:
        return {}
    extractors = {}
    if "classifier" in kinds:
        cache = s.get("classifier_dir") or os.path.join(workdir, "fd_classifier")
        extractors["fd"] = features.load_or_train_classifier(
            config.data,
            cache,
            steps=int(s["classifier_steps"]),
            batch_size=int(s["classifier_batch_size"]),
            lr=float(s["classifier_lr"]),
            seed=int(s["classifier_seed"]),
            max_train_examples=s.get("classifier_train_examples"),
        )
    if "inception" in kinds:
        from gudjax import inception

        extractors["fid"] = inception.InceptionFeatures(
            s["inception_weights"], batch_size=int(s.get("inception_batch_size") or 64)
        )
        log.info("FID features: %s", extractors["fid"].describe())
    ref_u8 = read_split(config.data, s["split"], s.get("fd_num_reference"))
    ref_x = input_pipeline.to_model_input(ref_u8)
    n_gen = int(s.get("fd_num_samples") or len(ref_u8))
    train_x = input_pipeline.to_model_input(read_split(config.data, "train", len(ref_u8)))
    out = {}
    for key, extractor in extractors.items():
        ref_mean, ref_cov = features.feature_stats(extractor(ref_x))
        floor = features.frechet_distance(
            *features.feature_stats(extractor(train_x)), ref_mean, ref_cov
        )
        out[key] = {
            "extractor": extractor,
            "ref_mean": ref_mean,
            "ref_cov": ref_cov,
            "num_reference": int(len(ref_u8)),
            "num_generated": n_gen,
            "fd_train_vs_test": {
                "value": floor,
                "num_train": int(len(train_x)),
                "num_test": int(len(ref_u8)),
            },
        }
    return out


def fd_record(fd_info, s) -> dict:
    """What is written next to every Fréchet number: extractor, counts, sampler, steps."""
    return {
        "feature_extractor": fd_info["extractor"].describe(),
        "num_generated": fd_info["num_generated"],
        "num_reference": fd_info["num_reference"],
        "reference": f"{s['split']} split, centre dequantisation",
        "sampler": s["sampler"],
        "steps": s["sampler_steps"],
        "generated_processing": "clipped to [-1, 1], quantised to uint8, centre dequantised",
    }


def fd_settings(fd_info, s) -> dict:
    ex = fd_info["extractor"]
    return {
        "name": ex.name,
        **fd_record(fd_info, s),
        "fd_train_vs_test": fd_info["fd_train_vs_test"],
        "extractor_details": ex.info,
    }
