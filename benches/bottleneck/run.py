#!/usr/bin/env python3
"""Bottleneck benchmark: one run gives every number the README quotes, measured on the same
machine in the same script, so ratios are meaningful even on a noisy machine.

    python3 benches/bottleneck/run.py [--data ../shared/data/dogs-vs-cats] [--device cpu]

(it builds the release binaries first)

* end to end: `bottleneck` over all 2800 images (decode + resize + inference + .npy writes)
* inference alone: the same model on in-memory batches (Rust `inference` example)
* Python onnxruntime on the same model and batches, and numpy's SGEMM as the FP32 peak
* peak RSS of `bottleneck` for 2800 images vs 280
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GFLOP_PER_IMAGE = 13.23  # VGG16 conv base at 150x150, forward


def bottleneck(data, out, device):
    cmd = [ROOT / "target/release/bottleneck", "--data", data, "--model", MODEL, "--out", out,
           "--device", device, "-v", "--log-format", "json"]
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    _, _, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    err = p.stderr.read()
    done = [json.loads(l) for l in err.splitlines() if '"bottleneck done"' in l]
    if not done:
        sys.exit(f"bottleneck failed:\n{err}")
    f = done[-1]["fields"]
    return {"images": f["images"], "e2e": f["images_per_second"], "inference_in_stage": f["inference_images_per_second"],
            "wall": wall, "rss_mib": usage.ru_maxrss / 1024}


def link_dataset(src, dst, per_class=None):
    for cls in ("cats", "dogs"):
        files = sorted((src / "train" / cls).glob("*.jpg")) + sorted((src / "validation" / cls).glob("*.jpg"))
        (dst / cls).mkdir(parents=True)
        for f in files[:per_class]:
            (dst / cls / f.name).symlink_to(f.resolve())


ap = argparse.ArgumentParser()
ap.add_argument("--data", default=str(ROOT.parent / "shared/data/dogs-vs-cats"))
ap.add_argument("--device", default="cpu")
ap.add_argument("--batches", type=int, default=20)
args = ap.parse_args()
subprocess.run(["cargo", "build", "--release", "-q", "--bin", "bottleneck", "--bin", "prepare-model",
                "-p", "smalldata", "--example", "inference", "-p", "sd-bottleneck"], check=True, cwd=ROOT)
MODEL = ROOT / "artifacts/model/conv_base.onnx"
if not MODEL.exists():
    subprocess.run([ROOT / "target/release/prepare-model", "--out", MODEL.parent, "-q"], check=True, cwd=ROOT)

with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    link_dataset(Path(args.data), tmp / "all")
    link_dataset(Path(args.data), tmp / "small", per_class=140)
    small = bottleneck(tmp / "small", tmp / "out_small", args.device)
    full = bottleneck(tmp / "all", tmp / "out_all", args.device)

rust = json.loads(subprocess.run([ROOT / "target/release/examples/inference", MODEL, "16", str(args.batches), "150"],
                                 capture_output=True, text=True, check=True, cwd=ROOT, env={**os.environ, "DEVICE": args.device}).stdout)
py = json.loads(subprocess.run([ROOT / ".cache/python/bin/python", ROOT / "benches/bottleneck/ort_python.py", MODEL, "16", str(args.batches), "150"],
                               capture_output=True, text=True, check=True, cwd=ROOT).stdout)

r = {
    "images": full["images"],
    "end_to_end_images_per_s": round(full["e2e"], 2),
    "inference_alone_images_per_s": round(rust["images_per_second"], 2),
    "python_onnxruntime_images_per_s": py["python_images_per_second"],
    "end_to_end_vs_inference": round(full["e2e"] / rust["images_per_second"], 3),
    "inference_vs_python": round(rust["images_per_second"] / py["python_images_per_second"], 3),
    "achieved_gflops_end_to_end": round(full["e2e"] * GFLOP_PER_IMAGE, 1),
    "achieved_gflops_inference": round(rust["images_per_second"] * GFLOP_PER_IMAGE, 1),
    "sgemm_peak_gflops": py["sgemm_gflops"],
    "peak_rss_mib_2800": round(full["rss_mib"], 1),
    "peak_rss_mib_280": round(small["rss_mib"], 1),
    "rss_ratio_2800_vs_280": round(full["rss_mib"] / small["rss_mib"], 3),
    "device": rust["device"],
}
print(json.dumps(r, indent=2))
