#!/usr/bin/env python3
"""Augmented images/s on ONE core at 150x150, Rust (sd-augment) vs Keras' ImageDataGenerator
and vs the scipy call it is built on, measured in one run on the same machine, plus a parity
check of our output against scipy.ndimage.affine_transform on the same matrices.

    python benches/augment/bench.py [--data ../shared/data/dogs-vs-cats/train] [--n 200] [--size 150]

Needs numpy + scipy (Keras 3 with KERAS_BACKEND=numpy, which imports jax, is optional).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# One core for everything: the comparison is per core.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[var] = "1"
os.environ.setdefault("KERAS_BACKEND", "numpy")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

TUTORIAL = dict(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2, shear_range=0.2,
                zoom_range=0.2, horizontal_flip=True, fill_mode="nearest")


def rate(fn, images, seconds):
    """(images per wall second, images per CPU second of this process)."""
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for x in images:
            fn(x)
        done += len(images)
    return done / (time.perf_counter() - start), done / (time.process_time() - cpu)


def rust(repo, data, n, size, dump):
    cmd = ["cargo", "run", "--release", "-q", "-p", "sd-augment", "--example", "augment_bench", "--",
           str(data), str(n), str(size), str(dump)]
    out = subprocess.run(cmd, cwd=repo, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    repo = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser()
    # The shared Kaggle photos next to the checkout (any ancestor's shared/), else the sample.
    found = [p / "shared/data/dogs-vs-cats/train" for p in repo.parents if (p / "shared/data/dogs-vs-cats/train").is_dir()]
    ap.add_argument("--data", default=str(found[0] if found else repo / "data/sample/train"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", type=int, default=150)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as dump:
        dump = Path(dump)
        r1 = rust(repo, args.data, args.n, args.size, dump)
        inputs_u8 = np.load(dump / "inputs.npy")
        ours_u8 = np.load(dump / "outputs.npy").astype(np.float32)
        mats = np.load(dump / "matrices.npy")
    # Keras works on float32 arrays (img_to_array); the same pixels as the Rust run.
    inputs = inputs_u8.astype(np.float32)

    results = {}
    try:
        try:
            from keras.src.legacy.preprocessing.image import ImageDataGenerator
        except ImportError:
            from keras.preprocessing.image import ImageDataGenerator
        import keras
        gen = ImageDataGenerator(**TUTORIAL)
        results[f"keras {keras.__version__} random_transform"] = rate(gen.random_transform, inputs, args.seconds)
    except Exception as e:  # noqa: BLE001
        print(f"(keras not measured: {e})", file=sys.stderr)

    # What Keras runs per image: one scipy affine_transform per channel (order=1), on the
    # matrices our draws produced.
    def scipy_transform(i):
        x = inputs[i]
        m = mats[i]
        return np.stack([ndimage.affine_transform(x[..., c], m[:, :2], m[:, 2], order=1, mode="nearest")
                         for c in range(3)], axis=-1)
    results["scipy affine_transform x3 channels"] = rate(scipy_transform, range(len(inputs)), args.seconds)

    r2 = rust(repo, args.data, args.n, args.size, dump)  # again, to bracket the Python timings

    def ours(mode, clock):
        return (r1[f"rust_images_per_{clock}_{mode}"] + r2[f"rust_images_per_{clock}_{mode}"]) / 2

    # Parity: scipy on the same inputs and matrices vs our uint8 output.
    ref = np.stack([scipy_transform(i) for i in range(len(inputs))])
    diff = np.abs(ref - ours_u8)
    print(f"{len(inputs)} images, {args.size}x{args.size}, tutorial settings, one core; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"  {'':40s} {'per wall s':>11s} {'per CPU s':>11s}   Rust is (wall, CPU)")
    for mode in ("nearest", "reflect", "wrap", "constant"):
        print(f"  {'sd-augment, fill ' + mode:40s} {ours(mode, 's'):11.0f} {ours(mode, 'cpu_s'):11.0f}")
    for name, (wall, cpu) in results.items():
        print(f"  {name:40s} {wall:11.0f} {cpu:11.0f}   "
              f"{ours('nearest', 's') / wall:5.1f}x {ours('nearest', 'cpu_s') / cpu:5.1f}x")
    print(f"parity vs scipy (same matrices, nearest): mean |diff| {diff.mean():.4f}, "
          f"max {diff.max():.3f}, pixels off by > 1: {(diff > 1).mean() * 100:.4f}%")


if __name__ == "__main__":
    main()
