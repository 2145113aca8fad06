#!/usr/bin/env bash
# Runs a pipeline file with the given binaries in a scratch folder and compares every artifact
# with a baseline run's artifacts: byte for byte (sha256), except the files that carry timings,
# which are compared with their timing fields left out (JSON keys naming seconds or a rate,
# history.csv's `seconds` column) or, where timings are woven into the content (the report's
# index.html, pipeline.lock), not compared. Exit 0 when nothing differs, 1 otherwise.
#
#   scripts/compare-artifacts.sh --bin DIR --baseline ARTIFACTS [--pipeline FILE] [--scratch DIR]
#
#   --bin DIR            the binaries to run (their `pipeline`, which puts DIR first on PATH)
#   --baseline DIR       the artifacts/ folder of a run of the same pipeline file with the old binaries
#   --pipeline FILE      the pipeline definition [default: pipeline.yaml of this checkout]
#   --scratch DIR        where to run [default: a new temporary folder]; data/ and .cache/ of this
#                        checkout are linked into it
#
# Example (the refactor check: the old pipeline file, the new binaries, the old run's artifacts):
#   scripts/compare-artifacts.sh --bin target/release --baseline /work/base-artifacts \
#       --pipeline /work/base/pipeline.yaml
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin="" baseline="" pipeline="$root/pipeline.yaml" scratch=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin=$(cd "$2" && pwd); shift 2 ;;
        --baseline) baseline=$(cd "$2" && pwd); shift 2 ;;
        --pipeline) pipeline=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
        --scratch) scratch="$2"; shift 2 ;;
        *) echo "usage: $0 --bin DIR --baseline ARTIFACTS [--pipeline FILE] [--scratch DIR]" >&2; exit 2 ;;
    esac
done
if [ -z "$bin" ] || [ -z "$baseline" ]; then
    echo "usage: $0 --bin DIR --baseline ARTIFACTS [--pipeline FILE] [--scratch DIR]" >&2
    exit 2
fi
[ -x "$bin/pipeline" ] || { echo "error: $bin/pipeline not found; build with cargo build --release" >&2; exit 2; }
scratch=${scratch:-$(mktemp -d "${TMPDIR:-/tmp}/compare-artifacts.XXXXXX")}
mkdir -p "$scratch"
cp "$pipeline" "$scratch/pipeline.yaml"
ln -sfn "$root/data" "$scratch/data"
ln -sfn "$root/.cache" "$scratch/.cache"

echo "running $pipeline with $bin in $scratch" >&2
(cd "$scratch" && "$bin/pipeline" run -q)

python3 - "$baseline" "$scratch/artifacts" <<'EOF'
import csv, hashlib, io, json, os, re, sys

base, new = sys.argv[1], sys.argv[2]
# Woven through with timings: not compared.
SKIP = {"report/index.html", "pipeline.lock"}
TIMING_KEY = re.compile(r"seconds|per_second|elapsed|duration|started|finished")

def files(top):
    out = set()
    for d, _, names in os.walk(top):
        for n in names:
            p = os.path.relpath(os.path.join(d, n), top)
            if not p.startswith(".") and "/." not in p:
                out.add(p)
    return out

def untimed_json(v):
    if isinstance(v, dict):
        return {k: untimed_json(x) for k, x in v.items() if not TIMING_KEY.search(k)}
    if isinstance(v, list):
        return [untimed_json(x) for x in v]
    return v

def untimed(p, data):
    """The content without its timings, for the files that carry some (None: no such file)."""
    if p.endswith(".json"):
        return json.dumps(untimed_json(json.loads(data))).encode(), "timings left out"
    if p.endswith(".csv") and data.startswith(b"epoch,") and b"seconds" in data.split(b"\n", 1)[0]:
        rows = list(csv.reader(io.StringIO(data.decode())))
        keep = [i for i, h in enumerate(rows[0]) if h != "seconds"]
        return "\n".join(",".join(r[i] for i in keep) for r in rows if r).encode(), "seconds column left out"
    return None, None

a, b = files(base), files(new)
same = differ = 0
lines = []
for p in sorted(a | b):
    if p in SKIP or p.startswith("pipeline.lock"):
        lines.append(f"skipped (timings)  {p}")
        continue
    if p not in b:
        lines.append(f"ONLY IN BASELINE   {p}"); differ += 1; continue
    if p not in a:
        lines.append(f"ONLY IN NEW        {p}"); differ += 1; continue
    x, y = (open(os.path.join(top, p), "rb").read() for top in (base, new))
    if hashlib.sha256(x).digest() == hashlib.sha256(y).digest():
        same += 1
        continue
    (ux, how), (uy, _) = untimed(p, x), untimed(p, y)
    if ux is not None and ux == uy:
        same += 1
        lines.append(f"same ({how})  {p}")
    else:
        differ += 1
        lines.append(f"DIFFERS            {p}")
print("\n".join(lines))
print(f"{same} identical, {differ} different, of {len(a | b)} files (baseline {base}, new {new})")
sys.exit(1 if differ else 0)
EOF
