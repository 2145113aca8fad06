#!/usr/bin/env bash
# The long fuzz runs: every sd-fuzz target for SECONDS (default 600), PARALLEL at a time
# (default 1), at the lowest CPU priority. Raw output (each target's stats JSON and its
# findings) goes to benches/fuzz/DATE/, with summary.md: executions, distinct outcomes (the
# coverage proxy), accepted inputs, corpus, peak allocation, slowest input, findings.
#
#   benches/fuzz/run.sh [SECONDS] [PARALLEL] [TARGET...]
#
# Environment: BIN, a folder holding a built sd-fuzz (default: `cargo build -p sd-fuzz`).
#
# The dev profile is used on purpose: integer overflow panics there (a finding) instead of
# wrapping. See crates/fuzz/README.md.
set -euo pipefail
secs=${1:-600}
par=${2:-1}
shift $(( $# < 2 ? $# : 2 ))
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ -z ${BIN:-} ]]; then
    cargo build --quiet --manifest-path "$root/Cargo.toml" -p sd-fuzz
    BIN=$root/target/debug
fi
# A copy, so that builds during the run do not replace the binary under test.
bin=$(mktemp /tmp/sd-fuzz.XXXXXX)
trap 'rm -f "$bin"' EXIT
cp "$BIN/sd-fuzz" "$bin" && chmod +x "$bin"
out=$root/benches/fuzz/$(date -u +%F)
mkdir -p "$out"
targets=("$@")
(( ${#targets[@]} )) || mapfile -t targets < <("$bin" --list)
echo "commit $(git -C "$root" rev-parse --short HEAD), $secs s per target, $par at a time, $(nproc) cores" >"$out/run.txt"
printf '%s\n' "${targets[@]}" | xargs -P "$par" -I{} sh -c \
    "nice -n 19 '$bin' --target {} --seconds $secs --seed 1 --out '$out/work-{}' >'$out/{}.json' 2>'$out/{}.stderr'; echo \"{} exit \$?\" >>'$out/run.txt'"
# Keep the findings (inputs and what they did), drop the work folders.
for t in "${targets[@]}"; do
    if [[ -d $out/work-$t/findings ]] && [[ -n $(ls -A "$out/work-$t/findings") ]]; then
        mkdir -p "$out/findings-$t" && cp -r "$out/work-$t/findings/." "$out/findings-$t/"
    fi
    rm -rf "$out/work-$t"
    [[ -s $out/$t.stderr ]] || rm -f "$out/$t.stderr"
done
python3 - "$out" "${targets[@]}" <<'PY' | tee "$out/summary.md"
import json, sys, os
out, targets = sys.argv[1], sys.argv[2:]
print("| target | seconds | executions | exec/s | distinct outcomes | accepted | corpus | peak alloc (bytes / input bytes) | max alloc per input byte | slowest (s) | findings |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for t in targets:
    try:
        s = json.load(open(os.path.join(out, t + ".json")))
    except Exception as e:
        print(f"| {t} | run failed: {e} |"); continue
    kinds = {}
    for f in s["findings"]:
        kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
    found = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "none"
    print(f"| {t} | {s['seconds']:.0f} | {s['executions']} | {s['executions'] / max(s['seconds'], 1e-9):.0f} | {len(s['outcomes'])} | {s['accepted']} | {s['corpus']} | {s['peak_alloc'][0]} / {s['peak_alloc'][1]} | {s['peak_ratio']:.1f} | {s['slowest_seconds']:.3f} | {found} |")
PY
