#!/usr/bin/env bash
# Time from photos to a trained classifier head on Dogs vs Cats, EfficientNet-Lite0 and VGG16 in
# the same run (build excluded): prepare-model, bottleneck of both splits, train-head; prints
# seconds per step, the total and the head's final validation accuracy.
#
#   benches/backbone/time-to-head.sh OUT
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${B:-target/release}
out=${1:?usage: time-to-head.sh OUT}
data=${DATA:-../shared/data/dogs-vs-cats}
rm -rf "$out" && mkdir -p "$out"

run() { # name prepare-flags bottleneck-flags head-flags
  local d="$out/$1" t0 t1 t2 t3
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  "$B/prepare-model" -q $2 --out "$d/model"
  t1=$(date +%s.%N)
  for split in train validation; do
    # shellcheck disable=SC2086
    "$B/bottleneck" -q --data "$data/$split" --model "$d/model/conv_base.onnx" --out "$d/features/$split" $3
  done
  t2=$(date +%s.%N)
  # shellcheck disable=SC2086
  "$B/train-head" -q --train "$d/features/train" --validation "$d/features/validation" --out "$d/head" $4
  t3=$(date +%s.%N)
  python3 - "$1" "$t0" "$t1" "$t2" "$t3" "$d/head/metrics.json" <<'PY'
import json, sys
name, t0, t1, t2, t3, metrics = sys.argv[1], *map(float, sys.argv[2:6]), sys.argv[6]
acc = json.load(open(metrics))["last"]["val_acc"]
print(f"{name}\tprepare {t1 - t0:.1f} s\tbottleneck {t2 - t1:.1f} s\thead {t3 - t2:.1f} s\ttotal {t3 - t0:.1f} s ({(t3 - t0) / 60:.2f} min)\tval acc {acc:.4f}")
PY
}

date -u +"%Y-%m-%dT%H:%MZ $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
run lite0-224-crop "--backbone efficientnet-lite0" "" "--pool avg --seed 0"
run vgg16-150-recipe "--backbone vgg16" "" "--seed 0"
