"""Hostile data files: no unbounded allocation, no hang, no traceback, no numpy warning.

Each case is one of the problems an adversarial review found (issue 15): a small file whose
labels or headers would make zoo allocate without bound, a FIFO or device where a file is
expected, and readers whose errors escaped as tracebacks or misleading messages. Every one must
end in one ``DataError`` (CLI: one ``zoo: error:`` line, exit 2) naming the file.
"""

import errno
import gzip
import io
import os
import subprocess
import sys
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
from numpy.lib import format as npy_format

from zoo.checkpoints.checkpoint import save_run
from zoo.data import csvfile
from zoo.data.dataset import MAX_CLASSES, Dataset
from zoo.data.files import load_file, read_idx
from zoo.data.npy import read_npy
from zoo.errors import ConfigError, DataError
from zoo.run import Run, RunConfig
from zoo.runstore import RunStore

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")


def _load(path, **options):
    """load_file with every warning an error: a numpy RuntimeWarning must never escape."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_file(path, **options)


def _refused(path, *fragments, **options):
    with pytest.raises(DataError) as err:
        _load(path, **options)
    message = str(err.value)
    assert "\n" not in message
    assert os.path.basename(path) in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def _npy_bytes(shape, descr="<f8", data=b"", fortran=False) -> bytes:
    out = io.BytesIO()
    npy_format.write_array_header_1_0(out, {"descr": descr, "fortran_order": fortran,
                                            "shape": tuple(shape)})
    return out.getvalue() + data


def _zip(path, members: dict, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny mlp trained on xor (2 features), saved; its dataset is then a FIFO (see below)."""
    folder = tmp_path_factory.mktemp("ckpt")
    run = Run(RunConfig(arch="mlp", dataset="xor", options={"hidden": "4"}, epochs=1, seed=1))
    run.fit()
    save_run(run, folder / "mlp.ckpt")
    return folder / "mlp.ckpt"


def _zoo(*args, cwd, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_DEBUG")}
    done = subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("zoo: error: "), done.stderr
    return lines[0]


# -- 1. small files that would allocate without bound ------------------------------------------

def test_csv_label_one_billion_is_refused_not_a_billion_class_names(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("a,b,y\n1,2,1000000000\n" + "3,4,0\n" * 9)
    tracemalloc.start()
    try:
        _refused(path, "class label 1000000000", f"at most {MAX_CLASSES}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6


def test_npz_labels_at_int64_and_uint64_limits(tmp_path):
    x = np.zeros((6, 2))
    np.savez(tmp_path / "i.npz", x=x, y=np.array([0, 1, 0, 1, 0, 2**63 - 1]))
    _refused(tmp_path / "i.npz", "class label 9223372036854775807")
    np.savez(tmp_path / "u.npz", x=x, y=np.array([0, 1, 0, 1, 0, 2**64 - 1], np.uint64))
    message = _refused(tmp_path / "u.npz", "class label 18446744073709551615")
    assert "label -1" not in message


def test_labels_below_the_cap_still_make_that_many_classes(tmp_path):
    y = np.array([0, 1, 0, 1, 0, 1, 0, MAX_CLASSES - 1])
    np.savez(tmp_path / "wide.npz", x=np.zeros((8, 2)), y=y)
    assert _load(tmp_path / "wide.npz").num_classes == MAX_CLASSES


def test_text_labels_beyond_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(csvfile, "MAX_CLASSES", 5)
    path = tmp_path / "names.csv"
    path.write_text("a,kind\n" + "".join(f"{i},name{i}\n" for i in range(6)))
    _refused(path, "more than 5 different labels")


def test_dataset_from_a_plugin_with_a_huge_label_is_refused():
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(DataError, match="class label 1000000000 is too large"):
        Dataset("p", "vector", "classify", x, np.array([0, 1, 10**9]), x, np.array([0, 1, 0]))


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_member_claiming_4_tib_is_not_allocated(tmp_path, compression):
    path = _zip(tmp_path / "huge.npz", {"x.npy": _npy_bytes((2**39, 1), data=b"\0" * 64)},
                compression)
    tracemalloc.start()
    try:
        _refused(path, "array x", "4 TiB", "64 bytes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6


def _patch_central_sizes(data: bytes, file_size: int) -> bytes:
    """Set the uncompressed size in the zip's local and central headers (a lying archive)."""
    data = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(signature)
        data[at + offset:at + offset + 4] = file_size.to_bytes(4, "little")
    return bytes(data)


def test_npz_entry_claiming_more_than_deflate_can_expand_is_refused(tmp_path):
    real = _npy_bytes((4,), data=b"\0" * 32)
    _zip(tmp_path / "z.npz", {"x.npy": real}, zipfile.ZIP_DEFLATED)
    (tmp_path / "bomb.npz").write_bytes(
        _patch_central_sizes((tmp_path / "z.npz").read_bytes(), 2**32 - 1))
    _refused(tmp_path / "bomb.npz", "array x", "at most", "is possible")


def test_predict_npy_claiming_512_gib_is_not_allocated(tmp_path):
    path = tmp_path / "big.npy"
    path.write_bytes(_npy_bytes((2**35, 2), "<f8", b"\0" * 128))
    with pytest.raises(DataError, match=r"claims 549,755,813,888 bytes of data \(float64 "
                                        r"array of shape \(34359738368, 2\)\); the file "
                                        r"holds 128 bytes"):
        read_npy(path)


def test_predict_npy_fortran_order_and_big_endian_read_right(tmp_path):
    a = np.arange(6, dtype=">f4").reshape(2, 3)
    np.save(tmp_path / "f.npy", np.asfortranarray(a))
    np.testing.assert_array_equal(read_npy(tmp_path / "f.npy"), a)


# -- 2. hangs: only regular files are read -----------------------------------------------------

@needs_fifo
def test_fifo_as_dataset_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / "data.csv")
    line = _zoo("train", "--arch", "mlp", "--dataset", "data.csv", cwd=tmp_path, timeout=60)
    assert ("data.csv: not a regular file (a pipe, device or socket): it is a FIFO (named "
            "pipe); expected a regular file") in line
    for name in ("data.npz", "train-images-idx3-ubyte"):
        os.mkfifo(tmp_path / name)
    with pytest.raises(DataError, match="is a FIFO"):
        load_file(tmp_path / "data.npz")
    with pytest.raises(DataError, match="is a FIFO"):
        read_idx(tmp_path / "train-images-idx3-ubyte")


@needs_fifo
def test_fifo_as_predict_input_is_refused_at_once(tmp_path, checkpoint):
    os.mkfifo(tmp_path / "x.npy")
    line = _zoo("predict", checkpoint, "x.npy", cwd=tmp_path)
    assert "input x.npy: not a regular file (a pipe, device or socket): it is a FIFO" in line


@needs_fifo
def test_fifo_as_the_dataset_of_a_resumed_checkpoint(tmp_path):
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.random((20, 2)), y=np.arange(20) % 2)
    run = Run(RunConfig(arch="mlp", dataset=str(data), options={"hidden": "4"}, epochs=1,
                        seed=1))
    run.fit()
    save_run(run, tmp_path / "r.ckpt")
    data.unlink()
    os.mkfifo(data)
    line = _zoo("train", "--resume", "r.ckpt", "--epochs", "3", "--no-store", cwd=tmp_path)
    assert "is a FIFO (named pipe)" in line


@needs_fifo
def test_fifo_or_folder_as_run_store(tmp_path):
    os.mkfifo(tmp_path / "runs.db")
    with pytest.raises(ConfigError, match="run store .*runs.db: not a regular file .* a FIFO"):
        RunStore(tmp_path / "runs.db")


def test_devices_and_folders_are_refused(tmp_path):
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    os.symlink("/dev/zero", tmp_path / "zero.npz")
    _refused(tmp_path / "zero.npz", "is a character device")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DataError):
        load_file(tmp_path / "dir.csv")
    os.symlink("/dev/zero", tmp_path / "zero.npy")
    with pytest.raises(DataError, match="is a character device"):
        read_npy(tmp_path / "zero.npy")


# -- 3. one DataError line, never a traceback --------------------------------------------------

def test_csv_label_beyond_int64(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("a,y\n1,100000000000000000000000\n" + "2,0\n" * 9)
    _refused(path, "line 2, column 'y': class label 100000000000000000000000 is too large")
    regress = _load(path, task="regress")
    assert regress.task == "regress"
    assert np.concatenate([regress.y_train, regress.y_test]).max() == np.float32(1e23)


def test_csv_value_beyond_float32_is_an_error_not_a_warning(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text("a,b,y\n1,2,0\n3,1e39,1\n" + "1,1,0\n" * 8)
    _refused(path, "line 3, column 'b': 1e39 is beyond the float32 range")
    np.savez(tmp_path / "v.npz", x=np.full((5, 2), -1e39), y=np.arange(5))
    _refused(tmp_path / "v.npz", "x holds values beyond the float32 range")
    np.savez(tmp_path / "t.npz", x=np.zeros((5, 2)), y=np.full(5, 1e300))
    _refused(tmp_path / "t.npz", "y holds values beyond the float32 range")


@pytest.mark.parametrize("member, value, needle", [
    ("task", np.arange(3), "task must be one string"),
    ("task", np.array("teleport"), "task must be one of"),
    ("kind", np.array(["vector", "image"]), "kind must be one string"),
    ("kind", np.array(3.5), "kind must be one string"),
])
def test_npz_extra_arrays_of_the_wrong_type(tmp_path, member, value, needle):
    np.savez(tmp_path / "e.npz", x=np.zeros((5, 2)), y=np.arange(5), **{member: value})
    _refused(tmp_path / "e.npz", needle)


def test_npz_arrays_zoo_does_not_use_are_left_unread(tmp_path):
    np.savez(tmp_path / "o.npz", x=np.zeros((5, 2)), y=np.arange(5), info=np.arange(3),
             summary=np.arange(2), notes=np.array([{"a": 1}], dtype=object))
    d = _load(tmp_path / "o.npz")
    assert d.info["summary"] == "user data from o.npz"
    np.savez(tmp_path / "t.npz", x=np.zeros((5, 2)), y=np.arange(5), task=np.array("regress"))
    assert _load(tmp_path / "t.npz").task == "regress"


def test_truncated_npz_member_is_not_called_pickled(tmp_path):
    path = _zip(tmp_path / "cut.npz", {"x.npy": _npy_bytes((5, 2), data=b"\0" * 40)})
    message = _refused(path, "array x", "80 bytes", "40 bytes")
    assert "pickle" not in message
    np.savez_compressed(tmp_path / "good.npz", x=np.random.default_rng(0).random((50, 4)))
    data = bytearray((tmp_path / "good.npz").read_bytes())
    data[100] ^= 0xFF  # corrupt the deflate stream of x
    (tmp_path / "flip.npz").write_bytes(bytes(data))
    message = _refused(tmp_path / "flip.npz")
    assert "pickle" not in message


def test_npz_object_member_is_refused_from_its_header(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([[1], "a"], dtype=object))
    _refused(tmp_path / "obj.npz", "object dtype", "never unpickles")


def _idx(shape, code=0x08, data=b"") -> bytes:
    return bytes([0, 0, code, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape) + data


def test_idx_dims_whose_product_wraps_and_huge_claims(tmp_path):
    # 2**16 ** 4 = 2**64 wraps to 0 in int64 (an empty array would pass); (2**32-1)**2 * 8
    # wraps to a negative size, once printed as "-8589934591 bytes"
    for name, shape, code in (("wrap", (2**16,) * 4, 0x08),
                              ("negative", (2**32 - 1, 2**32 - 1, 1), 0x0E)):
        (tmp_path / name).write_bytes(_idx(shape, code))
        with pytest.raises(DataError) as err:
            read_idx(tmp_path / name)
        message = str(err.value)
        assert "received 0 bytes" in message and "-" not in message.split("says")[1], message
    big = tmp_path / "big"
    big.write_bytes(_idx((2**31, 2**31, 2), 0x0C, b"\0" * 8))
    with pytest.raises(DataError, match=r"EiB of data\); received 8 bytes"):
        read_idx(big)
    empty = tmp_path / "empty"
    empty.write_bytes(_idx((0, 2**32 - 1, 2**32 - 1)))
    with pytest.raises(DataError, match="an empty array"):
        read_idx(empty)


def test_idx_gzip_corrupt_or_claiming_too_much(tmp_path):
    good = gzip.compress(_idx((2, 3, 3), data=bytes(18)))
    bad = tmp_path / "bad.gz"
    bad.write_bytes(good[:10] + bytes(b ^ 0x55 for b in good[10:]))  # zlib.error inside
    with pytest.raises(DataError, match="corrupt gzip data"):
        read_idx(bad)
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(_idx((10**6, 1000, 1000))))
    with pytest.raises(DataError, match="cannot expand to more than"):
        read_idx(bomb)


def test_unreadable_file_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "locked.csv"
    path.write_text("a,y\n1,0\n")
    real_open = os.open

    def denied(name, *args, **kwargs):
        if os.fspath(name) == os.fspath(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(name))
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    _refused(path, "cannot open it: permission denied")
    monkeypatch.undo()
    os.chmod(path, 0)
    try:
        if os.access(path, os.R_OK):  # root reads anything: the patched case above stands
            return
        _refused(path, "permission denied")
    finally:
        os.chmod(path, 0o600)


def test_name_too_long_and_newline_in_name(tmp_path):
    with pytest.raises(DataError, match="too long"):
        load_file(tmp_path / ("n" * 300 + ".csv"))
    os.symlink("/nonexistent", tmp_path / "pipe\n.csv")  # a name with a newline, dangling
    with pytest.raises(DataError) as err:
        load_file(tmp_path / "pipe\n.csv")
    assert "\n" not in str(err.value) and "pipe\\n.csv" in str(err.value)


def test_cli_reports_one_line_for_each_class_of_bad_file(tmp_path):
    (tmp_path / "ovf.csv").write_text("a,y\n1,100000000000000000000000\n" + "2,0\n" * 9)
    (tmp_path / "wide.csv").write_text("a,b,y\n1,1e39,0\n" + "2,2,1\n" * 9)
    np.savez(tmp_path / "task.npz", x=np.zeros((5, 2)), y=np.arange(5), task=np.arange(2))
    for name, needle in (("ovf.csv", "too large"), ("wide.csv", "float32"),
                         ("task.npz", "task must be")):
        line = _zoo("dataset", f"./{name}", cwd=tmp_path)
        assert needle in line and "Warning" not in line


# -- 4. CSV streaming: memory and exactness ----------------------------------------------------

def test_csv_loading_peak_memory_is_under_three_times_the_arrays(tmp_path):
    rng = np.random.default_rng(0)
    n = 200_000
    values = rng.random((n, 4))
    labels = rng.integers(0, 10, n)
    path = tmp_path / "big.csv"
    with open(path, "w") as f:
        f.write("a,b,c,d,label\n")
        for start in range(0, n, 50_000):
            part = zip(values[start:start + 50_000].tolist(), labels[start:start + 50_000])
            f.write("".join(f"{a:.5f},{b:.5f},{c:.5f},{d:.5f},{k}\n" for (a, b, c, d), k in part))
    tracemalloc.start()
    try:
        d = load_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    final = sum(a.nbytes for a in (d.x_train, d.x_test, d.y_train, d.y_test))
    assert len(d.x_train) + len(d.x_test) == n
    assert peak < 3 * final, (peak, final)
    x = np.concatenate([d.x_train, d.x_test])
    assert abs(float(x.sum()) - float(np.round(values, 5).sum())) < 1.0


def _csv_outcome(path, **options):
    try:
        d = _load(path, **options)
    except DataError as exc:
        return str(exc)
    return d


def _same(a, b):
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    for name in ("x_train", "x_test", "y_train", "y_test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (a.task, a.classes, a.info) == (b.task, b.classes, b.info)


TABLES = {
    "ints": "a,b,y\n" + "".join(f"{i},{i / 7:.6f},{i % 3}\n" for i in range(300)),
    "floats_late": "a,y\n" + "".join(f"{i},{i}\n" for i in range(290)) + "1,2.5\n" * 10,
    "text_late": "a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(290)) + "1,cat\n" * 10,
    "quoted": 'a,"b",y\n' + "".join(f'{i},"{i}.5",{i % 2}\n' for i in range(100))
              + '1,"2\n",x\n' + "".join(f"{i},{i},{i % 2}\n" for i in range(100)),
    "crlf_blank": "a,b,y\r\n" + "".join(f"{i}, {i} ,{i % 2}\r\n\r\n" for i in range(300)),
    "cr_only": "a,y\r" + "".join(f"{i},{i % 2}\r" for i in range(300)),
    "bigint_then_float": "a,y\n" + "".join(f"{i},{10**20 + i}\n" for i in range(150))
                         + "1,0.5\n" * 150,
    "ragged": "a,b,y\n" + "1,2,0\n" * 150 + "1,2\n" + "1,2,0\n" * 150,
    "spaces": "a,b,y\n" + " 1 , 2 , x \n" * 150 + "1,2, y\n" * 150,
    "blank_label": "a,y\n" + "1,0\n" * 200 + "1, \n",
    "bom_unicode": "\ufeffa,y\n" + "١,٣\n" * 200 + "1_0,2\n" * 100,
}


@pytest.mark.parametrize("name", list(TABLES))
def test_csv_fast_and_exact_readers_agree_across_block_boundaries(tmp_path, monkeypatch, name):
    path = tmp_path / f"{name}.csv"
    path.write_bytes(TABLES[name].encode("utf-8"))
    whole = _csv_outcome(path)
    monkeypatch.setattr(csvfile, "BLOCK_CHARS", 97)  # many blocks, cut at odd places
    small = _csv_outcome(path)
    monkeypatch.setattr(csvfile, "_fast_block", lambda table, block: None)
    exact = _csv_outcome(path)
    _same(whole, exact)
    _same(small, exact)


def test_csv_text_labels_after_numeric_blocks_are_read_as_names(tmp_path, monkeypatch):
    monkeypatch.setattr(csvfile, "BLOCK_CHARS", 64)
    path = tmp_path / "t.csv"
    path.write_text(TABLES["text_late"])
    d = _load(path)
    assert d.classes == ["0", "1", "cat"]
    assert np.concatenate([d.y_train, d.y_test]).max() == 2


def test_csv_text_label_when_regressing_names_its_line(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("a,y\n" + "1,0.5\n" * 20 + "2,cat\n")
    _refused(path, "line 22, column 'y': expected a number to regress; received 'cat'",
             task="regress")


def test_csv_first_problem_in_file_order_at_any_block_size(tmp_path, monkeypatch):
    # found by the property test: a block boundary once decided which error was reported
    path = tmp_path / "t.csv"
    path.write_text("c0,c1,label\n0,0,cat\n0,0\n" + "0,0,cat\n" * 12)
    whole = _csv_outcome(path, task="regress")
    monkeypatch.setattr(csvfile, "BLOCK_CHARS", 7)
    assert _csv_outcome(path, task="regress") == whole
    assert "line 2, column 'label': expected a number to regress" in whole


def test_idx_folder_that_cannot_be_read_or_holds_a_fifo(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    folder.mkdir()
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "train-images-idx3-ubyte")
        with pytest.raises(DataError, match="idx3-ubyte: not a regular file .* a FIFO"):
            _load(folder)

    def denied(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(type(folder), "exists", denied)
    with pytest.raises(DataError, match="mnist: cannot read the folder: permission denied"):
        _load(folder)
