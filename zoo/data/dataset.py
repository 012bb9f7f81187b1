"""The Dataset type: train and test arrays plus what they are."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from zoo.data.spec import DataSpec
from zoo.errors import DataError, describe_array

# Integer labels are class indices 0..K-1 with K = largest label + 1, so one stray label would
# otherwise size the model's output (and the list of class names) without bound.
MAX_CLASSES = 100_000
# The smallest magnitude that rounds to infinity as float32 (2**128 less half a unit in the
# last place): larger finite values cannot be stored in the float32 arrays zoo trains on.
FLOAT32_OVERFLOW = 2.0**128 - 2.0**103


@dataclass
class Dataset:
    """Arrays of one dataset, batch first, with its description.

    ``x_*`` are float32: vectors ``(N, F)``, sequences ``(N, T, F)``, images ``(N, C, H, W)``.
    ``y_*`` are int64 class labels ``(N,)`` for classify, float32 ``(N, K)`` targets for
    regress, and ``None`` for unlabelled data (reconstruct).
    """

    name: str
    kind: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    classes: list | None = None
    info: dict = field(default_factory=dict)  # summary, source, licence, citation

    def __post_init__(self):
        self.x_train = as_float32(self.x_train, f"dataset {self.name}: x_train")
        self.x_test = as_float32(self.x_test, f"dataset {self.name}: x_test")
        if self.task == "classify":
            self.y_train = _labels(self.y_train, "y_train")
            self.y_test = _labels(self.y_test, "y_test")
        elif self.y_train is not None:
            self.y_train = as_float32(self.y_train, f"dataset {self.name}: y_train")
            self.y_test = as_float32(self.y_test, f"dataset {self.name}: y_test")
            if self.y_train.ndim == 1:
                self.y_train = self.y_train[:, None]
                self.y_test = self.y_test[:, None]
        self.validate()

    @property
    def num_classes(self) -> int | None:  # capped at MAX_CLASSES by validate()
        if self.task != "classify":
            return len(self.classes) if self.classes else None
        if self.classes:
            return len(self.classes)
        assert self.y_train is not None  # __post_init__ made labels of classify data
        return int(self.y_train.max()) + 1

    @property
    def spec(self) -> DataSpec:
        if self.task == "classify":
            out = int(self.num_classes or 0)
        elif self.task == "regress" and self.y_train is not None:
            out = self.y_train.shape[1]
        else:
            out = int(np.prod(self.x_train.shape[1:]))
        return DataSpec(self.x_train.shape[1:], self.kind, self.task, out,
                        self.num_classes, self.name,
                        (float(self.x_train.min()), float(self.x_train.max())))

    def validate(self) -> None:
        """Raise one DataError naming what was expected and what was received."""
        rank = {"vector": 2, "sequence": 3, "image": 4}.get(self.kind)
        for split in ("train", "test"):
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            where = f"dataset {self.name}: x_{split}"
            if rank is not None and x.ndim != rank:
                raise DataError(f"{where} must have rank {rank} for {self.kind} data; "
                                f"received {describe_array(x)}")
            if len(x) == 0:
                raise DataError(f"{where} is empty; expected at least one example")
            if not np.isfinite(x).all():
                raise DataError(f"{where} contains NaN or Inf; expected finite values")
            if y is not None and len(y) != len(x):
                raise DataError(f"dataset {self.name}: len(x_{split}) = {len(x)} but "
                                f"len(y_{split}) = {len(y)}; expected equal lengths")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(f"dataset {self.name}: train examples have shape "
                            f"{self.x_train.shape[1:]} but test examples {self.x_test.shape[1:]}")
        if self.task == "classify":
            k = self.num_classes or 0  # never None when classifying
            if k > MAX_CLASSES:
                raise DataError(f"dataset {self.name}: {k} classes (largest label "
                                f"{k - 1}); expected at most {MAX_CLASSES} (MAX_CLASSES)")
            for split in ("train", "test"):
                y = getattr(self, f"y_{split}")
                if y.min() < 0 or y.max() >= k:
                    raise DataError(f"dataset {self.name}: y_{split} labels must be in "
                                    f"[0, {k}); received values from {y.min()} to {y.max()}")
        elif self.task == "regress" and self.y_train is not None and self.y_test is not None \
                and not (np.isfinite(self.y_train).all() and np.isfinite(self.y_test).all()):
            raise DataError(f"dataset {self.name}: targets contain NaN or Inf")

    def split_validation(self, fraction: float, seed: int):
        """Deterministic train/validation split of the training arrays.

        Returns ``(x_train, y_train, x_val, y_val)``; with ``fraction == 0`` the validation
        arrays are empty. The permutation depends only on ``seed``.
        """
        n = len(self.x_train)
        n_val = int(round(n * fraction))
        if fraction > 0 and (n_val < 1 or n_val >= n):
            raise DataError(f"dataset {self.name}: a validation fraction of {fraction} leaves "
                            f"{n_val} of {n} examples for validation")
        order = np.random.default_rng([seed, 0x5EED]).permutation(n)
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
        y = self.y_train
        return (self.x_train[train], None if y is None else y[train],
                self.x_train[val], None if y is None else y[val])

    def describe(self) -> dict:
        """What ``zoo dataset NAME --json`` prints."""
        return {
            "name": self.name, "task": self.task, "kind": self.kind,
            "input_shape": list(self.x_train.shape[1:]),
            "train_examples": len(self.x_train), "test_examples": len(self.x_test),
            "classes": self.classes if self.classes is not None else self.num_classes,
            **self.info,
        }


def as_float32(a, where) -> np.ndarray:
    """``a`` as contiguous float32; a value too large for float32 is an error, not an inf
    (and not a numpy overflow warning)."""
    a = np.asarray(a)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(a, dtype=np.float32)
    if a.dtype.kind == "f" and out.dtype != a.dtype and np.isinf(out).any() and (
            np.isinf(out) & np.isfinite(a)).any():
        raise DataError(f"{where} holds values beyond the float32 range (largest 3.4e38); "
                        f"expected smaller numbers")
    return out


def _labels(y, name) -> np.ndarray:
    if y is None:
        raise DataError(f"classification data needs labels; {name} is missing")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{name} must be a vector of class labels; received {describe_array(y)}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise DataError(f"{name} must hold integer class labels; received non-integer floats")
    elif y.dtype.kind not in "iub":
        raise DataError(f"{name} must hold integer class labels; received {y.dtype} values")
    if y.size and y.max() >= MAX_CLASSES:
        # checked before the cast: 2**64-1 as int64 would read as -1
        raise DataError(f"{name}: class label {int(y.max())} is too large; expected class "
                        f"indices below {MAX_CLASSES} (MAX_CLASSES)")
    return np.ascontiguousarray(y, dtype=np.int64)


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset as a plugin registers it: ``load(seed)`` returns the ``Dataset``.

    ``load`` should be deterministic in ``seed`` (generated data) or ignore it (shipped data).
    """

    name: str
    summary: str
    task: str
    kind: str
    load: Callable
    plugin: str = field(default="", compare=False)
