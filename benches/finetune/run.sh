#!/usr/bin/env bash
# The accuracy benchmark: the repository's pipeline.yaml, unchanged but for its `data` and
# `cache_rounds` params, on Dogs vs Cats (1000+1000 train, 400+400 validation).
#   benches/finetune/run.sh [DATA] [OUT] [CACHE_ROUNDS] [PARAM=VALUE...]
# DATA defaults to ../shared/data/dogs-vs-cats (train/, validation/), OUT to artifacts/bench,
# CACHE_ROUNDS to 5 (0 is the recipe's fresh augmentation every epoch: about 3x slower on CPU).
# PARAM=VALUE overrides any other param (e.g. size=224 augment_rounds=3 finetune_epochs=10).
# OUT gets its own pipeline.yaml and pipeline.lock: a second run resumes where the first stopped.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
data=$(realpath "${1:-$repo/../shared/data/dogs-vs-cats}"); out=${2:-$repo/artifacts/bench}; rounds=${3:-5}
shift $(( $# < 3 ? $# : 3 ))
overrides=(-e "s#^  data: [^ ]*#  data: $data#" -e "s#^  cache_rounds: [0-9]*#  cache_rounds: $rounds#")
for kv in "$@"; do
  [[ $kv == *=* ]] || { echo "error: '$kv' is not PARAM=VALUE" >&2; exit 2; }
  grep -q "^  ${kv%%=*}: " "$repo/pipeline.yaml" || { echo "error: pipeline.yaml has no param '${kv%%=*}'" >&2; exit 2; }
  overrides+=(-e "s#^  ${kv%%=*}: [^ ]*#  ${kv%%=*}: ${kv#*=}#")
done
cargo build --release --manifest-path "$repo/Cargo.toml" --bins
mkdir -p "$out/bin"
# A copy of the binaries: rebuilding the repository meanwhile must not change a running benchmark.
for bin in prepare-model bottleneck augment train-head finetune predict pipeline; do
  cp "$repo/target/release/$bin" "$out/bin/"
done
ln -sfn "$repo/.cache" "$out/.cache"
sed "${overrides[@]}" "$repo/pipeline.yaml" > "$out/pipeline.yaml"
cd "$out"
PATH="$out/bin:$PATH" nice bin/pipeline run -v
bin/pipeline metrics
