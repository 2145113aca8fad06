#!/bin/sh
# One folder of photos per class, as a new user has them: the shared flowers (300 train + 100
# validation per class) merged into PHOTOS/<class>/ (400 symlinks each), then the default
# pipeline on it: `split` cuts 0.7 / 0.15 / 0.15 per class by content hash, every stage reads
# artifacts/data/, predict scores the held-out test split once.
#
# benches/photos/run.sh [WORK_DIR]   (from the repository root, after `cargo build --release`)
set -eu
root=$(pwd)
work=${1:-/tmp/photos-bench}
photos=$work/photos
mkdir -p "$work"
rm -rf "$photos"
for class in daisy dandelion rose sunflower tulip; do
    mkdir -p "$photos/$class"
    for split in train validation; do
        for f in "$root"/../shared/data/flowers/$split/$class/*; do
            name=$(basename "$f")
            [ -e "$photos/$class/$name" ] && name="$split-$name"
            ln -s "$f" "$photos/$class/$name"
        done
    done
done
# The pipeline in its own folder (its artifacts and lock), the binaries and .cache of this checkout.
cp pipeline.yaml "$work/pipeline.yaml"
ln -sfn "$root/.cache" "$work/.cache"
date -u +%FT%TZ
"$root/target/release/pipeline" --file "$work/pipeline.yaml" --set "data=$photos" run
echo "split:"; cat "$work/artifacts/data/split.json"
echo "predict:"; cat "$work/artifacts/predict/metrics.json"
echo "finetune:"; cat "$work/artifacts/finetune/metrics.json"
