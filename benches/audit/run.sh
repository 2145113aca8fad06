#!/usr/bin/env bash
# The audit's measurements on the shared sets, VGG16 features at 150x150 (crates/audit/README.md):
#   1. the untouched flowers and Dogs vs Cats sets: pairs flagged, leaks, suspects;
#   2. label errors: 5% of the flowers training labels flipped (seeded, a random other class, a
#      symlinked copy of the tree): precision and recall of the suspects at cut-offs;
#   3. duplicates: 30 training photos copied into validation after a 90% resize and a JPEG
#      re-encode at quality 70 (and, for the threshold, 30 more cut to their centre 90% and 80%
#      first): how many are found as cross-split pairs.
# Raw outputs go to benches/audit/<date>/; features and planted trees to WORK (reused when there).
#
#   cargo build --release --bin bottleneck --bin audit --bin prepare-model
#   cargo build --release -p sd-audit --example plant
#   benches/audit/run.sh [WORK]
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${1:-/tmp/audit-bench}
BIN=${BIN:-target/release}
SHARED=${SHARED:-../shared/data}
OUT=benches/audit/$(date -u +%Y-%m-%d)
mkdir -p "$WORK/features" "$WORK/data" "$OUT"
PLANT="$BIN/examples/plant"
log() { echo "== $*" | tee -a "$OUT/run.log"; }

[ -f "$WORK/model/model.json" ] || $BIN/prepare-model --out "$WORK/model" -q
features() { # DATA OUT: bottleneck once
  if [ ! -f "$2/bottleneck.json" ]; then
    $BIN/bottleneck --data "$1" --model "$WORK/model/conv_base.onnx" --out "$2" --size 150 --device cpu -q
  fi
}
audit() { # NAME FEATURES...: the audit's files into OUT/NAME
  local name=$1; shift
  $BIN/audit --features "$@" --out "$WORK/audit/$name" | tee -a "$OUT/run.log"
  mkdir -p "$OUT/$name" && cp "$WORK/audit/$name"/* "$OUT/$name/"
}

for set in flowers dogs-vs-cats; do
  for split in train validation; do features "$SHARED/$set/$split" "$WORK/features/$set/$split"; done
  log "$set as shared"
  audit "$set" "$WORK/features/$set/train" "$WORK/features/$set/validation"
done

log "flowers, 5% of the training labels flipped (seed 0)"
[ -d "$WORK/data/flowers-flips" ] || $PLANT flips --data "$SHARED/flowers" --out "$WORK/data/flowers-flips" --share 0.05 --seed 0
features "$WORK/data/flowers-flips/train" "$WORK/features/flowers-flips/train"
audit flowers-flips "$WORK/features/flowers-flips/train" "$WORK/features/flowers/validation"
cp "$WORK/data/flowers-flips/planted.csv" "$OUT/flowers-flips/planted.csv"
python3 benches/audit/score.py flips "$OUT/flowers-flips/suspects.csv" "$OUT/flowers-flips/planted.csv" | tee "$OUT/flowers-flips/score.txt" | tee -a "$OUT/run.log"

for plant in "flowers copies 1.0 0" "dogs-vs-cats copies 1.0 0" "flowers crops90 0.9 1" "flowers crops80 0.8 2"; do
  read -r set kind crop seed <<< "$plant"
  name=$set-$kind
  log "$name: 30 training photos into validation, centre $crop kept, resized to 90%, JPEG quality 70 (seed $seed)"
  [ -d "$WORK/data/$name" ] || $PLANT copies --data "$SHARED/$set" --out "$WORK/data/$name" --count 30 --scale 0.9 --quality 70 --crop "$crop" --seed "$seed"
  features "$WORK/data/$name/validation" "$WORK/features/$name/validation"
  audit "$name" "$WORK/features/$set/train" "$WORK/features/$name/validation"
  cp "$WORK/data/$name/planted.csv" "$OUT/$name/planted.csv"
  python3 benches/audit/score.py copies "$OUT/$name/duplicates.csv" "$OUT/$name/planted.csv" | tee "$OUT/$name/score.txt" | tail -1 | tee -a "$OUT/run.log"
done
