"""User data from paths: ``.npz`` and ``.csv`` files, and folders of MNIST-format IDX files.

- ``.npz``: arrays ``x`` and ``y`` (or ``x_train`` / ``y_train``, as ``export_dataset``
  writes them), optionally ``x_test`` / ``y_test``, ``classes`` (strings) and ``kind``.
  Without ``y`` the data is unlabelled and the task is reconstruct. Pickled (object) arrays
  are refused: zoo never loads with ``allow_pickle=True``.
- ``.csv``: a header row, numeric feature columns and one label column (the last unless
  ``label_column=NAME`` or ``INDEX``). Integer labels mean classify, decimals regress, and
  text labels are class names (classes sorted by name).
- a folder of IDX files named as MNIST and Fashion-MNIST ship them:
  ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each optionally gzipped (``.gz``); the format is that of
  http://yann.lecun.com/exdb/mnist/ (big-endian header, magic ``0 0 type rank``).

The kind follows the rank of ``x``: (N, F) vector, (N, T, F) sequence, (N, C, H, W) image;
IDX images (N, H, W), or any rank-3 ``x`` loaded with ``kind="image"``, get a channel axis.
The task follows ``y``: integer labels classify, floats regress (``task=`` overrides).
Without a test split, 20% is held out deterministically given the seed (stratified by class
for labelled classification data).

Only regular files are read (a FIFO or device named as data is refused, never waited on);
every size a header claims is checked against the bytes present before anything is
allocated; at most ``MAX_CLASSES`` classes. docs/data-files.md has the rules and the limits.
Every problem is one ``DataError`` naming the file, what was expected and what was received.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from zoo import checks
from zoo.data.csvfile import read_csv
from zoo.data.dataset import MAX_CLASSES, Dataset, as_float32
from zoo.data.npy import DEFLATE_MAX_RATIO, NpzArchive
from zoo.data.spec import KINDS, TASKS
from zoo.errors import ConfigError, DataError, describe_array
from zoo.userfile import file_size, human_bytes, open_regular, os_problem, shown

TEST_FRACTION = 0.2
EXTENSIONS = (".npz", ".csv")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]


def holdout_split(n: int, y: np.ndarray | None, fraction: float, seed: int):
    """Deterministic ``(train_index, test_index)``, both sorted, holding out ``fraction``.

    The test side has ``round(fraction * n)`` examples. With integer class labels ``y`` it
    is stratified: each class gives ``floor(fraction * count)`` examples, and the ones left
    over go to the classes with the largest remainders (ties to the lower label), so small
    classes still reach the test side. Members are chosen by a permutation that depends
    only on ``seed``. Without labels it is a plain seeded permutation.
    """
    rng = np.random.default_rng([int(seed), 0x7E57])
    n_test = int(round(n * fraction))
    if y is None:
        test = rng.permutation(n)[:n_test]
    else:
        # Each class's members in ascending order, classes by label: a stable sort groups
        # them in one pass (not one scan of y per class).
        labels, counts = np.unique(y, return_counts=True)
        quota = counts * fraction
        take = np.floor(quota).astype(np.int64)
        extra = n_test - int(take.sum())
        take[np.argsort(-(quota - take), kind="stable")[:max(extra, 0)]] += 1
        members = np.split(np.argsort(y, kind="stable"), np.cumsum(counts)[:-1])
        test = np.concatenate([rng.permutation(group)[:k].copy()
                               for group, k in zip(members, take)])
        del members
    mask = np.zeros(n, dtype=bool)
    mask[test] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def load_file(path, *, seed: int = 42, label_column: str | int | None = None,
              task: str | None = None, kind: str | None = None,
              test_fraction: float = TEST_FRACTION) -> Dataset:
    """A Dataset from a ``.npz`` / ``.csv`` file or a folder of IDX files.

    Args:
        path: the file or folder.
        seed: drives the held-out test split when the file has none.
        label_column: CSV only: the label column's name, or its 0-based index (default: the
            last column).
        task: ``classify`` / ``regress`` / ``reconstruct`` instead of the inferred task.
        kind: ``vector`` / ``sequence`` / ``image`` instead of the kind inferred from rank.
        test_fraction: the share held out when the file has no test split.
    """
    path = Path(path)
    if task is not None:
        checks.one_of(None, "task", task, TASKS)
    if kind is not None:
        checks.one_of(None, "kind", kind, KINDS)
    test_fraction = checks.number(None, "test_fraction", test_fraction, minimum=0, maximum=1,
                                  exclusive_minimum=True, exclusive_maximum=True)
    try:
        path.stat()
    except (OSError, ValueError) as exc:
        problem = "no such file or folder" if isinstance(exc, FileNotFoundError) else \
            f"cannot use it: {exc.strerror if isinstance(exc, OSError) else exc}"
        raise DataError(f"{shown(path)}: {problem}; expected a .npz or .csv file or a folder "
                        f"of IDX files") from None
    if path.is_dir():
        if label_column is not None:
            raise ConfigError(f"{path}: label_column applies to .csv files only")
        parts = _read_idx_folder(path)
    elif path.suffix.lower() == ".npz":
        if label_column is not None:
            raise ConfigError(f"{path}: label_column applies to .csv files only")
        parts = _read_npz(path)
    elif path.suffix.lower() == ".csv":
        parts = read_csv(path, label_column, task)
    else:
        raise DataError(f"{path}: unknown file type {path.suffix or '(no extension)'!r}; "
                        f"expected .npz, .csv or a folder of IDX files")
    return _assemble(path, parts, seed=seed, task=task, kind=kind, fraction=float(test_fraction))


# -- assembling a Dataset ----------------------------------------------------------------------

def _assemble(path: Path, parts: dict, *, seed, task, kind, fraction) -> Dataset:
    # taken out of parts, so each array is freed as soon as its split copies exist
    x, y = parts.pop("x"), parts.pop("y", None)
    x_test, y_test = parts.pop("x_test", None), parts.pop("y_test", None)
    classes = parts.get("classes")
    _check_x(path, "x", x)
    if x_test is not None:
        _check_x(path, "x_test", x_test)
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"{path}: x_test examples have shape {x_test.shape[1:]}; expected "
                            f"the shape of x's examples, {x.shape[1:]}")
    if x_test is None and y_test is not None:
        raise DataError(f"{path}: has y_test but no x_test; expected both or neither")
    if x_test is not None and (y is None) != (y_test is None):
        have, missing = ("y", "y_test") if y is not None else ("y_test", "y")
        raise DataError(f"{path}: has {have} but no {missing}; expected both or neither")
    for xn, yn, xa, ya in (("x", "y", x, y), ("x_test", "y_test", x_test, y_test)):
        if ya is not None:
            _check_y(path, yn, ya)
            if len(ya) != len(xa):
                raise DataError(f"{path}: len({xn}) = {len(xa)} but len({yn}) = {len(ya)}; "
                                f"expected one label per example")

    if task is None:
        task = parts.get("task") or _infer_task(y)
    _check_class_names(path, classes)
    if task == "reconstruct":
        y = y_test = None
    elif y is None:
        raise DataError(f"{path}: task {task} needs labels; the file has no y")
    elif task == "classify":
        y, y_test = _class_labels(path, "y", y), _class_labels(path, "y_test", y_test)

    kind = kind or parts.get("kind") or _infer_kind(x)
    ranks = {"vector": (2,), "sequence": (3,), "image": (3, 4)}[kind]
    if x.ndim not in ranks:
        raise DataError(f"{path}: {kind} data needs x of rank {' or '.join(map(str, ranks))}; "
                        f"received {describe_array(x)}")
    x, x_test = (_with_channel_axis(a) if kind == "image" and a is not None and a.ndim == 3
                 else a for a in (x, x_test))

    if x_test is None:
        stratified = task == "classify"
        train, test = holdout_split(len(x), y if stratified else None, fraction, seed)
        if len(train) == 0 or len(test) == 0:
            raise DataError(f"{path}: {len(x)} examples are too few to hold out a test split "
                            f"of {fraction:.0%}; expected at least {int(np.ceil(1 / fraction))}")
        x, x_test = x[train], x[test]
        if y is not None:
            y, y_test = y[train], y[test]
        del train, test
        split = f"{fraction:.0%} held out, stratified, seed {seed}" if stratified else \
            f"{fraction:.0%} held out, seed {seed}"
    else:
        split = "the file's own test split"

    if task == "classify" and classes is None:
        classes = [str(c) for c in range(int(max(y.max(), y_test.max())) + 1)]
    info = {"summary": parts.get("summary", f"user data from {path.name}"),
            "source": str(path), "licence": "as stated by the data's owner",
            "citation": "", "split": split, **parts.get("info", {})}
    return Dataset(path.stem or path.name, kind, task, x, y, x_test, y_test,
                   classes=classes if task == "classify" else None, info=info)


def _check_x(path, name, x):
    if x.dtype.kind not in "iufb":
        raise DataError(f"{path}: {name} must be numeric; received {describe_array(x)}")
    if x.ndim < 2 or x.ndim > 4:
        raise DataError(f"{path}: {name} must have rank 2 (N, F), 3 (N, T, F or N, H, W) or 4 "
                        f"(N, C, H, W); received {describe_array(x)}")
    if len(x) == 0 or x.size == 0:
        raise DataError(f"{path}: {name} is empty; expected at least one example; "
                        f"received {describe_array(x)}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"{path}: {name} contains NaN or Inf; expected finite values")
    as_float32(x, f"{path}: {name}")


def _check_y(path, name, y):
    if y.dtype.kind not in "iufb":
        raise DataError(f"{path}: {name} must be numeric; received {describe_array(y)}")
    if y.ndim not in (1, 2):
        raise DataError(f"{path}: {name} must be a vector of labels (N,) or targets (N, K); "
                        f"received {describe_array(y)}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{path}: {name} contains NaN or Inf; expected finite values")
    if y.dtype.kind == "f":
        as_float32(y, f"{path}: {name}")


def _check_class_names(path, classes):
    if classes is not None and len(classes) > MAX_CLASSES:
        raise DataError(f"{path}: {len(classes)} class names; expected at most {MAX_CLASSES} "
                        f"classes")


def _infer_task(y) -> str:
    if y is None:
        return "reconstruct"
    return "classify" if y.dtype.kind in "iub" else "regress"


def _class_labels(path, name, y):
    if y is None:
        return None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{path}: {name} must be a vector of class labels for classify; "
                        f"received {describe_array(y)}")
    if y.dtype.kind == "f" and not np.all(y == np.round(y)):
        raise DataError(f"{path}: {name} must hold integer class labels for classify; "
                        f"received non-integer values such as {y[y != np.round(y)][0]!r}")
    low, high = y.min(), y.max()
    if low < 0:
        raise DataError(f"{path}: {name} class labels must be >= 0; received {low!r}")
    if high >= MAX_CLASSES:
        # checked before the cast to int64, where 2**64-1 would read as -1
        raise DataError(f"{path}: {name} has class label {int(high)}, which would make "
                        f"{int(high) + 1} classes; expected class indices from 0 to "
                        f"{MAX_CLASSES - 1} (at most {MAX_CLASSES} classes)")
    return y.astype(np.int64, copy=False)


def _infer_kind(x) -> str:
    return {2: "vector", 3: "sequence", 4: "image"}[x.ndim]


def _with_channel_axis(x):
    return x[:, None, :, :]


# -- .npz ----------------------------------------------------------------------------------------

# The arrays zoo reads from an archive (under either name); any others are left unread.
_NPZ_MEMBERS = {"x": "x", "x_train": "x", "y": "y", "y_train": "y", "x_test": "x_test",
                "y_test": "y_test", "classes": "classes", "kind": "kind", "task": "task"}


def _read_npz(path: Path) -> dict:
    parts: dict = {}
    with NpzArchive(path) as archive:
        for key in archive.names:
            name = _NPZ_MEMBERS.get(key)
            if name is None:
                continue
            if name in parts:
                raise DataError(f"{path}: holds both {name} and {key}; expected one of them")
            parts[name] = archive.read(key)
        found = ", ".join(shown(n) for n in archive.names[:8]) or "no arrays"
    if "x" not in parts:
        raise DataError(f"{path}: missing array x; expected arrays x (or x_train) and "
                        f"optionally y, x_test, y_test; received {found}")
    if "classes" in parts:
        classes = parts["classes"]
        if classes.dtype.kind not in "US" or classes.ndim != 1:
            raise DataError(f"{path}: classes must be a vector of strings; received "
                            f"{describe_array(classes)}")
        _check_class_names(path, classes)
        parts["classes"] = [_text(c) for c in classes]
    for name, allowed in (("kind", KINDS), ("task", TASKS)):
        if name in parts:
            value = parts[name]
            if value.dtype.kind not in "US" or value.size != 1:
                raise DataError(f"{path}: {name} must be one string (one of "
                                f"{', '.join(allowed)}); received {describe_array(value)}")
            text = _text(value.reshape(()).item())
            if text not in allowed:
                raise DataError(f"{path}: {name} must be one of {', '.join(allowed)}; "
                                f"received {text[:40]!r}")
            parts[name] = text
    return parts


def _text(value) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


# -- IDX (MNIST format) --------------------------------------------------------------------------

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_FILES = {
    "x": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def read_idx(path) -> np.ndarray:
    """One IDX file (optionally gzipped) as an array, header and size validated.

    The header's claim (shape x item size) is compared with the bytes present before anything
    is allocated; a gzipped file may claim at most what deflate can expand it to (1032-fold),
    and decompression stops at the claim.
    """
    path = Path(path)
    with open_regular(path, shown(path)) as f:
        size = file_size(f)
        gzipped = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        stream = gzip.GzipFile(fileobj=f, mode="rb") if gzipped else f
        try:
            most = size * DEFLATE_MAX_RATIO if gzipped else size
            return _read_idx_stream(path, stream, most, gzipped)
        except (OSError, EOFError, zlib.error) as exc:
            if not gzipped:
                raise DataError(f"{path}: cannot read it ({exc})") from None
            raise DataError(f"{path}: corrupt gzip data ({exc}); expected a gzipped IDX "
                            f"file") from None


def _read_idx_stream(path, stream, most: int, gzipped: bool) -> np.ndarray:
    """The array in an IDX byte stream holding at most ``most`` bytes."""
    head = stream.read(4)
    if len(head) < 4:
        raise DataError(f"{path}: {len(head)} bytes is too short for an IDX header; expected "
                        f"at least 4 bytes (magic number)")
    zero, code, rank = int.from_bytes(head[:2], "big"), head[2], head[3]
    if zero != 0 or code not in _IDX_DTYPES or rank == 0:
        raise DataError(f"{path}: bad IDX magic number 0x{head.hex()}; expected 0x0000TTRR "
                        f"with type TT in 08, 09, 0b, 0c, 0d, 0e and rank RR >= 1")
    dims = stream.read(4 * rank)
    if len(dims) < 4 * rank:
        raise DataError(f"{path}: IDX header is cut short; expected {rank} dimension sizes")
    shape = tuple(int.from_bytes(dims[4 * i:4 * i + 4], "big") for i in range(rank))
    dtype = _IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: never wraps
    claim = f"IDX header says shape {shape} of {dtype.name} ({human_bytes(expected)} of data)"
    header = 4 + 4 * rank
    if expected == 0:  # also keeps shapes like (0, 2**32-1, 2**32-1) from numpy
        raise DataError(f"{path}: IDX header says shape {shape}, an empty array; expected "
                        f"at least one value")
    if header + expected > most:
        if gzipped:
            raise DataError(f"{path}: {claim}; this much gzip data cannot expand to more than "
                            f"{human_bytes(most)}")
        raise DataError(f"{path}: {claim}; received {human_bytes(most - header)}")
    data = bytearray(expected)
    view, got = memoryview(data), 0
    while got < expected and (n := stream.readinto(view[got:got + (16 << 20)])):
        got += n
    extra = len(stream.read(1 << 16)) if got == expected else 0
    if got != expected or extra:
        received = human_bytes(got) if not extra else "more bytes than that"
        raise DataError(f"{path}: {claim}; received {received}")
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, stems) -> Path | None:
    """The first of the names present (anything but a regular file is refused when read)."""
    for stem in stems:
        for name in (stem, stem + ".gz"):
            if (folder / name).exists():
                return folder / name
    return None


def _read_idx_folder(folder: Path) -> dict:
    try:
        found = {key: _find_idx(folder, stems) for key, stems in _IDX_FILES.items()}
        listing = "" if found["x"] is not None else \
            ", ".join(sorted(shown(p.name) for p in folder.iterdir())[:8]) or "nothing"
    except OSError as exc:
        raise DataError(f"{shown(folder)}: cannot read the folder: {os_problem(exc)}") from None
    if found["x"] is None:
        raise DataError(f"{folder}: no train-images-idx3-ubyte[.gz]; expected a folder of "
                        f"MNIST-format IDX files; received {listing}")
    if (found["x_test"] is None) != (found["y_test"] is None) or (
            found["y"] is None and found["y_test"] is not None):
        have = ", ".join(p.name for p in found.values() if p is not None)
        raise DataError(f"{folder}: incomplete IDX set ({have}); expected train images and "
                        f"labels, and t10k images and labels together")
    parts: dict = {}
    for key, file in found.items():
        if file is None:
            continue
        arr = read_idx(file)
        want = 3 if key.startswith("x") else 1
        if arr.ndim != want:
            what = "images (N, H, W)" if want == 3 else "labels (N,)"
            raise DataError(f"{file}: expected {what}; received {describe_array(arr)}")
        if key.startswith("x"):
            # Unsigned bytes are 0..255 intensities, as in MNIST: scale them to [0, 1].
            arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr
        parts[key] = arr
    parts["kind"] = "image"
    parts["summary"] = f"IDX images from {folder.name}"
    if "fashion" in folder.resolve().name.lower():
        parts["classes"] = list(FASHION_CLASSES)
    return parts
