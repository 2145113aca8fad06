#!/usr/bin/env python3
"""Checks that every relative link in the user docs resolves: the file exists and, for a link
to a Markdown heading (`file.md#anchor`), the heading does (GitHub's anchor rule). Prints each
broken link and exits 1 if there is one.

    scripts/check-doc-links.py          (from anywhere; checks README.md, docs/, benches/, crates/*/)
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FENCE = re.compile(r"```.*?```", re.S)


def docs():
    for top in ["README.md", "data/README.md"]:
        yield top
    for folder in ["docs", "benches", "crates"]:
        for dirpath, dirnames, files in os.walk(os.path.join(ROOT, folder)):
            dirnames[:] = [d for d in dirnames if d not in ("target", "node_modules") and not d.startswith(".")]
            for f in files:
                if f.endswith(".md"):
                    yield os.path.relpath(os.path.join(dirpath, f), ROOT)


def slug(heading):
    heading = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return heading.replace(" ", "-")


def anchors(path):
    text = FENCE.sub("", open(path, encoding="utf-8").read())
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def main():
    broken = 0
    files = list(docs())
    for doc in files:
        text = FENCE.sub("", open(os.path.join(ROOT, doc), encoding="utf-8").read())
        for m in re.finditer(r"\]\(([^)\s]+)\)", text):
            link = m.group(1)
            if re.match(r"[a-z][a-z0-9+.-]*:", link):  # http:, mailto:, ...
                continue
            path, _, anchor = link.partition("#")
            target = os.path.normpath(os.path.join(ROOT, os.path.dirname(doc), path)) if path else os.path.join(ROOT, doc)
            if not os.path.exists(target):
                print(f"{doc}: {link}: no such file")
                broken += 1
            elif anchor and target.endswith(".md") and anchor not in anchors(target):
                print(f"{doc}: {link}: no such heading")
                broken += 1
    print(f"{len(files)} files checked, {broken} broken links")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
