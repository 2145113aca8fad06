#!/usr/bin/env bash
# train-head accuracy benchmark: presets x preprocessing modes x seeds, 50 epochs each, then a
# table of final / best-epoch validation accuracy and seconds per epoch.
#
#   benches/head/accuracy.sh [FEATURES_ROOT] [OUT] [-- extra train-head options]
#
# FEATURES_ROOT (default /work/features) holds {caffe,rescale}/{train,validation}/ with
# features.npy, labels.npy, classes.json: `bottleneck` outputs, or benches/head/make_features.py.
# Environment: PRESETS (default "keras recommended"), MODES ("caffe rescale"), SEEDS ("1 2 3").
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-/work/features}
out=${2:-artifacts/bench-head}
shift $(( $# < 2 ? $# : 2 ))
[[ "${1:-}" == "--" ]] && shift
cargo build --release --quiet --bin train-head
for preset in ${PRESETS:-keras recommended}; do
  for mode in ${MODES:-caffe rescale}; do
    for seed in ${SEEDS:-1 2 3}; do
      target/release/train-head --train-features "$root/$mode/train" --validation-features "$root/$mode/validation" \
        --out "$out/$preset-$mode-$seed" --preset "$preset" --seed "$seed" -q "$@"
    done
  done
done
python3 benches/head/summary.py "$out"
