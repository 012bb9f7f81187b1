"""User data from paths: npz, csv and IDX round trips, export, and one DataError per bad file."""

import gzip
import os

import numpy as np
import pytest

from zoo.data import digits, synthetic
from zoo.data.files import holdout_split, load_file, read_idx
from zoo.data.load import export_dataset, load_dataset
from zoo.errors import ConfigError, DataError
from zoo.plugins import PluginHost


@pytest.fixture(scope="module")
def host():
    return PluginHost(load=[])


def _labelled(n=50, features=3, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, features)), np.arange(n) % classes


# -- npz --------------------------------------------------------------------------------------

def test_npz_without_test_split_holds_out_20_percent_stratified(tmp_path, host):
    x, y = _labelled()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_dataset(str(tmp_path / "d.npz"), host=host, seed=3)
    assert d.task == "classify" and d.kind == "vector" and d.name == "d"
    assert (len(d.x_train), len(d.x_test)) == (40, 10)
    np.testing.assert_array_equal(np.bincount(d.y_test), [2] * 5)
    # Every example lands in exactly one split, with its own label.
    rows = {tuple(np.round(r, 5)): label for r, label in zip(x.astype(np.float32), y)}
    for xs, ys in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        for r, label in zip(xs, ys):
            assert rows.pop(tuple(np.round(r, 5))) == label
    assert not rows
    again = load_file(tmp_path / "d.npz", seed=3)
    other = load_file(tmp_path / "d.npz", seed=4)
    np.testing.assert_array_equal(d.x_test, again.x_test)
    assert not np.array_equal(d.x_test, other.x_test)
    assert d.classes == ["0", "1", "2", "3", "4"]
    assert "20% held out" in d.info["split"]


def test_npz_with_test_split_and_float_targets_regress(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "r.npz", x=rng.random((20, 4, 2)), y=rng.random(20),
             x_test=rng.random((5, 4, 2)), y_test=rng.random(5))
    d = load_file(tmp_path / "r.npz")
    assert d.task == "regress" and d.kind == "sequence"
    assert d.y_train.shape == (20, 1) and d.x_test.shape == (5, 4, 2)
    assert d.info["split"] == "the file's own test split"


def test_npz_x_only_is_unlabelled_reconstruct(tmp_path):
    np.savez(tmp_path / "u.npz", x=np.random.default_rng(2).random((30, 6)))
    d = load_file(tmp_path / "u.npz")
    assert d.task == "reconstruct" and d.y_train is None and d.y_test is None
    assert (len(d.x_train), len(d.x_test)) == (24, 6)
    assert d.spec.output_size == 6


def test_npz_images_by_rank_or_by_kind(tmp_path):
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "i4.npz", x=rng.random((10, 3, 5, 5)), y=np.arange(10) % 2)
    assert load_file(tmp_path / "i4.npz").x_train.shape[1:] == (3, 5, 5)
    np.savez(tmp_path / "i3.npz", x=rng.random((10, 5, 6)), y=np.arange(10) % 2)
    as_image = load_file(tmp_path / "i3.npz", kind="image")
    assert as_image.kind == "image" and as_image.x_train.shape[1:] == (1, 5, 6)
    assert load_file(tmp_path / "i3.npz").kind == "sequence"


def test_task_override_regresses_integer_targets(tmp_path):
    np.savez(tmp_path / "c.npz", x=np.ones((10, 2)) * np.arange(10)[:, None], y=np.arange(10))
    d = load_file(tmp_path / "c.npz", task="regress")
    assert d.task == "regress" and d.y_train.dtype == np.float32


@pytest.mark.parametrize("make", [lambda: digits.load(),
                                  lambda: synthetic.adding(length=9, n=40),
                                  lambda: synthetic.spirals(arms=3, n=60)])
def test_export_round_trip(tmp_path, host, make):
    original = make()
    written = export_dataset(original, tmp_path / "out")
    assert written == tmp_path / "out.npz"
    assert sorted(os.listdir(tmp_path)) == ["out.npz"]  # no temp file left behind
    with np.load(written, allow_pickle=False) as f:
        assert {"x_train", "y_train", "x_test", "y_test"} <= set(f.files)
    back = load_dataset(str(written), host=host)
    assert (back.kind, back.task, back.classes) == (original.kind, original.task,
                                                   original.classes)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(back, name), getattr(original, name))


def test_export_of_unlabelled_data_and_missing_folder(tmp_path):
    np.savez(tmp_path / "u.npz", x=np.random.default_rng(2).random((10, 3)))
    d = load_file(tmp_path / "u.npz")
    path = export_dataset(d, tmp_path / "e.npz")
    with np.load(path) as f:
        assert "y_train" not in f.files
    assert load_file(path).task == "reconstruct"
    with pytest.raises(ConfigError, match="does not exist"):
        export_dataset(d, tmp_path / "nope" / "e.npz")


def test_holdout_split_is_a_partition():
    y = np.array([0] * 10 + [1] * 5)
    train, test = holdout_split(15, y, 0.2, seed=0)
    assert sorted(np.concatenate([train, test])) == list(range(15))
    assert np.bincount(y[test]).tolist() == [2, 1]
    train_u, test_u = holdout_split(15, None, 0.2, seed=0)
    assert len(test_u) == 3 and len(train_u) == 12


# -- csv --------------------------------------------------------------------------------------

def test_csv_default_last_column_integer_labels(tmp_path):
    lines = ["a,b,label"] + [f"{i},{i * 0.5},{i % 2}" for i in range(20)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    d = load_file(tmp_path / "t.csv")
    assert d.task == "classify" and d.kind == "vector" and d.x_train.shape == (16, 2)
    assert d.info["columns"] == ["a", "b"] and d.info["label_column"] == "label"
    x = np.concatenate([d.x_train, d.x_test])
    y = np.concatenate([d.y_train, d.y_test])
    np.testing.assert_array_equal(y, x[:, 0].astype(int) % 2)
    np.testing.assert_allclose(x[:, 1], x[:, 0] * 0.5)


def test_csv_named_label_column_text_classes_and_floats(tmp_path):
    species = ["setosa", "virginica", "versicolor"]
    lines = ["kind,width,height"] + [f"{species[i % 3]},{i},{i + 0.25}" for i in range(15)]
    (tmp_path / "iris.csv").write_text("\n".join(lines))
    d = load_file(tmp_path / "iris.csv", label_column="kind")
    assert d.classes == ["setosa", "versicolor", "virginica"]
    x = np.concatenate([d.x_train, d.x_test])
    y = np.concatenate([d.y_train, d.y_test])
    names = [d.classes[k] for k in y]
    assert names == [species[int(i) % 3] for i in x[:, 0]]
    # With another label column, the text column 'kind' is a feature: a clear error.
    with pytest.raises(DataError, match="line 2, column 'kind': expected a number; "
                                        "received 'setosa'"):
        load_file(tmp_path / "iris.csv", label_column="height")


def test_csv_regression_and_unlabelled(tmp_path):
    lines = ["x1,x2,y"] + [f"{i},{-i},{i / 3:.4f}" for i in range(10)]
    (tmp_path / "r.csv").write_text("\n".join(lines))
    d = load_file(tmp_path / "r.csv")
    assert d.task == "regress" and d.y_train.shape == (8, 1)
    u = load_file(tmp_path / "r.csv", task="reconstruct")
    assert u.task == "reconstruct" and u.x_train.shape == (8, 3)


# -- IDX --------------------------------------------------------------------------------------

def _idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[code]
    return header + array.astype(dtype).tobytes()


def _write_idx_folder(folder, gz=False, test=True, n=12, names=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n, 4, 5), dtype=np.uint8),
              "train-labels-idx1-ubyte": (np.arange(n) % 10).astype(np.uint8)}
    if test:
        arrays["t10k-images-idx3-ubyte"] = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
        arrays["t10k-labels-idx1-ubyte"] = np.array([1, 2, 3], dtype=np.uint8)
    for name, array in arrays.items():
        data = _idx_bytes(array)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_round_trip(tmp_path, host, gz):
    arrays = _write_idx_folder(tmp_path / "mnist", gz=gz)
    d = load_dataset(str(tmp_path / "mnist"), host=host)
    assert d.kind == "image" and d.task == "classify"
    assert d.x_train.shape == (12, 1, 4, 5) and d.x_test.shape == (3, 1, 4, 5)
    np.testing.assert_allclose(d.x_train[:, 0] * 255, arrays["train-images-idx3-ubyte"],
                               atol=1e-4)
    np.testing.assert_array_equal(d.y_test, [1, 2, 3])
    assert d.classes == [str(i) for i in range(10)]


def test_idx_folder_without_t10k_holds_out_and_fashion_names(tmp_path):
    _write_idx_folder(tmp_path / "fashion-mnist", test=False, n=20)
    d = load_file(tmp_path / "fashion-mnist")
    # Ten classes of two: floor(0.4) = 0 each, and the 4 left over go to classes 0..3.
    assert (len(d.x_train), len(d.x_test)) == (16, 4)
    assert sorted(d.y_test) == [0, 1, 2, 3]
    assert d.classes[0] == "T-shirt/top" and len(d.classes) == 10


def test_read_idx_other_types():
    values = np.arange(6, dtype=np.int32).reshape(2, 3) - 2
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"zoo-idx-{os.getpid()}")
    with open(path, "wb") as f:
        f.write(_idx_bytes(values, 0x0C))
    try:
        np.testing.assert_array_equal(read_idx(path), values)
    finally:
        os.unlink(path)


# -- bad files: one DataError each, naming the file and the problem ---------------------------

def _npz(**arrays):
    def write(path):
        np.savez(path, **arrays)
    return write


def _text(text):
    def write(path):
        path.write_text(text)
    return write


def _raw(data):
    def write(path):
        path.write_bytes(data)
    return write


GOOD_IMAGES = _idx_bytes(np.zeros((2, 3, 3), np.uint8))
GOOD_LABELS = _idx_bytes(np.zeros(2, np.uint8))

BAD_FILES = [
    ("no_x.npz", _npz(y=np.arange(3)), {}, "missing array x"),
    ("objects.npz", _npz(x=np.array([[1], "a"], dtype=object)), {}, "object dtype"),
    ("lengths.npz", _npz(x=np.zeros((5, 2)), y=np.arange(4)), {}, "len(x) = 5 but len(y) = 4"),
    ("nan.npz", _npz(x=np.array([[1.0, np.nan]] * 5), y=np.arange(5)), {}, "NaN or Inf"),
    ("inf_y.npz", _npz(x=np.zeros((5, 2)), y=np.array([1, 2, np.inf, 0, 0])), {},
     "y contains NaN or Inf"),
    ("frac.npz", _npz(x=np.zeros((5, 2)), y=np.array([0.5, 1, 2, 0, 1])),
     {"task": "classify"}, "integer class labels"),
    ("rank1.npz", _npz(x=np.zeros(5), y=np.arange(5)), {}, "must have rank 2"),
    ("strings.npz", _npz(x=np.array([["a", "b"]] * 3)), {}, "x must be numeric"),
    ("empty_x.npz", _npz(x=np.zeros((0, 3))), {}, "x is empty"),
    ("ytest_only.npz", _npz(x=np.zeros((5, 2)), y=np.arange(5), y_test=np.arange(2)), {},
     "has y_test but no x_test"),
    ("no_ytest.npz", _npz(x=np.zeros((5, 2)), y=np.arange(5), x_test=np.zeros((2, 2))), {},
     "has y but no y_test"),
    ("shapes.npz", _npz(x=np.zeros((5, 2)), x_test=np.zeros((2, 3))), {},
     "x_test examples have shape (3,)"),
    ("empty.npz", _raw(b""), {}, "the file is empty"),
    ("garbage.npz", _raw(b"not a zip file at all"), {}, "not a readable .npz"),
    ("empty.csv", _text(""), {}, "the file is empty"),
    ("header_only.csv", _text("a,b,label\n"), {}, "no data rows"),
    ("no_header.csv", _text("1,2,0\n3,4,1\n"), {}, "expected a header row"),
    ("ragged.csv", _text("a,b,y\n1,2,0\n\n3,1\n"), {}, "line 4 has 2 values; expected 3"),
    ("text.csv", _text("a,b,y\n1,oops,0\n"), {}, "line 2, column 'b': expected a number"),
    ("label.csv", _text("a,b,y\n1,2,0\n"), {"label_column": "cls"}, "no column named 'cls'"),
    ("nan.csv", _text("a,b,y\n1,nan,0\n"), {}, "x contains NaN or Inf"),
    ("nolabel.csv", _text("a,b,y\n1,2,\n"), {}, "no value in the label column 'y'"),
    ("data.txt", _text("1 2 3"), {}, "unknown file type '.txt'"),
]


@pytest.mark.parametrize("name, write, options, needle", BAD_FILES,
                         ids=[case[0] for case in BAD_FILES])
def test_bad_files_raise_one_clear_data_error(tmp_path, host, name, write, options, needle):
    path = tmp_path / name
    write(path)
    with pytest.raises(DataError) as err:
        load_dataset(str(path), host=host, **options)
    message = str(err.value)
    assert needle in message, message
    assert name in message, message


BAD_IDX = [
    ("magic", {"train-images-idx3-ubyte": b"\x01\x02\x08\x03" + GOOD_IMAGES[4:]},
     "bad IDX magic number 0x01020803"),
    ("type", {"train-images-idx3-ubyte": b"\x00\x00\x07\x03" + GOOD_IMAGES[4:]},
     "bad IDX magic number"),
    ("short", {"train-images-idx3-ubyte": GOOD_IMAGES[:-1]},
     "(18 bytes of data); received 17 bytes"),
    ("header", {"train-images-idx3-ubyte": GOOD_IMAGES[:6]}, "header is cut short"),
    ("tiny", {"train-images-idx3-ubyte": b"\x00\x00"}, "too short for an IDX header"),
    ("gzip", {"train-images-idx3-ubyte.gz": gzip.compress(GOOD_IMAGES)[:-6]},
     "corrupt gzip data"),
    ("rank", {"train-images-idx3-ubyte": GOOD_LABELS}, "expected images (N, H, W)"),
    ("missing", {"readme.txt": b"hi"}, "no train-images-idx3-ubyte"),
    ("counts", {"train-images-idx3-ubyte": GOOD_IMAGES,
                "train-labels-idx1-ubyte": _idx_bytes(np.zeros(3, np.uint8))},
     "len(x) = 2 but len(y) = 3"),
    ("half_test", {"train-images-idx3-ubyte": GOOD_IMAGES, "train-labels-idx1-ubyte":
                   GOOD_LABELS, "t10k-images-idx3-ubyte": GOOD_IMAGES},
     "incomplete IDX set"),
]


@pytest.mark.parametrize("case, files, needle", BAD_IDX, ids=[c[0] for c in BAD_IDX])
def test_corrupt_idx_raises_data_error(tmp_path, host, case, files, needle):
    folder = tmp_path / f"idx-{case}"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    with pytest.raises(DataError) as err:
        load_dataset(str(folder), host=host)
    assert needle in str(err.value), str(err.value)
    assert f"idx-{case}" in str(err.value)


def test_missing_path_and_bad_options(tmp_path, host):
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(str(tmp_path / "absent.npz"), host=host)
    with pytest.raises(DataError, match="no such file"):
        load_dataset("data/absent", host=host)
    np.savez(tmp_path / "ok.npz", x=np.zeros((5, 2)))
    with pytest.raises(ConfigError, match="unknown option length for a data file"):
        load_dataset(str(tmp_path / "ok.npz"), host=host, length=3)
    with pytest.raises(ConfigError, match="label_column applies to .csv files only"):
        load_file(tmp_path / "ok.npz", label_column="y")
    with pytest.raises(ConfigError, match="task must be one of"):
        load_file(tmp_path / "ok.npz", task="cluster")
