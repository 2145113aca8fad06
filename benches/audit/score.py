#!/usr/bin/env python3
"""Scores an audit against what was planted (benches/audit/run.sh). Standard library only.

  score.py flips SUSPECTS_CSV PLANTED_CSV      precision and recall of the suspects at cut-offs
  score.py copies DUPLICATES_CSV PLANTED_CSV   how many planted copies were found as cross-split pairs
"""
import csv
import sys


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def ends(file, rel):
    return file == rel or file.endswith("/" + rel)


def flips(suspects_csv, planted_csv):
    suspects = [r["file"] for r in rows(suspects_csv)]
    planted = [r["file"] for r in rows(planted_csv)]
    hit = [any(ends(s, p) for p in planted) for s in suspects]
    print(f"planted flips: {len(planted)}; suspects listed: {len(suspects)}")
    print("cut-off | flipped found | precision | recall")
    for cut in [25, 50, 75, 100, 150, 200, 300, len(suspects)]:
        found = sum(hit[:cut])
        n = min(cut, len(suspects))
        print(f"{cut:7d} | {found:13d} | {found / max(n, 1):9.3f} | {found / len(planted):6.3f}")


def copies(duplicates_csv, planted_csv):
    pairs = rows(duplicates_csv)
    planted = rows(planted_csv)
    found = 0
    for p in planted:
        a, b = p["original"], p["copy"]
        match = [d for d in pairs if (ends(d["file_a"], a) and ends(d["file_b"], b)) or (ends(d["file_a"], b) and ends(d["file_b"], a))]
        ok = [d for d in match if d["kind"].endswith("cross-split")]
        found += bool(ok)
        sim = f"{float(ok[0]['similarity']):.4f}" if ok else "missed"
        print(f"{p['original']} -> {p['copy']}: {sim}")
    others = [d for d in pairs if d["kind"].endswith("cross-split") and not any(ends(d["file_b"], p["copy"]) or ends(d["file_a"], p["copy"]) for p in planted)]
    print(f"planted copies found as cross-split pairs: {found} of {len(planted)}; other cross-split pairs: {len(others)}; pairs in all: {len(pairs)}")


if __name__ == "__main__":
    {"flips": flips, "copies": copies}[sys.argv[1]](*sys.argv[2:])
