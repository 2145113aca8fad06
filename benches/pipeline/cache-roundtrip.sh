#!/bin/sh
# The run cache on the sample pipeline: `size` 150 -> 224 -> 150. For each run: its wall time and
# what ran or was restored; then the third run's artifacts against the first run's (sha256 of
# every file), the size of artifacts/ after each run, and the run cache's size on disk, alone
# and together with artifacts/ (du counts a hard-linked file once).
#
#   benches/pipeline/cache-roundtrip.sh DIR [PIPELINE]
#
# DIR: a pipeline folder (pipeline.yaml, data/sample, .cache) whose artifacts/, pipeline.lock and
# .pipeline/ are removed first; PIPELINE: the `pipeline` binary (default: on PATH), with the stage
# binaries next to it.
set -eu
dir=${1:?usage: cache-roundtrip.sh DIR [PIPELINE]}
pipeline=${2:-pipeline}
cd "$dir"
rm -rf artifacts pipeline.lock .pipeline
sums() { find artifacts -type f | LC_ALL=C sort | xargs sha256sum; }
now() { date +%s.%N; }
echo "# $(date -u '+%Y-%m-%d %H:%M UTC') $(uname -srm), $(nproc) cores; pipeline: $pipeline"
n=0
for size in 150 224 150; do
    n=$((n + 1))
    start=$(now)
    "$pipeline" --set size=$size run 2>run-$n.log
    end=$(now)
    echo "run $n: size=$size wall $(echo "$end - $start" | bc) s; $(tail -n 1 run-$n.log)"
    echo "  artifacts/: $(du -sk artifacts | cut -f1) KiB on disk"
    sums > sums-$n.txt
done
if cmp -s sums-1.txt sums-3.txt; then echo "run 3's artifacts: byte-identical to run 1's ($(wc -l < sums-1.txt) files)"
else echo "run 3's artifacts DIFFER from run 1's:"; diff sums-1.txt sums-3.txt | head; fi
echo "run cache alone: $(du -sk .pipeline/cache | cut -f1) KiB on disk, $(find .pipeline/cache/objects -type f | wc -l) files, $(ls .pipeline/cache/entries | wc -l) entries"
echo "artifacts/ + run cache: $(du -sk -c artifacts .pipeline/cache | tail -n 1 | cut -f1) KiB on disk (hard links counted once)"
"$pipeline" runs
