#!/usr/bin/env bash
# No-op status over the 2800 Dogs vs Cats photos: `pipeline status` against `dvc status` on the
# equivalent dvc.yaml, same machine, same run. See README.md next to this script.
#
#   benches/pipeline/bench.sh [RUNS]     (default 7 timed runs of each; the median is reported)
#
# Environment: DATA (default ../shared/data/dogs-vs-cats of the main checkout), PIPELINE (a built
# `pipeline` binary; default: cargo build --release), DVC_VENV (default /tmp/dvc-venv; DVC is
# installed there from PyPI if missing).
set -euo pipefail

runs=${1:-7}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
main=$(cd "$(git -C "$root" rev-parse --git-common-dir)/.." && pwd)
data=${DATA:-$main/../shared/data/dogs-vs-cats}
data=$(cd "$data" && pwd)
venv=${DVC_VENV:-/tmp/dvc-venv}
export DVC_NO_ANALYTICS=1

if [[ -z ${PIPELINE:-} ]]; then
    cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin pipeline
    PIPELINE=$root/target/release/pipeline
fi
if [[ ! -x $venv/bin/dvc ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet dvc
fi
dvc=$venv/bin/dvc

work=$(mktemp -d /tmp/pipeline-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/pipeline" "$work/dvc"

# The same three stages for both tools; the deps are the shared folders, referenced in place.
stages="stages:
  list-train:
    cmd: mkdir -p lists && ls -R $data/train > lists/train.txt
    deps: [$data/train]
    outs: [lists/train.txt]
  list-validation:
    cmd: mkdir -p lists && ls -R $data/validation > lists/validation.txt
    deps: [$data/validation]
    outs: [lists/validation.txt]
  count:
    cmd: cat lists/train.txt lists/validation.txt | grep -c jpg > count.txt
    deps: [lists/train.txt, lists/validation.txt]
    outs: [count.txt]"
echo "$stages" > "$work/pipeline/pipeline.yaml"
echo "$stages" > "$work/dvc/dvc.yaml"

(cd "$work/pipeline" && "$PIPELINE" -q run)
(cd "$work/dvc" && "$dvc" init --no-scm -q && "$dvc" config core.analytics false && "$dvc" config core.check_update false \
    && "$dvc" repro -q)

# Median wall time in ms of RUNS runs of a command (run in $1), after one warm-up run.
median_ms() {
    local dir=$1 before=$2
    shift 2
    local times=()
    (cd "$dir" && "$@" >/dev/null)
    for _ in $(seq "$runs"); do
        (cd "$dir" && eval "$before")
        local t0 t1
        t0=$(date +%s%N)
        (cd "$dir" && "$@" >/dev/null)
        t1=$(date +%s%N)
        times+=($(((t1 - t0) / 1000000)))
    done
    printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p"
}

# Both must agree that nothing is to be done.
(cd "$work/pipeline" && "$PIPELINE" status) | grep -vq 'up to date$' && { echo "pipeline: not up to date" >&2; exit 1; }
(cd "$work/dvc" && "$dvc" status) | grep -q 'up to date' || { echo "dvc: not up to date" >&2; exit 1; }

files=$(find "$data" -type f | wc -l)
pipeline_ms=$(median_ms "$work/pipeline" true "$PIPELINE" status)
dvc_ms=$(median_ms "$work/dvc" true "$dvc" status)
dvc_start_ms=$(median_ms "$work/dvc" true "$dvc" --version)
cold_ms=$(median_ms "$work/pipeline" 'rm -f .pipeline/hashes.json' "$PIPELINE" status)
version=$("$dvc" --version)

echo "no-op status over $files files ($(du -sh "$data" | cut -f1)), median of $runs runs, $(nproc) CPUs:"
echo "| command | median ms |"
echo "|---|---|"
echo "| pipeline status | $pipeline_ms |"
echo "| dvc status (DVC $version) | $dvc_ms |"
echo "| dvc --version (DVC's start-up alone, for reference) | $dvc_start_ms |"
echo "| pipeline status, hash cache deleted (hashes all $files files) | $cold_ms |"
echo "dvc / pipeline: $(awk "BEGIN { printf \"%.0f\", $dvc_ms / ($pipeline_ms > 0 ? $pipeline_ms : 1) }")x"
