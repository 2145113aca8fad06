#!/usr/bin/env bash
# Fine-tuned accuracy with the int8 frozen part against the fp32 one, same seeds, final epoch:
#
#   benches/int8/finetune-accuracy.sh [OUT]          (default OUT: artifacts/bench-int8)
#
# Per precision: bottleneck features of DATA/train and DATA/validation; per seed a head
# (train-head, recommended preset, on that precision's features) and finetune with that
# precision's frozen part (FT_EPOCHS, default 5, on FT_ROUNDS = 2 cached rounds, 150x150); the
# model folder is OUT/model (prepare-model --quantize int8, as benches/int8/run.py makes it); then
# predict with the exported classifier.onnx (with int8, block 5 is quantised there too).
# Environment: DATA (default ../shared/data/dogs-vs-cats), SEEDS (default "0 1 2").
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-artifacts/bench-int8}
data=${DATA:-../shared/data/dogs-vs-cats}
seeds=${SEEDS:-0 1 2}
cargo build --release --quiet --bins
bin=target/release
[[ -d $out/model ]] || $bin/prepare-model --out "$out/model" --quantize int8 --calibrate "$data/train" -q

# The accuracy in a metrics.json: the trainers' (under "evaluation") or predict's (top level).
accuracy() { python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print(m.get("evaluation", m)["accuracy"])' "$1"; }
for precision in fp32 int8; do
    feats=$out/features-$precision
    for split in train validation; do
        [[ -d $feats/$split ]] || $bin/bottleneck --data "$data/$split" --model "$out/model/conv_base.onnx" \
            --out "$feats/$split" --precision $precision -q
    done
    for seed in $seeds; do
        ft=$out/finetune-$precision-$seed
        [[ -d $ft-head ]] || $bin/train-head --train "$feats/train" --validation "$feats/validation" --out "$ft-head" \
            --seed "$seed" -q
        [[ -d $ft ]] || $bin/finetune --train "$data/train" --validation "$data/validation" --model "$out/model" \
            --head "$ft-head" --out "$ft" --epochs "${FT_EPOCHS:-5}" --cache-rounds "${FT_ROUNDS:-2}" \
            --seed $((seed + 1)) --precision $precision -q
        [[ -d $ft-predict ]] || $bin/predict --model "$ft/classifier.onnx" --data "$data/validation" --out "$ft-predict" -q
        echo "$precision seed $seed: head $(accuracy "$ft-head/metrics.json") -> fine-tuned $(accuracy "$ft/metrics.json")," \
            "classifier.onnx $(accuracy "$ft-predict/metrics.json")" |
            tee -a "$out/finetune-accuracy.txt"
    done
done
