#!/usr/bin/env bash
# Flowers (5 classes, ../shared/data/flowers: 1500 train, 500 validation): the head's levers and
# fine-tuning, 3 seeds, final epoch. The flowers numbers at 224 in benches/RESULTS.md and docs/design.md
# come from this script.
#
#   benches/flowers/run.sh [OUT] [heads|finetune|all]      (default OUT: artifacts/bench-flowers, all)
#
# Steps (each skipped when its output exists): prepare-model with an int8 conv base calibrated on
# the flowers' training photos at 224; int8 bottleneck features of train, validation and 3
# augmented rounds (augment --augment finetune); `heads`: train-head for each lever listed below
# x the seeds; `finetune`: a --pool avg head per seed, then finetune --precision int8 at 224
# (FT_EPOCHS, default 10, on FT_ROUNDS = 2 cached rounds), then predict with and without --tta flip.
# Environment: DATA (default ../shared/data/flowers), SEEDS (default "0 1 2").
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-artifacts/bench-flowers}
what=${2:-all}
data=${DATA:-../shared/data/flowers}
seeds=${SEEDS:-0 1 2}
cargo build --release --quiet --bins
bin=target/release
mkdir -p "$out"

[[ -d $out/model ]] || $bin/prepare-model --out "$out/model" --quantize int8 --calibrate "$data/train" --size 224 -q
features() { # DATA OUT
    [[ -d $2 ]] || $bin/bottleneck --data "$1" --model "$out/model/conv_base.int8.onnx" --out "$2" --size 224 \
        --precision int8 -q
}
features "$data/train" "$out/features/train"
features "$data/validation" "$out/features/validation"
[[ -d $out/augmented ]] || $bin/augment rounds --data "$data/train" --out "$out/augmented" --rounds 3 \
    --augment finetune --size 224 --seed 0 -q
features "$out/augmented" "$out/features/augmented"

# The accuracy in a metrics.json: the trainers' (under "evaluation") or predict's (top level).
accuracy() { python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print(m.get("evaluation", m)["accuracy"])' "$1"; }
# lever NAME TRAIN-HEAD-OPTIONS...: one line, NAME: the 3 seeds' final accuracies and their mean.
lever() {
    local name=$1 accs=()
    shift
    for seed in $seeds; do
        $bin/train-head --validation-features "$out/features/validation" --out "$out/heads/$name-$seed" --seed "$seed" -q "$@"
        accs+=("$(accuracy "$out/heads/$name-$seed/metrics.json")")
    done
    python3 -c 'import sys; a = [float(x) for x in sys.argv[2:]]; print(f"{sys.argv[1]:28} {a} mean {sum(a) / len(a):.4f}")' \
        "$name" "${accs[@]}" | tee -a "$out/heads.txt"
}
plain=(--train-features "$out/features/train")
augmented=(--train-features "$out/features/train" "$out/features/augmented")
if [[ $what != finetune ]]; then
    lever flatten "${plain[@]}"
    lever flatten-flip "${plain[@]}" --flip
    lever avg "${plain[@]}" --pool avg
    lever avg-no-input-dropout "${plain[@]}" --pool avg --input-dropout 0
    lever avg-keras "${plain[@]}" --pool avg --preset keras
    lever avg-label-smoothing "${plain[@]}" --pool avg --label-smoothing 0.1
    lever avg-input-dropout-0.5 "${plain[@]}" --pool avg --input-dropout 0.5
    lever avg-100-epochs "${plain[@]}" --pool avg --epochs 100
    lever avg-augmented "${augmented[@]}" --pool avg
    lever avg-augmented-15-epochs "${augmented[@]}" --pool avg --epochs 15
fi
if [[ $what != heads ]]; then
    for seed in $seeds; do
        ft=$out/finetune-$seed
        $bin/train-head "${plain[@]}" --validation-features "$out/features/validation" --out "$ft-head" --pool avg \
            --seed "$seed" -q
        $bin/finetune --train "$data/train" --validation "$data/validation" --model-dir "$out/model" --head "$ft-head" \
            --out "$ft" --size 224 --epochs "${FT_EPOCHS:-10}" --cache-rounds "${FT_ROUNDS:-2}" --seed $((seed + 1)) \
            --precision int8 -q
        for tta in none flip; do
            $bin/predict --model "$ft/classifier.onnx" --data "$data/validation" --out "$ft-predict-$tta" --tta $tta -q
        done
        echo "finetune seed $seed: head $(accuracy "$ft-head/metrics.json") -> $(accuracy "$ft/metrics.json");" \
            "predict $(accuracy "$ft-predict-none/metrics.json"), --tta flip $(accuracy "$ft-predict-flip/metrics.json")" |
            tee -a "$out/finetune.txt"
    done
fi
