#!/usr/bin/env python3
"""Builds a small committed sample from a shared class-folder data set: the first TRAIN and
VALIDATION images of every class folder (Kaggle numbers like cat.12.jpg in numeric order,
other names in name order), downscaled so that the longest side is at most MAX_SIDE pixels
(never upscaled), re-encoded as JPEG quality 85. Deterministic.

    .cache/python/bin/python scripts/make_sample.py ../shared/data/dogs-vs-cats data/sample
    .cache/python/bin/python scripts/make_sample.py ../shared/data/flowers data/flowers-sample 12 4 128
"""
import re
import sys
from pathlib import Path

from PIL import Image

QUALITY = 85


def order(p: Path):
    m = re.search(r"\.(\d+)\.", p.name)
    return (0, int(m.group(1)), p.name) if m else (1, 0, p.name)


def main(src: Path, dst: Path, train: int = 100, validation: int = 50, max_side: int = 256) -> None:
    for split, n in (("train", train), ("validation", validation)):
        for cls in sorted(d.name for d in (src / split).iterdir() if d.is_dir()):
            files = sorted((src / split / cls).glob("*.jpg"), key=order)[:n]
            assert len(files) == n, f"{src / split / cls}: only {len(files)} images"
            out = dst / split / cls
            out.mkdir(parents=True, exist_ok=True)
            for f in files:
                img = Image.open(f).convert("RGB")
                scale = max_side / max(img.size)
                if scale < 1:
                    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
                img.save(out / f.name, "JPEG", quality=QUALITY, optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), *map(int, sys.argv[3:]))
