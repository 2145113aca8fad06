#!/usr/bin/env python3
"""Tables of benches/backbone/run.sh's results: mean final (and best-epoch) validation accuracy
over seeds per setting, data set and head options; and the seconds each step took."""
import statistics
import sys
from collections import defaultdict
from pathlib import Path

out = Path(sys.argv[1])
runs = defaultdict(list)
for line in (out / "results.tsv").read_text().splitlines():
    setting, ds, opts, seed, final, best = line.split("\t")
    runs[(ds, setting, opts)].append((int(seed), float(final), float(best)))
print("| data | setting | head | final val acc, mean (per seed) | best epoch, mean |")
print("|---|---|---|---|---|")
for (ds, setting, opts), rs in sorted(runs.items()):
    rs.sort()
    finals = ", ".join(f"{f:.4f}" for _, f, _ in rs)
    print(f"| {ds} | {setting} | `{opts}` | {statistics.mean(f for _, f, _ in rs):.4f} ({finals}) | {statistics.mean(b for _, _, b in rs):.4f} |")
times = out / "times.tsv"
if times.exists():
    print("\n| step | seconds |\n|---|---|")
    for line in times.read_text().splitlines():
        step, s = line.split("\t")
        print(f"| {step} | {s} |")
