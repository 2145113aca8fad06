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
# Then, paired: every trained head on both precisions' validation features, and every fine-tuned
# block 5 + head through both frozen parts (examples/reexport, block 5 in float): the same trained
# weights, so the difference is the quantisation's alone, without the seed-to-seed spread of
# training on slightly different features.
# Environment: DATA (default ../shared/data/dogs-vs-cats), SEEDS (default "0 1 2").
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-artifacts/bench-int8}
data=${DATA:-../shared/data/dogs-vs-cats}
seeds=${SEEDS:-0 1 2}
cargo build --release --quiet --bins
cargo build --release --quiet -p sd-finetune --example reexport
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
        [[ -d $ft-head ]] || $bin/train-head --train-features "$feats/train" --validation-features "$feats/validation" --out "$ft-head" \
            --seed "$seed" -q
        [[ -d $ft ]] || $bin/finetune --train "$data/train" --validation "$data/validation" --model-dir "$out/model" \
            --head "$ft-head" --out "$ft" --epochs "${FT_EPOCHS:-5}" --cache-rounds "${FT_ROUNDS:-2}" \
            --seed $((seed + 1)) --precision $precision -q
        [[ -d $ft-predict ]] || $bin/predict --model "$ft/classifier.onnx" --data "$data/validation" --out "$ft-predict" -q
        echo "$precision seed $seed: head $(accuracy "$ft-head/metrics.json") -> fine-tuned $(accuracy "$ft/metrics.json")," \
            "classifier.onnx $(accuracy "$ft-predict/metrics.json")" |
            tee -a "$out/finetune-accuracy.txt"
    done
done

# Paired: the same trained weights on fp32 and int8 inputs.
python=.cache/python/bin/python
for seed in $seeds; do
    for trained in fp32 int8; do
        heads=$("$python" - "$out/finetune-$trained-$seed-head/head.onnx" "$out"/features-{fp32,int8}/validation <<'PY'
import sys, numpy as np, onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
for d in sys.argv[2:]:
    p = session.run(None, {session.get_inputs()[0].name: np.load(f"{d}/features.npy").astype(np.float32)})[0]
    predicted = p[:, 0] > 0.5 if p.shape[1] == 1 else p.argmax(1)  # one sigmoid, or a softmax
    print(f"{(predicted == np.load(f'{d}/labels.npy')).mean():.4f}", end=" " if d != sys.argv[-1] else "")
PY
)
        line="$trained-trained seed $seed: head on fp32 / int8 features $heads; fine-tuned through the fp32 / int8 frozen part"
        for frozen in fp32 int8; do
            file=frozen_base.onnx; [[ $frozen = int8 ]] && file=frozen_base.int8.onnx
            swapped=$out/paired-$trained-$seed-$frozen
            if [[ ! -d $swapped ]]; then
                $bin/examples/reexport "$out/finetune-$trained-$seed" "$out/model/$file" "$swapped.onnx"
                $bin/predict --model "$swapped.onnx" --data "$data/validation" --out "$swapped" -q
            fi
            line="$line $(accuracy "$swapped/metrics.json")"
        done
        echo "$line" | tee -a "$out/finetune-accuracy.txt"
    done
done
