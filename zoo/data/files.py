"""User data from paths: ``.npz`` and ``.csv`` files, and folders of MNIST-format IDX files.

- ``.npz``: arrays ``x`` and ``y`` (or ``x_train`` / ``y_train``, as ``export_dataset``
  writes them), optionally ``x_test`` / ``y_test``, ``classes`` (strings) and ``kind``.
  Without ``y`` the data is unlabelled and the task is reconstruct. Pickled (object) arrays
  are refused: zoo never loads with ``allow_pickle=True``.
- ``.csv``: a header row, numeric feature columns and one label column (the last unless
  ``label_column=NAME``). Integer labels mean classify, decimals regress, and text labels are
  class names (classes sorted by name).
- a folder of IDX files named as MNIST and Fashion-MNIST ship them:
  ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each optionally gzipped (``.gz``); the format is that of
  http://yann.lecun.com/exdb/mnist/ (big-endian header, magic ``0 0 type rank``).

The kind follows the rank of ``x``: (N, F) vector, (N, T, F) sequence, (N, C, H, W) image;
IDX images (N, H, W), or any rank-3 ``x`` loaded with ``kind="image"``, get a channel axis.
The task follows ``y``: integer labels classify, floats regress (``task=`` overrides).
Without a test split, 20% is held out deterministically given the seed (stratified by class
for labelled classification data).

Every problem is one ``DataError`` naming the file, what was expected and what was received.
"""

from __future__ import annotations

import csv
import gzip
import zipfile
from pathlib import Path

import numpy as np

from zoo import checks
from zoo.data.dataset import Dataset
from zoo.data.spec import KINDS, TASKS
from zoo.errors import ConfigError, DataError, describe_array

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
        labels, counts = np.unique(y, return_counts=True)
        quota = counts * fraction
        take = np.floor(quota).astype(np.int64)
        extra = n_test - int(take.sum())
        take[np.argsort(-(quota - take), kind="stable")[:max(extra, 0)]] += 1
        test = np.concatenate([rng.permutation(np.flatnonzero(y == label))[:k]
                               for label, k in zip(labels, take)])
    mask = np.zeros(n, dtype=bool)
    mask[test] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def load_file(path, *, seed: int = 42, label_column: str | None = None, task: str | None = None,
              kind: str | None = None, test_fraction: float = TEST_FRACTION) -> Dataset:
    """A Dataset from a ``.npz`` / ``.csv`` file or a folder of IDX files.

    Args:
        path: the file or folder.
        seed: drives the held-out test split when the file has none.
        label_column: CSV only: the name of the label column (default: the last column).
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
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; expected a .npz or .csv file or "
                        f"a folder of IDX files")
    if path.is_dir():
        if label_column is not None:
            raise ConfigError(f"{path}: label_column applies to .csv files only")
        parts = _read_idx_folder(path)
    elif path.suffix.lower() == ".npz":
        if label_column is not None:
            raise ConfigError(f"{path}: label_column applies to .csv files only")
        parts = _read_npz(path)
    elif path.suffix.lower() == ".csv":
        parts = _read_csv(path, label_column, task)
    else:
        raise DataError(f"{path}: unknown file type {path.suffix or '(no extension)'!r}; "
                        f"expected .npz, .csv or a folder of IDX files")
    return _assemble(path, parts, seed=seed, task=task, kind=kind, fraction=float(test_fraction))


# -- assembling a Dataset ----------------------------------------------------------------------

def _assemble(path: Path, parts: dict, *, seed, task, kind, fraction) -> Dataset:
    x, y = parts["x"], parts.get("y")
    x_test, y_test = parts.get("x_test"), parts.get("y_test")
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
        strata = y if task == "classify" else None
        train, test = holdout_split(len(x), strata, fraction, seed)
        if len(train) == 0 or len(test) == 0:
            raise DataError(f"{path}: {len(x)} examples are too few to hold out a test split "
                            f"of {fraction:.0%}; expected at least {int(np.ceil(1 / fraction))}")
        x, x_test = x[train], x[test]
        if y is not None:
            y, y_test = y[train], y[test]
        split = f"{fraction:.0%} held out, stratified, seed {seed}" if strata is not None else \
            f"{fraction:.0%} held out, seed {seed}"
    else:
        split = "the file's own test split"

    if task == "classify" and classes is None:
        top = int(max(y.max(), y_test.max())) + 1
        classes = [str(c) for c in range(top)]
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


def _check_y(path, name, y):
    if y.dtype.kind not in "iufb":
        raise DataError(f"{path}: {name} must be numeric; received {describe_array(y)}")
    if y.ndim not in (1, 2):
        raise DataError(f"{path}: {name} must be a vector of labels (N,) or targets (N, K); "
                        f"received {describe_array(y)}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{path}: {name} contains NaN or Inf; expected finite values")


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
    if y.min() < 0:
        raise DataError(f"{path}: {name} class labels must be >= 0; received {y.min()!r}")
    return y.astype(np.int64)


def _infer_kind(x) -> str:
    return {2: "vector", 3: "sequence", 4: "image"}[x.ndim]


def _with_channel_axis(x):
    return x[:, None, :, :]


# -- .npz ----------------------------------------------------------------------------------------

_NPZ_ALIASES = {"x_train": "x", "y_train": "y"}


def _read_npz(path: Path) -> dict:
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; expected a .npz archive with an array x")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc}); expected a file written "
                        f"by numpy.savez with an array x") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: is a single .npy array; expected a .npz archive with arrays "
                        f"x and optionally y, x_test, y_test")
    parts: dict = {}
    with archive:
        for key in archive.files:
            name = _NPZ_ALIASES.get(key, key)
            if name in parts:
                raise DataError(f"{path}: holds both {name} and {key}; expected one of them")
            try:
                parts[name] = archive[key]
            except ValueError:
                raise DataError(f"{path}: array {key} has object dtype (pickled Python "
                                f"objects), which zoo never loads; expected numeric "
                                f"arrays") from None
            except (OSError, zipfile.BadZipFile, EOFError) as exc:
                raise DataError(f"{path}: array {key} is unreadable ({exc})") from None
    if "x" not in parts:
        found = ", ".join(archive.files) or "no arrays"
        raise DataError(f"{path}: missing array x; expected arrays x (or x_train) and "
                        f"optionally y, x_test, y_test; received {found}")
    if "classes" in parts:
        classes = parts["classes"]
        if classes.dtype.kind not in "US" or classes.ndim != 1:
            raise DataError(f"{path}: classes must be a vector of strings; received "
                            f"{describe_array(classes)}")
        parts["classes"] = [str(c) for c in classes]
    if "kind" in parts:
        kind = str(parts["kind"])
        if kind not in KINDS:
            raise DataError(f"{path}: kind must be one of {', '.join(KINDS)}; received {kind!r}")
        parts["kind"] = kind
    return parts


# -- .csv ----------------------------------------------------------------------------------------

def _read_csv(path: Path, label_column: str | None, task: str | None) -> dict:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            # Keep each row's line number for messages; blank lines are skipped.
            rows, lines = [], []
            for row in reader:
                if any(cell.strip() for cell in row):
                    rows.append(row)
                    lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc}); expected a CSV table") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None
    if not rows:
        raise DataError(f"{path}: the file is empty; expected a header row and data rows")
    header = [h.strip() for h in rows[0]]
    if all(_is_number(h) for h in header):
        raise DataError(f"{path}: the first row {rows[0][:4]}... looks like data; expected a "
                        f"header row naming the columns")
    body, lines = rows[1:], lines[1:]
    if not body:
        raise DataError(f"{path}: has a header but no data rows; expected at least one row")
    for line, row in zip(lines, body):
        if len(row) != len(header):
            raise DataError(f"{path}: line {line} has {len(row)} values; expected {len(header)}, "
                            f"one per header column")

    unlabelled = task == "reconstruct" and label_column is None
    if unlabelled:
        label_at = None
    elif label_column is None:
        label_at = len(header) - 1
    elif label_column in header:
        label_at = header.index(label_column)
    else:
        raise DataError(f"{path}: no column named {label_column!r}; the header has "
                        f"{', '.join(header)}")
    features = [j for j in range(len(header)) if j != label_at]
    if not features:
        raise DataError(f"{path}: only the label column {header[label_at]!r}; expected at "
                        f"least one feature column")

    try:
        x = np.array([[float(row[j]) for j in features] for row in body], dtype=np.float64)
    except ValueError:
        i, j = next((i, j) for i, row in enumerate(body) for j in features
                    if not _is_number(row[j]))
        raise DataError(f"{path}: line {lines[i]}, column {header[j]!r}: expected a number; "
                        f"received {body[i][j]!r}") from None
    parts: dict = {"x": x, "info": {"columns": [header[j] for j in features]}}
    if label_at is None:
        return parts
    parts["info"]["label_column"] = header[label_at]
    cells = [row[label_at].strip() for row in body]
    if any(not c for c in cells):
        line = lines[cells.index("")]
        raise DataError(f"{path}: line {line} has no value in the label column "
                        f"{header[label_at]!r}; expected a label on every row")
    if all(_is_int(c) for c in cells):
        parts["y"] = np.array([int(c) for c in cells], dtype=np.int64)
    elif all(_is_number(c) for c in cells):
        parts["y"] = np.array([float(c) for c in cells], dtype=np.float64)
    else:
        if task == "regress":
            bad = next(c for c in cells if not _is_number(c))
            raise DataError(f"{path}: column {header[label_at]!r} must hold numbers to "
                            f"regress; received {bad!r}")
        names = sorted(set(cells))
        lookup = {name: i for i, name in enumerate(names)}
        parts["y"] = np.array([lookup[c] for c in cells], dtype=np.int64)
        parts["classes"] = names
    return parts


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


# -- IDX (MNIST format) --------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_FILES = {
    "x": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def read_idx(path) -> np.ndarray:
    """One IDX file (optionally gzipped) as an array, header and size validated."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: corrupt gzip data ({exc}); expected a gzipped IDX file") \
            from None
    if len(raw) < 4:
        raise DataError(f"{path}: {len(raw)} bytes is too short for an IDX header; expected "
                        f"at least 4 bytes (magic number)")
    zero, code, rank = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or code not in _IDX_DTYPES or rank == 0:
        raise DataError(f"{path}: bad IDX magic number 0x{raw[:4].hex()}; expected 0x0000TTRR "
                        f"with type TT in 08, 09, 0b, 0c, 0d, 0e and rank RR >= 1")
    header = 4 + 4 * rank
    if len(raw) < header:
        raise DataError(f"{path}: IDX header is cut short; expected {rank} dimension sizes")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(rank))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX header says shape {shape} of {dtype.name} "
                        f"({expected} bytes of data); received {len(raw) - header} bytes")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, stems) -> Path | None:
    for stem in stems:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _read_idx_folder(folder: Path) -> dict:
    found = {key: _find_idx(folder, stems) for key, stems in _IDX_FILES.items()}
    if found["x"] is None:
        listing = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
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
