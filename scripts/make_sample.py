#!/usr/bin/env python3
"""Builds data/sample/ from the shared Kaggle Dogs vs Cats split: the first N train and M
validation images per class (by Kaggle number), downscaled so that the longest side is at most
MAX_SIDE pixels (never upscaled), re-encoded as JPEG quality 85. Deterministic.

    .cache/python/bin/python scripts/make_sample.py ../shared/data/dogs-vs-cats data/sample
"""
import re
import sys
from pathlib import Path

from PIL import Image

TRAIN, VALIDATION, MAX_SIDE, QUALITY = 100, 50, 256, 85


def number(p: Path) -> int:
    return int(re.search(r"\.(\d+)\.", p.name).group(1))


def main(src: Path, dst: Path) -> None:
    for split, n in (("train", TRAIN), ("validation", VALIDATION)):
        for cls in ("cats", "dogs"):
            files = sorted((src / split / cls).glob("*.jpg"), key=number)[:n]
            assert len(files) == n, f"{src / split / cls}: only {len(files)} images"
            out = dst / split / cls
            out.mkdir(parents=True, exist_ok=True)
            for f in files:
                img = Image.open(f).convert("RGB")
                scale = MAX_SIDE / max(img.size)
                if scale < 1:
                    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
                img.save(out / f.name, "JPEG", quality=QUALITY, optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
