#!/usr/bin/env python3
"""Summarises train-head runs: one metrics.json per folder named PRESET-MODE-SEED."""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

runs = defaultdict(list)
for m in sorted(Path(sys.argv[1]).glob("*/metrics.json")):
    preset, mode, _seed = m.parent.name.rsplit("-", 2)
    runs[(preset, mode)].append(json.loads(m.read_text()))

print("| preset | mode | final val acc (mean; per seed) | best-epoch val acc (mean) | final val loss | s/epoch |")
print("|---|---|---|---|---|---|")
for (preset, mode), ms in sorted(runs.items()):
    final = [m["last"]["val_acc"] for m in ms]
    best = [m["best"]["val_acc"] for m in ms]
    loss = statistics.mean(m["last"]["val_loss"] for m in ms)
    spe = statistics.mean(m["seconds_per_epoch"] for m in ms)
    seeds = ", ".join(f"{v:.4f}" for v in final)
    print(f"| {preset} | {mode} | {statistics.mean(final):.4f} ({seeds}) | {statistics.mean(best):.4f} | {loss:.3f} | {spe:.2f} |")
