#!/usr/bin/env bash
# EfficientNet-Lite as the backbone: head accuracy per setting (features once per setting, then
# head runs on them), the int8 Lite0, and the time from photos to a trained head for Lite0 and
# VGG16 in the same run. Lean on purpose (the CPU is shared): every setting's features are
# extracted once and timed; the heads are cheap.
#
#   benches/backbone/run.sh OUT [SETTINGS...]
#
# SETTINGS (default: all) are names from the table below; each is
# `name backbone size resize dataset`. Results: OUT/results.tsv (one line per head run:
# setting, dataset, head options, seed, final and best validation accuracy) and OUT/times.tsv
# (seconds per step); benches/backbone/summary.py OUT prints the tables.
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${B:-target/release}
out=${1:?usage: run.sh OUT [SETTINGS...]}
shift
mkdir -p "$out"
DVC=../shared/data/dogs-vs-cats
FLOWERS=../shared/data/flowers
SEEDS=${SEEDS:-0 1 2}

# name backbone size resize extra-bottleneck-flags
SETTINGS_TABLE="
lite0-224-crop efficientnet-lite0 224 crop
lite0-224-squash efficientnet-lite0 224 squash
lite0-288-crop efficientnet-lite0 288 crop
lite0-160-crop efficientnet-lite0 160 crop
lite2-260-crop efficientnet-lite2 260 crop
lite0int8-224-crop efficientnet-lite0 224 crop
"
wanted=${*:-$(echo "$SETTINGS_TABLE" | awk 'NF {print $1}')}

stamp() { date +%s.%N; }
timed() { # label command...
  local t0 t1
  t0=$(stamp)
  "${@:2}"
  t1=$(stamp)
  printf '%s\t%.2f\n' "$1" "$(echo "$t1 - $t0" | bc)" >> "$out/times.tsv"
}

model_for() { # backbone int8? -> folder
  local dir="$out/models/$1${2:+-int8}"
  if [ ! -f "$dir/model.json" ]; then
    if [ -n "${2:-}" ]; then
      timed "prepare $1 int8" "$B/prepare-model" -q --backbone "$1" --out "$dir" --quantize int8 --calibrate "$DVC/train"
    else
      timed "prepare $1" "$B/prepare-model" -q --backbone "$1" --out "$dir"
    fi
  fi
  echo "$dir"
}

# Head options per setting: every setting gets the average-pooling head on 3 seeds; the main
# setting also the keras preset (3 seeds). The recipe's flatten head (62720 inputs per image at
# 224, Dense 256: 16M weights) is left out: one run took over 10 minutes on the loaded machine.
head_options() { # setting
  echo "--pool avg"
  if [ "$1" = lite0-224-crop ]; then
    echo "--pool avg --preset keras"
  fi
}

heads() { # setting dataset features-dir
  local f=$3 opts seeds
  while read -r opts; do
    seeds=$SEEDS
    [[ $opts == *flatten* ]] && seeds=${SEEDS%% *}
    for seed in $seeds; do
      local h="$out/heads/$1/$2/${opts// /}-$seed"
      [ -f "$h/metrics.json" ] && continue # recorded by an earlier run
      "$B/train-head" -q --train "$f/train" --validation "$f/validation" --out "$h" $opts --seed "$seed"
      python3 - "$h/metrics.json" "$1" "$2" "$opts" "$seed" >> "$out/results.tsv" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print("\t".join(sys.argv[2:6] + [f"{m['last']['val_acc']:.4f}", f"{m['best']['val_acc']:.4f}"]))
PY
    done
  done < <(head_options "$1")
}

for name in $wanted; do
  read -r _ backbone size resize <<<"$(echo "$SETTINGS_TABLE" | awk -v n="$name" '$1 == n')"
  [ -n "$backbone" ] || { echo "unknown setting $name" >&2; exit 2; }
  precision=fp32
  int8=
  if [[ $name == *int8* ]]; then precision=int8; int8=1; fi
  model=$(model_for "$backbone" "$int8")
  for ds in dogs-vs-cats flowers; do
    data=$DVC; [ "$ds" = flowers ] && data=$FLOWERS
    f="$out/features/$name/$ds"
    for split in train validation; do
      if [ ! -f "$f/$split/features.npy" ]; then
        timed "bottleneck $name $ds $split" "$B/bottleneck" -q --data "$data/$split" --model "$model/conv_base.onnx" \
          --out "$f/$split" --size "$size" --resize "$resize" --precision "$precision"
      fi
    done
    heads "$name" "$ds" "$f"
  done
done
