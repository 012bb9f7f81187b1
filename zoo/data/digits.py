"""UCI optical recognition of handwritten digits: 1797 8x8 images, shipped with zoo.

Data by E. Alpaydin and C. Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine
Learning Repository, 1998, https://doi.org/10.24432/C50P49, licensed CC BY 4.0 (see
``DIGITS_LICENSE.txt`` next to this file). 32x32 bitmaps were divided into 4x4 blocks and the
"on" pixels counted, giving integer pixels in 0..16. zoo ships the 1797-image version that
scikit-learn distributes, converted unchanged to ``digits.npz`` by
``scripts/make_digits_npz.py``.

Loaded as images (1, 8, 8) with pixels scaled to [0, 1]. The test split is fixed: a
stratified 20% of each class (359 images in all, see ``files.holdout_split``) chosen by a
permutation seeded with 42, whatever seed the run uses, so results on ``digits`` are
comparable across runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.data.dataset import Dataset
from zoo.data.files import holdout_split
from zoo.errors import DataError

NAME = "digits"
PATH = Path(__file__).with_name("digits.npz")
SPLIT_SEED = 42
TEST_FRACTION = 0.2
CLASSES = [str(d) for d in range(10)]

INFO = {
    "summary": "UCI optical handwritten digits: 1797 8x8 grey images, 10 classes",
    "source": "UCI Machine Learning Repository, "
              "https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits "
              "(the copy distributed with scikit-learn), shipped as zoo/data/digits.npz",
    "licence": "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)",
    "citation": "E. Alpaydin and C. Kaynak, \"Optical Recognition of Handwritten Digits\", "
                "UCI Machine Learning Repository, 1998, https://doi.org/10.24432/C50P49",
    "attribution": "Alpaydin & Kaynak (1998), UCI ML Repository, CC BY 4.0; converted to npz "
                   "without changes, pixels scaled to [0, 1] at load time",
    "split": "stratified 20% test (359 images), seed 42, fixed",
}


def raw() -> tuple[np.ndarray, np.ndarray]:
    """The shipped arrays: ``images`` uint8 (1797, 8, 8) in 0..16, ``labels`` uint8 (1797,)."""
    try:
        with np.load(PATH, allow_pickle=False) as archive:
            return archive["images"], archive["labels"]
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{PATH}: the shipped digits file is missing or damaged ({exc}); "
                        f"reinstall zoo") from None


def load(seed: int = 42) -> Dataset:
    """Digits as a Dataset: images (1, 8, 8) in [0, 1]; the split ignores ``seed``."""
    images, labels = raw()
    x = images[:, None, :, :].astype(np.float32) / 16.0
    y = labels.astype(np.int64)
    train, test = holdout_split(len(y), y, TEST_FRACTION, SPLIT_SEED)
    return Dataset(NAME, "image", "classify", x[train], y[train], x[test], y[test],
                   classes=list(CLASSES), info=dict(INFO))
