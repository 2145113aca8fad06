#!/usr/bin/env python3
"""Where a fine-tuning step's time goes: ONNX Runtime's profiler over the frozen part and block 5's
training graphs, in one process, on random batches:

    .cache/python/bin/python benches/finetune/profile.py [--model artifacts/bench-int8/model] [--batch 16]
                                                          [--reps 10] [--rounds 3] [--size 150] [--threads 2]
                                                          [--layout auto|onnx]

Block 5's graphs are the ones `finetune` builds (written by `cargo run --release -p sd-finetune
--example dump_graphs`, in the convolution layout finetune picks here, or plain ONNX Conv with
--layout onnx); the frozen part is MODEL/frozen_base.onnx (fp32). FLOPs are counted from
the shapes the profiler records (2 per multiply-add of every Conv, ConvTranspose and Gemm), time is
the wall clock of whole runs. Prints, per graph, GFLOP/s and the time per operator type, then block
5's rate (forward for training + backward) as a fraction of the frozen part's (the median of
ROUNDS rounds, each timing the three graphs back to back: the machine drifts), counting block 5's
work as a training step's is conventionally counted: each kernel gradient as many FLOPs as its
layer's forward convolution (padding included, as every Conv is counted), whatever the graph runs
("executed": the FLOPs of the GEMMs it runs; equal for today's graphs, lower for one that skips
the padding).
"""
import argparse
import collections
import gc
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]


def shapes(event, key):
    return [next(iter(d.values())) for d in event["args"].get(key, [])]


def flops(event):
    op, ins, outs = event["args"]["op_name"], shapes(event, "input_type_shape"), shapes(event, "output_type_shape")
    if op in ("Conv", "FusedConv"):  # output [N, Cout, H, W], kernel [Cout, Cin/groups, kh, kw]
        return 2 * np.prod(outs[0], dtype=np.int64) * np.prod(ins[1][1:], dtype=np.int64)
    if op == "ConvTranspose":  # input [N, Cin, H, W], kernel [Cin, Cout, kh, kw]
        return 2 * np.prod(ins[0], dtype=np.int64) * np.prod(ins[1][1:], dtype=np.int64)
    if op == "Gemm":  # output [M, N]; A holds M·K values whichever way it is transposed
        return 2 * outs[0][1] * np.prod(ins[0], dtype=np.int64)
    return 0


Run = collections.namedtuple("Run", "seconds flops op_seconds op_flops")


def profile(path, feeds, reps, threads, prefix):
    """A graph's Run: seconds (wall clock) and FLOPs per run, and per operator type kernel seconds
    and FLOPs per run."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.add_session_config_entry("session.set_denormal_as_zero", "1")  # as finetune runs (sd-runtime)
    so.profile_file_prefix = prefix
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    sess.run(None, feeds)  # warm-up
    start = time.perf_counter()
    for _ in range(reps):
        sess.run(None, feeds)
    seconds = (time.perf_counter() - start) / reps
    events = [e for e in json.load(open(sess.end_profiling()))
              if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    del sess  # its threads spin a while after a run: gone before the next graph is timed
    gc.collect()
    runs = reps + 1
    per_op, per_op_flops = collections.Counter(), collections.Counter()
    for e in events:
        per_op[e["args"]["op_name"]] += e["dur"] / 1e6 / runs
        per_op_flops[e["args"]["op_name"]] += flops(e) / runs
    return Run(seconds, sum(per_op_flops.values()), per_op, per_op_flops)


def random_feeds(path, batch, rng):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {}
    for i in sess.get_inputs():
        shape = [batch if isinstance(d, str) or d is None else d for d in i.shape]
        a = rng.standard_normal(shape).astype(np.float32)
        if "relu" in i.name:
            a = np.maximum(a, 0)  # activations after ReLU
        if "kernel" in i.name:
            a *= 0.01
        feeds[i.name] = a
    return feeds


ap = argparse.ArgumentParser()
ap.add_argument("--model", default=str(ROOT / "artifacts/bench-int8/model"))
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--reps", type=int, default=10)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--size", type=int, default=150)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--layout", choices=["auto", "onnx"], default="auto")
args = ap.parse_args()
rng = np.random.default_rng(0)

result = {"batch": args.batch, "size": args.size, "threads": args.threads}
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    layout = subprocess.run(["cargo", "run", "--release", "-q", "-p", "sd-finetune", "--example", "dump_graphs", "--",
                             tmp, str(args.size), args.layout], check=True, cwd=ROOT, capture_output=True, text=True)
    result["layout"] = layout.stdout.strip()
    frozen = Path(args.model) / "frozen_base.onnx"
    images = {"input": (rng.standard_normal((args.batch, args.size, args.size, 3)) * 50).astype(np.float32)}
    graphs = [("frozen part (blocks 1-4)", frozen, images),
              ("block 5 forward (training)", tmp / "forward_train.onnx", None),
              ("block 5 backward", tmp / "backward.onnx", None)]
    graphs = [(name, path, feeds or random_feeds(path, args.batch, rng)) for name, path, feeds in graphs]
    # The machine's speed drifts by more than the differences measured: each round times the three
    # graphs back to back, and the ratio is taken within a round.
    rounds = [{name: profile(path, feeds, args.reps, args.threads, str(tmp / "profile")) for name, path, feeds in graphs}
              for _ in range(args.rounds)]


def ratios(rows):
    """Block 5's rate over the frozen part's: counted conventionally (each kernel gradient as its
    forward convolution), and as executed."""
    frozen = rows["frozen part (blocks 1-4)"]
    frozen_rate = frozen.flops / frozen.seconds
    forward, backward = rows["block 5 forward (training)"], rows["block 5 backward"]
    b5_seconds = forward.seconds + backward.seconds
    conv = lambda run: run.op_flops["Conv"] + run.op_flops["FusedConv"]
    # forward convolutions + kernel gradients (one per forward convolution) + input gradients
    b5_work = 2 * conv(forward) + conv(backward)
    return (frozen_rate / 1e9, b5_work / b5_seconds / 1e9, b5_work / b5_seconds / frozen_rate,
            (forward.flops + backward.flops) / b5_seconds / frozen_rate)


per_round = [ratios(rows) for rows in rounds]
median = sorted(range(len(per_round)), key=lambda i: per_round[i][2])[len(per_round) // 2]
print(f"the median round of {len(rounds)} (by block 5's ratio):")
for name, (seconds, work, per_op, _) in rounds[median].items():
    print(f"{name}: {seconds * 1e3 / args.batch:.2f} ms/image, {work / args.batch / 1e9:.3f} GFLOP/image, "
          f"{work / seconds / 1e9:.1f} GFLOP/s")
    for op, s in per_op.most_common(8):
        print(f"    {op:16} {s * 1e3:8.2f} ms/batch  {100 * s / seconds:5.1f}%")
frozen_gflops, b5_gflops, ratio, executed = per_round[median]
result.update(frozen_gflops=round(frozen_gflops, 1), block5_train_gflops=round(b5_gflops, 1),
              block5_vs_frozen=round(ratio, 3), block5_executed_vs_frozen=round(executed, 3),
              block5_vs_frozen_rounds=[round(r[2], 3) for r in per_round])
print(json.dumps(result))
