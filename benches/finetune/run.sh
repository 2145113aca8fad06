#!/usr/bin/env bash
# The accuracy benchmark: the whole recipe on Dogs vs Cats (1000+1000 train, 400+400 validation).
#   benches/finetune/run.sh [DATA] [OUT] [finetune flags...]
# DATA defaults to ../shared/data/dogs-vs-cats (train/, validation/), OUT to artifacts/bench.
# Extra flags go to finetune, e.g. --cache-rounds 10 (default here) or --epochs 5.
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${1:-/work/shared/data/dogs-vs-cats}; out=${2:-artifacts/bench}; shift $(( $# > 2 ? 2 : $# ))
flags=("$@"); [ ${#flags[@]} -eq 0 ] && flags=(--cache-rounds 10)
bin=target/release
cargo build --release --bin prepare-model --bin bottleneck --bin train-head --bin finetune --bin predict
[ -f "$out/model/frozen_base.onnx" ] || nice $bin/prepare-model --out "$out/model"
for split in train validation; do
  [ -f "$out/features/$split/features.npy" ] ||
    nice $bin/bottleneck --data "$data/$split" --model "$out/model/conv_base.onnx" --out "$out/features/$split"
done
[ -f "$out/head/head.json" ] ||
  nice $bin/train-head --train "$out/features/train" --validation "$out/features/validation" --out "$out/head"
nice $bin/finetune --train "$data/train" --validation "$data/validation" --model "$out/model" --head "$out/head" \
  --out "$out/finetune" "${flags[@]}" -v
nice $bin/predict --model "$out/finetune/classifier.onnx" --data "$data/validation" --out "$out/predict"
