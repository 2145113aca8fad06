#!/usr/bin/env bash
# predict on new photos, measured in one sitting on the same images and device:
#   1. speed: `predict` (the whole classifier) against `bottleneck` (the conv base alone), both
#      bound by the conv base: images/s and their ratio (goal: within 5%);
#   2. unlabelled == labelled: the photos copied into one flat folder, without their class
#      folders, must get exactly the predictions `predict --data` gives the labelled set;
#   3. test-time augmentation: accuracy with `--tta none` and `--tta flip`;
#   4. memory: predict's peak RSS over a tenth of the flat folder and over all of it (it streams:
#      the two should be about equal).
#
#   benches/predict/run.sh CLASSIFIER DATA [OUT] [CONV_BASE]
# CLASSIFIER: a classifier.onnx from finetune; DATA: a labelled folder DATA/<class>/<image>
# (e.g. ../shared/data/dogs-vs-cats/validation); OUT defaults to artifacts/bench-predict;
# CONV_BASE to artifacts/model/conv_base.onnx. Uses the release binaries (built first).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
[[ $# -ge 2 ]] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
model=$(realpath "$1"); data=$(realpath "$2"); out=${3:-$repo/artifacts/bench-predict}
conv_base=$(realpath "${4:-$repo/artifacts/model/conv_base.onnx}")
cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bin predict --bin bottleneck
bin=$repo/target/release
size=$("$repo/.cache/python/bin/python" -c "
import onnxruntime as ort, sys
print(ort.InferenceSession(sys.argv[1]).get_modelmeta().custom_metadata_map.get('smalldata.size', '150'))" "$model")
rm -rf "$out" && mkdir -p "$out/flat"
# Flat copies (hard links where possible), named class__file so that names stay unique.
for class_dir in "$data"/*/; do
  class=$(basename "$class_dir")
  for f in "$class_dir"*; do ln "$f" "$out/flat/${class}__$(basename "$f")" 2>/dev/null || cp "$f" "$out/flat/${class}__$(basename "$f")"; done
done
# images/s from a summary line: "(R images/s" (bottleneck, predict on files) or "N images on DEVICE
# in S s" (predict --data).
rate() { sed -n -e 's/.*(\([0-9.]*\) images\/s.*/\1/p' -e 's/.* \([0-9]*\) images on [^ ]* in \([0-9.]*\) s.*/\1 \2/p' |
  head -1 | awk '{ print NF == 2 ? $1 / $2 : $1 }'; }
b=$("$bin/bottleneck" --data "$data" --model "$conv_base" --out "$out/features" --size "$size" --device cpu 2>&1 | tee "$out/bottleneck.log" | rate)
p=$("$bin/predict" --model "$model" --data "$data" --out "$out/labelled" --device cpu 2>&1 | tee "$out/predict.log" | rate)
"$bin/predict" --model "$model" --data "$data" --out "$out/tta" --tta flip --device cpu > "$out/predict-tta.log" 2>&1
# Peak RSS in KiB (GNU time's %M) of a predict run.
peak() { /usr/bin/time -f %M "$bin/predict" --model "$model" --device cpu -q "$@" 2>&1 >/dev/null | tail -1; }
all=$(peak "$out/flat" --out "$out/flat.csv")
find "$out/flat" -type f | sort | awk 'NR % 10 == 1' > "$out/tenth.txt"
tenth=$(peak --list "$out/tenth.txt" --out "$out/tenth.csv")
"$repo/.cache/python/bin/python" - "$out" "$b" "$p" "$tenth" "$all" <<'PY'
import csv, json, os, sys
out, b, p = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
tenth, whole = int(sys.argv[4]), int(sys.argv[5])
labelled = {os.path.basename(os.path.dirname(r["file"])) + "__" + os.path.basename(r["file"]): r["predicted"]
            for r in csv.DictReader(open(f"{out}/labelled/predictions.csv"))}
flat = {os.path.basename(r["file"]): r["predicted"] for r in csv.DictReader(open(f"{out}/flat.csv"))}
same = sum(labelled[k] == flat.get(k) for k in labelled)
acc = lambda d: json.load(open(f"{out}/{d}/metrics.json"))["accuracy"]
print(f"| predict vs bottleneck, images/s | {p:.2f} vs {b:.2f} = {p / b:.3f}x |")
print(f"| flat folder == labelled set | {same}/{len(labelled)} same predictions ({len(flat)} rows) |")
print(f"| accuracy, --tta none / flip | {acc('labelled'):.4f} / {acc('tta'):.4f} |")
rows = lambda f: sum(1 for _ in open(f)) - 1
print(f"| predict peak RSS, {rows(f'{out}/tenth.csv')} vs {len(flat)} images | {tenth / 1024:.0f} vs {whole / 1024:.0f} MiB ({whole / tenth - 1:+.1%}) |")
sys.exit(0 if same == len(labelled) == len(flat) else 1)
PY
