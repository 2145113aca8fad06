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


def session(path, profile_prefix=None):
    """A CPU session on the process' one thread pool (as finetune's sessions share one: no pool
    spins while another runs), flushing denormals as sd-runtime does."""
    so = ort.SessionOptions()
    so.use_per_session_threads = False
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def profile(path, feeds, reps, prefix):
    """A graph's Run: seconds (wall clock) and FLOPs per run, and per operator type kernel seconds
    and FLOPs per run."""
    sess = session(path, prefix)
    sess.run(None, feeds)  # warm-up
    start = time.perf_counter()
    for _ in range(reps):
        sess.run(None, feeds)
    seconds = (time.perf_counter() - start) / reps
    events = [e for e in json.load(open(sess.end_profiling()))
              if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    runs = reps + 1
    per_op, per_op_flops = collections.Counter(), collections.Counter()
    for e in events:
        per_op[e["args"]["op_name"]] += e["dur"] / 1e6 / runs
        per_op_flops[e["args"]["op_name"]] += flops(e) / runs
    return Run(seconds, sum(per_op_flops.values()), per_op, per_op_flops)


def random_feeds(path, batch, rng):
    sess = session(path)
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


def paired(graphs, pairs):
    """Seconds of (frozen part, block 5 forward + backward) for `pairs` pairs run one right after
    the other: the machine's speed drifts within seconds, so the ratio is taken per pair."""
    sessions = [(session(path), feeds) for _, path, feeds in graphs]
    for s, feeds in sessions:
        s.run(None, feeds)  # warm-up
    times = []
    for _ in range(pairs):
        t0 = time.perf_counter()
        sessions[0][0].run(None, sessions[0][1])
        t1 = time.perf_counter()
        for s, feeds in sessions[1:]:
            s.run(None, feeds)
        times.append((t1 - t0, time.perf_counter() - t1))
    return times


ap = argparse.ArgumentParser()
ap.add_argument("--model", default=str(ROOT / "artifacts/bench-int8/model"))
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--reps", type=int, default=10)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--size", type=int, default=150)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--layout", choices=["auto", "onnx"], default="auto")
ap.add_argument("--graphs", help="profile the graphs dump_graphs wrote here before (e.g. another revision's)")
ap.add_argument("--pairs", type=int, default=30)
args = ap.parse_args()
rng = np.random.default_rng(0)
# One thread pool for every session, as finetune has (sd-runtime); set before any session exists.
ort.capi._pybind_state.set_global_thread_pool_sizes(args.threads, 1)

result = {"batch": args.batch, "size": args.size, "threads": args.threads}
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    if args.graphs:
        graphs_dir, result["graphs"] = Path(args.graphs), args.graphs
    else:
        graphs_dir = tmp
        layout = subprocess.run(["cargo", "run", "--release", "-q", "-p", "sd-finetune", "--example", "dump_graphs",
                                 "--", tmp, str(args.size), args.layout], check=True, cwd=ROOT, capture_output=True,
                                text=True)
        result["layout"] = layout.stdout.strip()
    frozen = Path(args.model) / "frozen_base.onnx"
    images = {"input": (rng.standard_normal((args.batch, args.size, args.size, 3)) * 50).astype(np.float32)}
    graphs = [("frozen part (blocks 1-4)", frozen, images),
              ("block 5 forward (training)", graphs_dir / "forward_train.onnx", None),
              ("block 5 backward", graphs_dir / "backward.onnx", None)]
    graphs = [(name, path, feeds or random_feeds(path, args.batch, rng)) for name, path, feeds in graphs]
    # The machine's speed drifts by more than the differences measured: each round times the three
    # graphs back to back, and the ratio is taken within a round.
    rounds = [{name: profile(path, feeds, args.reps, str(tmp / "profile")) for name, path, feeds in graphs}
              for _ in range(args.rounds)]
    pair_seconds = paired(graphs, args.pairs)


def block5_work(rows):
    """Block 5's FLOPs per training step, counted conventionally: forward convolutions + kernel
    gradients (one per forward convolution) + input gradients."""
    conv = lambda run: run.op_flops["Conv"] + run.op_flops["FusedConv"]
    return 2 * conv(rows["block 5 forward (training)"]) + conv(rows["block 5 backward"])


Rates = collections.namedtuple("Rates", "frozen_gflops block5_gflops ratio executed_ratio")


def ratios(rows):
    """Block 5's rate over the frozen part's: counted conventionally (each kernel gradient as its
    forward convolution), and as executed."""
    frozen = rows["frozen part (blocks 1-4)"]
    frozen_rate = frozen.flops / frozen.seconds
    forward, backward = rows["block 5 forward (training)"], rows["block 5 backward"]
    b5_seconds = forward.seconds + backward.seconds
    b5_work = block5_work(rows)
    return Rates(frozen_rate / 1e9, b5_work / b5_seconds / 1e9, b5_work / b5_seconds / frozen_rate,
                 (forward.flops + backward.flops) / b5_seconds / frozen_rate)


per_round = [ratios(rows) for rows in rounds]
median = sorted(range(len(per_round)), key=lambda i: per_round[i].ratio)[len(per_round) // 2]
print(f"the median round of {len(rounds)} (by block 5's ratio):")
for name, (seconds, work, per_op, _) in rounds[median].items():
    print(f"{name}: {seconds * 1e3 / args.batch:.2f} ms/image, {work / args.batch / 1e9:.3f} GFLOP/image, "
          f"{work / seconds / 1e9:.1f} GFLOP/s")
    for op, s in per_op.most_common(8):
        print(f"    {op:16} {s * 1e3:8.2f} ms/batch  {100 * s / seconds:5.1f}%")
def other_ms(rows):
    """Block 5's time in operators other than convolutions and GEMMs (layout changes, slices, masks):
    ms per batch. Steadier than the rates when the machine drifts, as it is memory-bound and
    small."""
    runs = [rows["block 5 forward (training)"], rows["block 5 backward"]]
    return 1e3 * sum(s for run in runs for op, s in run.op_seconds.items() if op not in ("Conv", "FusedConv", "Gemm"))


frozen_gflops, b5_gflops, ratio, executed = per_round[median]
result.update(frozen_gflops=round(frozen_gflops, 1), block5_train_gflops=round(b5_gflops, 1),
              block5_vs_frozen=round(ratio, 3), block5_executed_vs_frozen=round(executed, 3),
              block5_vs_frozen_rounds=[round(r.ratio, 3) for r in per_round],
              block5_other_ms_rounds=[round(other_ms(rows), 1) for rows in rounds])
# Per pair: block 5's rate over the frozen part's (FLOPs per run from the first round's profile).
frozen_flops, b5_flops = rounds[0]["frozen part (blocks 1-4)"].flops, block5_work(rounds[0])
pair_ratios = sorted((b5_flops / b5) / (frozen_flops / f) for f, b5 in pair_seconds)
quartiles = [pair_ratios[int(q * (len(pair_ratios) - 1))] for q in (0.25, 0.5, 0.75)]
print(f"paired runs ({len(pair_ratios)}): block 5's rate / the frozen part's, quartiles "
      + ", ".join(f"{q:.3f}" for q in quartiles))
result.update(block5_vs_frozen_paired=round(quartiles[1], 3), block5_vs_frozen_paired_quartiles=[round(q, 3) for q in quartiles],
              frozen_ms_paired_median=round(1e3 * float(np.median([f for f, _ in pair_seconds])), 1),
              block5_ms_paired_median=round(1e3 * float(np.median([b for _, b in pair_seconds])), 1))
print(json.dumps(result))
