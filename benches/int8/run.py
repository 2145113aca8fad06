#!/usr/bin/env python3
"""The int8 conv base against the float one, and fine-tuning against Keras, in one sitting on the
same photos:

    .cache/python/bin/python benches/int8/run.py [--data ../shared/data/dogs-vs-cats] [--images 256]
                                                 [--calibrate-images 64] [--accuracy] [--seeds 1]
                                                 [--no-finetune]

(it builds the release binaries first and prepares artifacts/bench-int8/model with
`prepare-model --quantize int8 --calibrate DATA/train`)

* Python onnxruntime, fp32 and int8 models, decode + resize + preprocessing included (PIL
  bilinear, caffe), batch 16, 150x150;
* this project's `bottleneck --precision fp32|int8` on the same photos (end to end, and the time
  inside ONNX Runtime from its log);
* the models alone on in-memory batches (benches/bottleneck/ort_python.py);
* the cosine similarity of each photo's int8 features with its fp32 features;
* fine-tuning (unless --no-finetune): `finetune` with the fp32 and the int8 frozen part, in
  exact mode (--cache-rounds 0: decode, augment and the frozen part every epoch, as Keras does)
  and on one cached round, 3 epochs on the same photos (validation: 32 photos of DATA/validation),
  images/s of the median of epochs 2 and 3 (an epoch's time includes its validation); Keras 3's
  step rate on the same photos from benches/finetune/keras_step.py (in .cache/keras, made by
  `scripts/setup.sh --keras`; skipped with a note when missing); and block 5's FLOP rate against
  the frozen part's (benches/finetune/profile.py);
* with --accuracy: bottleneck on all of DATA/train and DATA/validation in both precisions, then
  train-head (recommended preset) per seed on each, validation accuracy.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target/release"
MODEL = ROOT / "artifacts/bench-int8/model"
MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)


def sh(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kw)


def link(files, dst):
    for f in files:
        (dst / f.parent.name).mkdir(parents=True, exist_ok=True)
        (dst / f.parent.name / f.name).symlink_to(f.resolve())


def python_photos(model, files, batch=16, size=150):
    """Images/s of Python onnxruntime over the photos, decode included (one warm-up batch first)."""
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])

    def load(f):
        img = Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.float32)[..., ::-1] - MEAN_BGR

    sess.run(None, {"input": np.stack([load(f) for f in files[:batch]])})
    t = time.perf_counter()
    for i in range(0, len(files), batch):
        sess.run(None, {"input": np.stack([load(f) for f in files[i:i + batch]])})
    return len(files) / (time.perf_counter() - t)


def bottleneck(data, out, precision):
    cmd = [BIN / "bottleneck", "--data", data, "--model", MODEL / "conv_base.onnx", "--out", out,
           "--precision", precision, "--device", "cpu", "-v", "--log-format", "json"]
    err = sh(cmd, capture_output=True, text=True).stderr
    f = [json.loads(l) for l in err.splitlines() if '"bottleneck done"' in l][-1]["fields"]
    return {"end_to_end": f["images_per_second"], "inference": f["inference_images_per_second"]}


def model_alone(model, batches):
    out = sh([ROOT / ".cache/python/bin/python", ROOT / "benches/bottleneck/ort_python.py", model, 16, batches, 150],
             capture_output=True, text=True).stdout
    return json.loads(out)["python_images_per_second"]


def cosines(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def finetune_rates(tmp, data, classes, n):
    """Fine-tuning images/s on the n photos in tmp/photos: ours in both modes and precisions,
    Keras', and block 5's FLOP rate."""
    val = sorted(f for c in classes for f in sorted((data / "validation" / c).iterdir())[:16])
    link(val, tmp / "val")
    sh([BIN / "train-head", "--train-features", tmp / "fp32", "--validation-features", tmp / "fp32", "--out", tmp / "head", "--epochs", 5,
        "-q"])
    rates = {}
    for precision in ("fp32", "int8"):
        for mode, rounds in (("exact", 0), ("cached", 1)):
            out = tmp / f"finetune-{precision}-{mode}"
            sh([BIN / "finetune", "--train", tmp / "photos", "--validation", tmp / "val", "--model-dir", MODEL,
                "--head", tmp / "head", "--out", out, "--epochs", 3, "--cache-rounds", rounds, "--precision", precision,
                "--device", "cpu", "-q"])
            seconds = [float(row.split(",")[-1]) for row in (out / "history.csv").read_text().splitlines()[2:]]
            rates[f"{mode}_{precision}"] = round(n / float(np.median(seconds)), 2)
    keras = ROOT / ".cache/keras/bin/python"
    if keras.exists():
        out = sh([keras, ROOT / "benches/finetune/keras_step.py", tmp / "photos"], capture_output=True, text=True)
        rates["keras"] = json.loads(out.stdout.splitlines()[-1])["images_per_second"]
        for k in [k for k in rates if k != "keras"]:
            rates[f"ratio_{k}_vs_keras"] = round(rates[k] / rates["keras"], 2)
    else:
        print("no .cache/keras (scripts/setup.sh --keras): Keras' step rate skipped", file=sys.stderr)
    out = sh([ROOT / ".cache/python/bin/python", ROOT / "benches/finetune/profile.py", "--model", MODEL],
             capture_output=True, text=True)
    rates["profile"] = json.loads(out.stdout.splitlines()[-1])
    return rates


ap = argparse.ArgumentParser()
ap.add_argument("--data", default=str(ROOT.parent / "shared/data/dogs-vs-cats"))
ap.add_argument("--images", type=int, default=256, help="photos of DATA/train for the speed runs (half per class)")
ap.add_argument("--calibrate-images", type=int, default=64)
ap.add_argument("--batches", type=int, default=8, help="batches of 16 for the model-alone runs")
ap.add_argument("--accuracy", action="store_true")
ap.add_argument("--seeds", type=int, default=1)
ap.add_argument("--no-finetune", action="store_true")
args = ap.parse_args()
data = Path(args.data)

sh(["cargo", "build", "--release", "-q", "--bin", "bottleneck", "--bin", "prepare-model", "--bin", "train-head",
    "--bin", "finetune"])
info = MODEL / "model.json"
if not info.exists() or json.loads(info.read_text()).get("int8", {}).get("calibration", {}).get("images") != args.calibrate_images:
    t = time.perf_counter()
    sh([BIN / "prepare-model", "--out", MODEL, "--quantize", "int8", "--calibrate", data / "train",
        "--calibrate-images", args.calibrate_images, "--device", "cpu", "-q"])
    print(f"prepare-model --quantize int8 ({args.calibrate_images} calibration images): {time.perf_counter() - t:.1f} s",
          file=sys.stderr)

classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
per_class = args.images // len(classes)
files = [f for c in classes for f in sorted((data / "train" / c).iterdir())[:per_class]]
r = {"images": len(files), "load_average_1min": os.getloadavg()[0]}
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    link(files, tmp / "photos")
    r["python_fp32"] = round(python_photos(MODEL / "conv_base.onnx", files), 2)
    r["python_int8"] = round(python_photos(MODEL / "conv_base.int8.onnx", files), 2)
    fp32 = bottleneck(tmp / "photos", tmp / "fp32", "fp32")
    int8 = bottleneck(tmp / "photos", tmp / "int8", "int8")
    r["rust_fp32"], r["rust_int8"] = round(fp32["end_to_end"], 2), round(int8["end_to_end"], 2)
    r["rust_fp32_inference"], r["rust_int8_inference"] = round(fp32["inference"], 2), round(int8["inference"], 2)
    cos = cosines(np.load(tmp / "fp32/features.npy"), np.load(tmp / "int8/features.npy"))
    r["cosine_int8_vs_fp32_min"], r["cosine_int8_vs_fp32_mean"] = round(float(cos.min()), 5), round(float(cos.mean()), 5)
    if not args.no_finetune:
        r["finetune"] = finetune_rates(tmp, data, classes, len(files))
r["model_alone_fp32"] = model_alone(MODEL / "conv_base.onnx", args.batches)
r["model_alone_int8"] = model_alone(MODEL / "conv_base.int8.onnx", args.batches)
r["ratio_rust_int8_vs_python_fp32"] = round(r["rust_int8"] / r["python_fp32"], 2)
r["ratio_rust_int8_vs_rust_fp32"] = round(r["rust_int8"] / r["rust_fp32"], 2)
r["ratio_rust_fp32_vs_python_fp32"] = round(r["rust_fp32"] / r["python_fp32"], 2)
r["ratio_python_int8_vs_python_fp32"] = round(r["python_int8"] / r["python_fp32"], 2)
r["ratio_model_alone_int8_vs_fp32"] = round(r["model_alone_int8"] / r["model_alone_fp32"], 2)

if args.accuracy:
    acc = {}
    for precision in ("fp32", "int8"):
        feats = ROOT / f"artifacts/bench-int8/features-{precision}"
        for split in ("train", "validation"):
            if not (feats / split / "features.npy").exists():
                sh([BIN / "bottleneck", "--data", data / split, "--model", MODEL / "conv_base.onnx",
                    "--out", feats / split, "--precision", precision, "--device", "cpu", "-q"])
        acc[precision] = []
        for seed in range(args.seeds):
            out = ROOT / f"artifacts/bench-int8/head-{precision}-{seed}"
            sh([BIN / "train-head", "--train-features", feats / "train", "--validation-features", feats / "validation", "--out", out,
                "--seed", seed, "-q"])
            acc[precision].append(json.loads((out / "metrics.json").read_text())["last"]["val_acc"])
    r["head_val_accuracy"] = acc
print(json.dumps(r, indent=2))
