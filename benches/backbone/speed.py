"""Conv base inference speed, EfficientNet-Lite0 (fp32, int8) against VGG16 at the same input
size, in one process with one thread pool setting, rounds alternating the models so that the
shared machine's drift hits all alike; ratios are taken within a round, medians reported.

    .cache/python/bin/python benches/backbone/speed.py MODELS_DIR [SIZE] [ROUNDS]

MODELS_DIR holds prepare-model folders named vgg16, efficientnet-lite0 and
efficientnet-lite0-int8 (benches/backbone/run.sh writes them under OUT/models).
"""

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

models_dir = Path(sys.argv[1])
size = int(sys.argv[2]) if len(sys.argv) > 2 else 224
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
batch = 16

opts = ort.SessionOptions()
opts.intra_op_num_threads = 2
models = {
    "vgg16": models_dir / "vgg16/conv_base.onnx",
    "lite0": models_dir / "efficientnet-lite0/conv_base.onnx",
    "lite0-int8": models_dir / "efficientnet-lite0-int8/conv_base.int8.onnx",
}
sessions = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for k, p in models.items() if p.is_file()}
x = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
batches = {"vgg16": 2, "lite0": 16, "lite0-int8": 16}  # VGG16 is ~15x slower: fewer batches per round

for s in sessions.values():
    s.run(None, {"input": x})  # warm-up
rates = {k: [] for k in sessions}
for r in range(rounds):
    for k, s in sessions.items():
        t0 = time.perf_counter()
        for _ in range(batches[k]):
            s.run(None, {"input": x})
        rates[k].append(batches[k] * batch / (time.perf_counter() - t0))
result = {
    "size": size,
    "batch": batch,
    "rounds": rounds,
    "images_per_s": {k: v for k, v in rates.items()},
    "median_images_per_s": {k: statistics.median(v) for k, v in rates.items()},
}
if "vgg16" in rates and "lite0" in rates:
    result["lite0_over_vgg16"] = statistics.median(a / b for a, b in zip(rates["lite0"], rates["vgg16"]))
if "lite0-int8" in rates and "lite0" in rates:
    result["int8_over_fp32"] = statistics.median(a / b for a, b in zip(rates["lite0-int8"], rates["lite0"]))
print(json.dumps(result, indent=1))
