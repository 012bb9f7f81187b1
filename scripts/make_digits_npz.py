"""Convert scikit-learn's copy of the UCI optical digits into zoo's shipped ``digits.npz``.

One-off: the output is committed as ``zoo/data/digits.npz``, so zoo never needs scikit-learn.
The source is the 8x8 version of 1797 images (64 pixel columns in 0..16, then the label),
found inside scikit-learn's wheel at ``sklearn/datasets/data/digits.csv.gz``.

Usage:
    python scripts/make_digits_npz.py [PATH/TO/digits.csv.gz] [--out zoo/data/digits.npz]

Data: E. Alpaydin and C. Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine
Learning Repository, 1998, https://doi.org/10.24432/C50P49, licensed CC BY 4.0.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "zoo" / "data" / "digits.npz"


def find_sklearn_csv() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("scikit-learn is not installed; pass the path to digits.csv.gz")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (1797, 65):
        sys.exit(f"{path}: expected 1797 rows of 65 columns; received shape {table.shape}")
    pixels, labels = table[:, :64], table[:, 64]
    if pixels.min() < 0 or pixels.max() > 16 or labels.min() < 0 or labels.max() > 9:
        sys.exit(f"{path}: expected pixels in 0..16 and labels in 0..9")
    return pixels.reshape(-1, 8, 8).astype(np.uint8), labels.astype(np.uint8)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", type=Path, help="path to sklearn's digits.csv.gz")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the .npz to write")
    args = parser.parse_args(argv)
    images, labels = read_csv(args.csv or find_sklearn_csv())
    tmp = args.out.with_name(args.out.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, images=images, labels=labels)
    os.replace(tmp, args.out)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, sha256 {digest})")
    print(f"array digest (sha256 of images then labels bytes): "
          f"{hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()}")


if __name__ == "__main__":
    main()
