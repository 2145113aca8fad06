#!/usr/bin/env bash
# The kill loop: SIGKILL at random moments of bottleneck, augment, train-head, finetune, split
# (class folders), audit, `pipeline run` (with its run cache) and `pipeline sweep` on a tiny
# pipeline, and after every kill check that
#   * no artifact looks complete unless it is: an output folder that exists equals the clean
#     run's, byte for byte (the killed run left the old output, or nothing);
#   * pipeline.lock parses (after a killed `pipeline run`);
#   * the next run completes, equals the clean run byte for byte, and leaves no scratch;
#   * after a killed `pipeline run`, every other round with the artifacts deleted first, so the
#     next run restores what it can from the run cache: no entry the kill left half-written is
#     restored (what is restored equals the clean run);
#   * after a killed sweep, the sweep completes and the base params restore the clean artifacts.
# See README.md next to this script.
#
#   benches/reliability/kill-loop.sh [ROUNDS]   (default 13: 104 kills over 8 targets)
#
# Environment: BIN (a folder of built binaries; default: `cargo build`, target/debug), SEED (of
# the random kill moments; default 1). Needs scripts/setup.sh's .cache (VGG16, ONNX Runtime).
set -euo pipefail

per=${1:-13}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ -z ${BIN:-} ]]; then
    cargo build --quiet --manifest-path "$root/Cargo.toml" --bins
    BIN=$root/target/debug
fi
BIN=$(cd "$BIN" && pwd)
RANDOM=${SEED:-1}

work=$(mktemp -d /tmp/kill-loop.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
ln -s "$root/.cache" .cache
# 8 + 8 training and 4 + 4 validation photos of the committed sample, at 32x32: each run is short.
for split in train:8 validation:4; do
    for class in cats dogs; do
        mkdir -p "data/tiny/${split%:*}/$class"
        find "$root/data/sample/${split%:*}/$class" -name '*.jpg' | sort | head -n "${split#*:}" |
            xargs cp -t "data/tiny/${split%:*}/$class"
    done
done
cp "$root/pipeline.yaml" .
sets=(--set data=data/tiny --set size=32 --set batch_size=4 --set epochs=3 --set augment_rounds=1
      --set finetune_epochs=2 --set cache_rounds=1 --set device=cpu)
pipeline() { "$BIN/pipeline" -q "$@"; }

fail() { echo "FAIL: $*" >&2; exit 1; }

# Trees equal byte for byte (hidden scratch aside, which the next run removes), but for the
# wall-clock timings the trainers and predict record (JSON keys and CSV columns named *second*)
# and the report's page, which shows each stage's time and the previous run (it must exist);
# "absent" when `$2` does not exist.
same() { python3 - "$1" "$2" <<'EOF'
import json, os, sys
def untimed(v):
    if isinstance(v, dict):
        return {k: untimed(x) for k, x in v.items() if 'second' not in k}
    return [untimed(x) for x in v] if isinstance(v, list) else v
def content(path):
    if path.endswith(os.path.join('report', 'index.html')):
        return b'a report page'
    data = open(path, 'rb').read()
    if path.endswith('.json'):
        return json.dumps(untimed(json.loads(data)), sort_keys=True).encode()
    if path.endswith('.csv'):
        rows = [r.split(b',') for r in data.split(b'\n')]
        keep = [i for i, h in enumerate(rows[0]) if b'second' not in h]
        return b'\n'.join(b','.join(r[i] for i in keep if i < len(r)) for r in rows)
    return data
def files(top):
    out = {}
    for d, dirs, names in os.walk(top):
        dirs[:] = [x for x in dirs if not x.startswith('.')]
        for n in names:
            if not n.startswith('.'):
                p = os.path.join(d, n)
                out[os.path.relpath(p, top)] = content(p)
    return out
ref, got = sys.argv[1:]
if not os.path.exists(got):
    print('absent'); sys.exit(0)
a, b = files(ref), files(got)
diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
if diff:
    print('differs: ' + ', '.join(diff[:5])); sys.exit(1)
print('equal')
EOF
}

no_scratch() {
    local left
    left=$(find "$@" -name '.*partial*' 2>/dev/null | head -3)
    [[ -z $left ]] || fail "scratch left behind: $left"
}

# Milliseconds since the epoch.
now() { date +%s%3N; }

# The clean runs: the whole pipeline, then each stage alone (on the pipeline's inputs) into ref/.
t=$(now)
pipeline run "${sets[@]}" >clean.log 2>&1 || fail "the clean pipeline run failed: $(cat clean.log)"
pipeline_ms=$(( $(now) - t ))
cp -r artifacts ref-artifacts
declare -A cmds=(
    [bottleneck]="bottleneck --data data/tiny/train --model artifacts/model/conv_base.onnx --out OUT --size 32 --batch-size 4 --device cpu"
    [augment]="augment rounds --data data/tiny/train --out OUT --rounds 2 --size 32 --augment finetune --seed 3"
    [train-head]="train-head --train-features artifacts/features/train artifacts/features/augmented --validation-features artifacts/features/validation --out OUT --epochs 20 --seed 0"
    [split]="split --from data/tiny/train --out OUT --validation 0.25 --test 0.25 --seed 1 --link copy"
    [audit]="audit --features artifacts/features/train artifacts/features/validation --out OUT --seed 0"
    [finetune]="finetune --train data/tiny/train --validation data/tiny/validation --model-dir artifacts/model --head artifacts/head --out OUT --size 32 --batch-size 4 --epochs 2 --cache-rounds 1 --seed 1 --device cpu"
)
declare -A ms
mkdir -p ref out
for s in "${!cmds[@]}"; do
    t=$(now)
    # Written where the loop writes (an output may record its own path), then kept aside.
    # shellcheck disable=SC2086
    "$BIN"/${cmds[$s]//OUT/out/$s} -q >/dev/null || fail "the clean $s run failed"
    ms[$s]=$(( $(now) - t ))
    cp -r "out/$s" "ref/$s"
done
# A clean sweep (timed; it also fills the cache with both variants).
sweep_sets=()
# The last variant differs from the base params, so the run after a sweep restores from the cache.
for x in "${sets[@]}"; do [[ $x == epochs=* ]] && x=epochs=3,2; sweep_sets+=("$x"); done
t=$(now)
"$BIN/pipeline" -q sweep "${sweep_sets[@]}" >sweep.log 2>&1 || fail "the clean sweep failed: $(cat sweep.log)"
sweep_ms=$(( $(now) - t ))
pipeline run "${sets[@]}" >/dev/null 2>&1 || fail "the run after the clean sweep failed"
r=$(same ref-artifacts artifacts) || fail "the base params after a sweep: $r from the clean run"
restored=0
echo "clean runs (ms): pipeline $pipeline_ms, sweep $sweep_ms, $(for s in "${!ms[@]}"; do printf '%s %s, ' "$s" "${ms[$s]}"; done)"

kills=0 late=0
declare -A seen
for ((i = 0; i < per; i++)); do
    for s in bottleneck augment train-head finetune split audit; do
        # Every other round starts without an old output: both a fresh write and a replacement die.
        (( i % 2 )) && rm -rf "out/$s"
        delay=$(( RANDOM % ms[$s] ))
        # shellcheck disable=SC2086
        "$BIN"/${cmds[$s]//OUT/out/$s} -q 2>/dev/null &
        pid=$!
        sleep "$(awk "BEGIN {print $delay / 1000}")"
        kill -KILL "$pid" 2>/dev/null && kills=$((kills + 1)) || late=$((late + 1))
        wait "$pid" 2>/dev/null || true
        r=$(same "ref/$s" "out/$s") || fail "$s killed after $delay ms: out/$s looks complete but $r"
        seen[$s:$r]=$(( ${seen[$s:$r]:-0} + 1 ))
        # shellcheck disable=SC2086
        "$BIN"/${cmds[$s]//OUT/out/$s} -q >/dev/null || fail "$s: the run after a kill failed"
        r=$(same "ref/$s" "out/$s") || fail "$s: the run after a kill $r from the clean run"
        no_scratch out
    done

    # `pipeline run --force` killed at a random moment; its stages die with it (the watchdogs
    # stop them; the run lock is held until they have).
    delay=$(( RANDOM % pipeline_ms ))
    "$BIN/pipeline" -q run --force "${sets[@]}" 2>/dev/null &
    pid=$!
    sleep "$(awk "BEGIN {print $delay / 1000}")"
    kill -KILL "$pid" 2>/dev/null && kills=$((kills + 1)) || late=$((late + 1))
    wait "$pid" 2>/dev/null || true
    flock .pipeline/run.lock true
    [[ ! -e pipeline.lock ]] || python3 -c 'import json, sys; json.load(open(sys.argv[1]))' pipeline.lock ||
        fail "pipeline.lock does not parse after a kill at $delay ms"
    for a in model features/train features/validation augmented features/augmented head finetune predict; do
        r=$(same "ref-artifacts/$a" "artifacts/$a") ||
            fail "pipeline killed after $delay ms: artifacts/$a looks complete but $r"
        seen[pipeline:$r]=$(( ${seen[pipeline:$r]:-0} + 1 ))
    done
    # Every other round, nothing left in place: the next run restores every stage the cache has
    # a complete entry for (the kill may have left one half-stored), and runs the others.
    (( i % 2 )) && rm -rf artifacts
    "$BIN/pipeline" run --wait "${sets[@]}" >rerun.log 2>&1 || fail "pipeline: the run after a kill failed: $(cat rerun.log)"
    n=$(grep -o 'restored [0-9]* from cache' rerun.log | grep -o '[0-9]*' || true)
    restored=$(( restored + ${n:-0} ))
    r=$(same ref-artifacts artifacts) || fail "pipeline: the run after a kill $r from the clean run ($(grep -o 'restored.*' rerun.log))"
    python3 -c 'import json, sys; json.load(open(sys.argv[1]))' pipeline.lock || fail "pipeline.lock does not parse"
    no_scratch artifacts

    # `pipeline sweep` over two epoch counts killed at a random moment (the cache serves the
    # feature stages, the head and what follows run or restore); then the sweep completes, and
    # the base params bring back the clean artifacts from the cache.
    delay=$(( RANDOM % sweep_ms ))
    "$BIN/pipeline" -q sweep "${sweep_sets[@]}" >/dev/null 2>&1 &
    pid=$!
    sleep "$(awk "BEGIN {print $delay / 1000}")"
    kill -KILL "$pid" 2>/dev/null && kills=$((kills + 1)) || late=$((late + 1))
    wait "$pid" 2>/dev/null || true
    flock .pipeline/run.lock true
    python3 -c 'import json, sys; json.load(open(sys.argv[1]))' pipeline.lock ||
        fail "pipeline.lock does not parse after a sweep killed at $delay ms"
    "$BIN/pipeline" -q sweep --wait "${sweep_sets[@]}" >sweep.log 2>&1 || fail "the sweep after a kill failed: $(cat sweep.log)"
    "$BIN/pipeline" run --wait "${sets[@]}" >rerun.log 2>&1 || fail "pipeline: the run after a sweep failed: $(cat rerun.log)"
    n=$(grep -o 'restored [0-9]* from cache' rerun.log | grep -o '[0-9]*' || true)
    restored=$(( restored + ${n:-0} ))
    r=$(same ref-artifacts artifacts) || fail "pipeline: the run after a killed sweep $r from the clean run"
    no_scratch artifacts .pipeline
    echo "round $((i + 1))/$per: $kills kills so far ($late runs ended before their kill moment; $restored stages restored from the cache)"
done
echo "outputs found right after a kill: $(for k in "${!seen[@]}"; do printf '%s %s; ' "$k" "${seen[$k]}"; done)"
echo "PASS: $kills SIGKILLs ($restored stage restores from the run cache after kills); every output was the clean run's or absent; every next run equalled the clean run byte for byte"
