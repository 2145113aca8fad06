#!/usr/bin/env python3
"""Reference numbers for the bottleneck benchmark, from Python on the same machine:
the same conv_base.onnx in Python onnxruntime (same input, same batches as the Rust
`inference` example), and the machine's practical FP32 peak from a large numpy SGEMM.

    .cache/python/bin/python benches/bottleneck/ort_python.py MODEL [BATCH] [BATCHES] [SIZE]
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

model = sys.argv[1]
batch, batches, size = (int(a) for a in (sys.argv[2:5] + ["16", "10", "150"][len(sys.argv[2:5]):]))

n, y, x, c = np.meshgrid(np.arange(batch), np.arange(size), np.arange(size), np.arange(3), indexing="ij")
inp = (((n * 31 + y * 7 + x * 3 + c) % 255) - 120.0).astype(np.float32)

sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
sess.run(None, {name: inp})
t = time.perf_counter()
for _ in range(batches):
    sess.run(None, {name: inp})
secs = time.perf_counter() - t

# Practical FP32 peak: the best of a few 3072^3 SGEMMs through numpy's BLAS (all cores).
a = np.random.default_rng(0).standard_normal((3072, 3072), dtype=np.float32)
a @ a
best = min((lambda: (lambda t0: (a @ a, time.perf_counter() - t0)[1])(time.perf_counter()))() for _ in range(3))
print(json.dumps({
    "python_images_per_second": round(batch * batches / secs, 3),
    "sgemm_gflops": round(2 * 3072**3 / best / 1e9, 1),
    "onnxruntime": ort.__version__,
}))
