"""Property-based tests (Hypothesis) for every parser of untrusted input.

Stop specs, CSV tables, ``.npz`` archives, ``.npy`` inputs, IDX files and run stores, random and
shrunk: each must give a result or one ``ZooError`` with a one-line message, never another
exception, within a time bound (Hypothesis' deadline) and a memory bound (tracemalloc peak).
The CSV reader must also read every table the same way with its fast block reader on and off,
at any block size.

Settings: the default lane runs ``FAST`` (derandomized, so CI is reproducible, no example
database); the ``slow`` lane repeats each property with ``LONG`` (ten times the examples).
"""

import io
import os
import sqlite3
import tempfile
import tracemalloc
import warnings
import zipfile
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib import format as npy_format

from zoo.data import csvfile
from zoo.data.files import load_file, read_idx
from zoo.data.npy import read_npy
from zoo.errors import ZooError
from zoo.runstore import RunStore
from zoo.training.stopspec import parse_stop

FAST = settings(max_examples=100, deadline=5000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LONG = settings(FAST, max_examples=1500)
MEMORY_BOUND = 64 * 2**20  # bytes: every input here is a few kB


def both_lanes(strategy):
    """The property as two tests: FAST in the default lane, LONG marked slow."""
    def make(check):
        fast = FAST(given(strategy)(check))
        long = pytest.mark.slow(LONG(given(strategy)(check)))
        return fast, long
    return make


def result_or_zoo_error(function, *args, **kwargs):
    """``function``'s result, or the ZooError it raised (checked to be one line); no warning
    may escape and the peak of traced memory must stay under MEMORY_BOUND."""
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                result = function(*args, **kwargs)
            except ZooError as exc:
                assert "\n" not in str(exc), str(exc)
                result = exc
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, peak
    return result


@contextmanager
def folder():
    with tempfile.TemporaryDirectory(prefix="zoo-hyp-") as name:
        yield name


# -- stop specs ---------------------------------------------------------------------------------

SPEC_TOKENS = ["max_epochs", "early_stopping", "loss_below", "all_of", "any_of", "patience",
               "monitor", "val_loss", "min_delta", "mode", "true", "None", "nan", "1e999",
               "-3", "0.5", "5", "(", ")", ",", "=", " ", "'", '"', "'x'", "__", "9a", "é"]
CRITERIA = ["early_stopping", "loss_below", "loss_delta_below", "max_epochs", "max_steps",
            "max_time", "non_finite", "target", "nope"]
PARAMETERS = ["monitor", "mode", "min_delta", "patience", "baseline", "threshold", "tol",
              "epochs", "steps", "seconds", "every", "value", "restore_best", "x"]
VALUES = ["5", "0", "-1", "0.01", "1e999", "nan", "true", "None", "val_loss", "'5'", "epoch",
          "step", "min", "auto", "2**8", "10000000000000000000000"]


def _spec_grammar():
    value = st.sampled_from(VALUES)
    leaf = st.one_of(
        st.sampled_from(CRITERIA),
        st.tuples(st.sampled_from(CRITERIA), value).map("=".join),
        st.tuples(st.sampled_from(CRITERIA), st.lists(st.one_of(
            value, st.tuples(st.sampled_from(PARAMETERS), value).map("=".join)), max_size=3))
        .map(lambda c: f"{c[0]}({', '.join(c[1])})"))
    return st.recursive(leaf, lambda inner: st.tuples(
        st.sampled_from(["all_of", "any_of"]), st.lists(inner, min_size=1, max_size=3))
        .map(lambda c: f"{c[0]}({', '.join(c[1])})"), max_leaves=6)


spec_text = st.one_of(
    _spec_grammar(),
    st.lists(st.sampled_from(SPEC_TOKENS), max_size=30).map("".join),
    st.text(max_size=60),
    st.integers(1, 3000).map(lambda depth: "all_of(" * depth + "max_epochs=1" + ")" * depth),
)


def _check_stop_spec(spec):
    result_or_zoo_error(parse_stop, spec)


test_stop_specs, test_stop_specs_long = both_lanes(spec_text)(_check_stop_spec)


# -- CSV ----------------------------------------------------------------------------------------

CELLS = ["0", "1", "2", "-3", "1.5", " 7 ", "1e39", "-1e39", "1e-50", "nan", "inf", "", "  ",
         "cat", "dog", "1_0", "٣", "100000000000000000000000", "9223372036854775808", '"1"',
         '"a,b"', '"x\ny"', '"', "0x10", "+5", ".5", "1,", "\t"]
ENDINGS = ["\n", "\r\n", "\r", "\n\n"]


NUMBERS = ["0", "1", "2", "-3", "1.5", " 7 ", "1e3", "-0.25", "1e-50", ".5", "+5", "3.",
           "1_0", "٣"]
LABELS = {"int": ["0", "1", "2", " 3 ", "+1"], "float": ["0.5", "1", "2.25", "-1e3"],
          "text": ["cat", "dog", " bird ", "1", "é"]}


@st.composite
def csv_tables(draw):
    """Mostly well-formed tables (numbers, one label kind), then maybe a few hostile edits."""
    width = draw(st.integers(1, 4))
    header = ",".join(f"c{j}" for j in range(width - 1)) + ("," if width > 1 else "") + "label"
    labels = LABELS[draw(st.sampled_from(list(LABELS)))]
    rows = [",".join([*draw(st.lists(st.sampled_from(NUMBERS), min_size=width - 1,
                                      max_size=width - 1)), draw(st.sampled_from(labels))])
            for _ in range(draw(st.integers(0, 60)))]
    for _ in range(draw(st.integers(0, 3))):  # hostile edits
        if not rows:
            break
        at = draw(st.integers(0, len(rows) - 1))
        edit = draw(st.sampled_from(["cell", "blank", "quote", "drop", "extra"]))
        cells = rows[at].split(",")
        if edit == "cell":
            cells[draw(st.integers(0, len(cells) - 1))] = draw(st.sampled_from(CELLS))
        elif edit == "blank":
            rows.insert(at, draw(st.sampled_from(["", " ", ",,"])))
        elif edit == "quote":
            j = draw(st.integers(0, len(cells) - 1))
            cells[j] = '"' + cells[j] + '"'
        elif edit == "drop":
            cells = cells[:-1]
        else:
            cells.append("1")
        rows[at] = ",".join(cells) if edit != "blank" else rows[at]
    ending = draw(st.sampled_from(ENDINGS))
    text = ending.join([header, *rows]) + draw(st.sampled_from(["", ending]))
    if draw(st.booleans()):
        text = "\ufeff" + text
    return text.encode("utf-8") if draw(st.integers(0, 19)) else text.encode("utf-16")


csv_case = st.tuples(
    st.one_of(csv_tables(), csv_tables(), st.binary(max_size=200)),
    st.sampled_from([None, None, "classify", "regress", "reconstruct"]),
    st.sampled_from([None, None, "c0", "label", "missing"]),
    st.sampled_from([7, 64, 1 << 18]),
)


def _outcome(path, task, label_column):
    got = result_or_zoo_error(load_file, path, task=task, label_column=label_column)
    if isinstance(got, ZooError):
        return str(got)
    return got


def _same(a, b):
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    for name in ("x_train", "x_test", "y_train", "y_test"):
        left, right = getattr(a, name), getattr(b, name)
        assert (left is None) == (right is None)
        assert left is None or (left.dtype == right.dtype and np.array_equal(left, right))
    assert (a.task, a.classes, a.info) == (b.task, b.classes, b.info)


def _check_csv(case):
    data, task, label_column, block = case
    with folder() as where:
        path = os.path.join(where, "t.csv")
        with open(path, "wb") as f:
            f.write(data)
        default = _outcome(path, task, label_column)
        fast_block, block_chars = csvfile._fast_block, csvfile.BLOCK_CHARS
        try:
            csvfile.BLOCK_CHARS = block
            small = _outcome(path, task, label_column)
            csvfile._fast_block = lambda table, text: None
            exact = _outcome(path, task, label_column)
        finally:
            csvfile._fast_block, csvfile.BLOCK_CHARS = fast_block, block_chars
    _same(default, exact)
    _same(small, exact)


test_csv_tables, test_csv_tables_long = both_lanes(csv_case)(_check_csv)


# -- .npy and .npz ------------------------------------------------------------------------------

DESCRS = ["<f8", "<f4", ">i4", "|u1", "|b1", "<u8", "<i8", "|O", "<U3", "|S2", "|V8", "<c8",
          "<f2", [("a", "<f8")], "<m8", "(2,)<f4"]
SHAPES = st.lists(st.sampled_from([0, 1, 2, 3, 5, 2**31, 2**40, 2**63]), max_size=3)


@st.composite
def npy_files(draw):
    """A .npy file: a real array, or a header with a chosen claim over chosen bytes."""
    if draw(st.booleans()):
        array = np.arange(draw(st.integers(0, 24)), dtype=draw(st.sampled_from(
            ["f8", "f4", "i8", "u1", "u8"])))
        if draw(st.booleans()) and array.size % 2 == 0 and array.size:
            array = array.reshape(2, -1)
        out = io.BytesIO()
        np.save(out, array)
        data = out.getvalue()
    else:
        out = io.BytesIO()
        descr = draw(st.sampled_from(DESCRS))
        try:
            npy_format.write_array_header_1_0(out, {
                "descr": descr, "fortran_order": draw(st.booleans()),
                "shape": tuple(draw(SHAPES))})
        except (ValueError, TypeError):
            out = io.BytesIO(b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}    \n")
        data = out.getvalue() + draw(st.binary(max_size=64))
    mutation = draw(st.sampled_from(["none", "truncate", "flip", "header"]))
    if mutation == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif mutation == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    elif mutation == "header":
        data = data.replace(b"'shape': (", b"'shape': (" + draw(st.sampled_from(
            [b"-1, ", b"99999999999, ", b"1.5, ", b"(), ", b"'x', "])), 1)
    return data


def _check_npy(data):
    with folder() as where:
        path = os.path.join(where, "x.npy")
        with open(path, "wb") as f:
            f.write(data)
        got = result_or_zoo_error(read_npy, path)
    if not isinstance(got, ZooError):
        assert isinstance(got, np.ndarray) and got.nbytes <= len(data)


test_npy_inputs, test_npy_inputs_long = both_lanes(npy_files())(_check_npy)


@st.composite
def valid_members(draw, name):
    """A .npy member that fits its name: features (N, F), labels (N,) or targets."""
    n = 12 if name in ("x", "y", "x_train") else 4
    if name.startswith("x"):
        array = np.arange(n * 3, dtype=draw(st.sampled_from(["f4", "f8", "u1", "i8"])))
        array = array.reshape(n, 3)
    else:
        array = (np.arange(n) % 3).astype(draw(st.sampled_from(["i8", "u8", "f8", "u1"])))
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


@st.composite
def npz_archives(draw):
    names = ["x", "y"] if draw(st.booleans()) else draw(st.lists(st.sampled_from(
        ["x", "y", "x_test", "y_test", "x_train", "classes", "kind", "task", "info", "x.txt"]),
        min_size=1, max_size=4, unique=True))
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as z:
        for name in names:
            if name in ("kind", "task", "classes") and draw(st.booleans()):
                value = np.array(draw(st.sampled_from(["vector", "image", "classify", "regress",
                                                       "nope"])))
                if name == "classes":
                    value = value.reshape(1)
                buffer = io.BytesIO()
                np.save(buffer, value)
                member = buffer.getvalue()
            else:
                member = draw(st.one_of(valid_members(name), npy_files()))
            z.writestr(name if "." in name else name + ".npy", member)
    data = out.getvalue()
    mutation = draw(st.sampled_from(["none", "none", "truncate", "flip", "sizes"]))
    if mutation == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif mutation == "flip":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    elif mutation == "sizes":  # a lying uncompressed size in the central directory
        at = data.find(b"PK\x01\x02")
        size = draw(st.sampled_from([0, 1, 2**31, 2**32 - 1]))
        data = data[:at + 24] + size.to_bytes(4, "little") + data[at + 28:]
    return data


def _check_npz(data):
    with folder() as where:
        path = os.path.join(where, "d.npz")
        with open(path, "wb") as f:
            f.write(data)
        result_or_zoo_error(load_file, path)


test_npz_archives, test_npz_archives_long = both_lanes(npz_archives())(_check_npz)


# -- IDX ----------------------------------------------------------------------------------------

DIMS = st.sampled_from([0, 1, 2, 3, 4, 255, 2**16, 2**31, 2**32 - 1])


@st.composite
def idx_files(draw):
    code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07, 0xFF]))
    shape = draw(st.lists(DIMS, min_size=0, max_size=4))
    if not draw(st.booleans()):  # well-formed images (the simplest case), maybe edited below
        code, shape = draw(st.sampled_from([0x08, 0x0D])), [draw(st.integers(5, 9)), 2, 3]
    head = bytes([0, draw(st.sampled_from([0, 0, 0, 1])), code, len(shape)])
    data = head + b"".join(d.to_bytes(4, "big") for d in shape)
    if not draw(st.booleans()) and all(d < 10 for d in shape):
        itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(code, 1)
        count = int(np.prod(shape)) * itemsize if shape else 0
        data += bytes(count + draw(st.sampled_from([-1, 0, 0, 0, 1])) if count else 0)
    else:
        data += draw(st.binary(max_size=40))
    if draw(st.booleans()):
        import gzip

        data = gzip.compress(data)
        if draw(st.booleans()):
            data = data[:draw(st.integers(0, len(data)))]
    return data


def _check_idx(data):
    with folder() as where:
        path = os.path.join(where, "train-images-idx3-ubyte")
        with open(path, "wb") as f:
            f.write(data)
        got = result_or_zoo_error(read_idx, path)
        if not isinstance(got, ZooError):
            assert got.nbytes <= max(len(data), 1) * 1032
        result_or_zoo_error(load_file, where)


test_idx_files, test_idx_files_long = both_lanes(idx_files())(_check_idx)


# -- run stores ---------------------------------------------------------------------------------

def _real_store(path, runs: int):
    with RunStore(path) as store:
        for i in range(runs):
            store.record({"arch": "mlp", "task": "classify", "test": {"accuracy": 0.5},
                          "history": [{"epoch": 1, "loss": 1.0}]}, {"arch": "mlp", "seed": i})


@st.composite
def store_files(draw):
    """An SQLite file given as the store: a real one (maybe damaged), a foreign database, or
    bytes."""
    kind = draw(st.sampled_from(["real", "foreign", "bytes", "fake-version"]))
    statements = []
    if kind == "foreign":
        statements = draw(st.lists(st.sampled_from([
            "CREATE TABLE runs (id INTEGER)", "CREATE TABLE notes (t TEXT)",
            "CREATE TABLE epochs (x)", "CREATE TABLE t (a INTEGER)"]), max_size=3, unique=True))
    elif kind == "fake-version":
        statements = ["PRAGMA user_version = 1"] + draw(st.lists(st.sampled_from([
            "CREATE TABLE runs (id INTEGER PRIMARY KEY, config TEXT)",
            "CREATE TABLE epochs (run_id, epoch, metrics)"]), max_size=2, unique=True))
    damage = draw(st.one_of(st.none(), st.tuples(st.integers(0, 20000), st.integers(1, 255))))
    return kind, statements, draw(st.integers(0, 3)), damage, draw(st.binary(max_size=300))


def _check_store(case):
    kind, statements, runs, damage, raw = case
    with folder() as where:
        path = os.path.join(where, "runs.db")
        if kind == "bytes":
            with open(path, "wb") as f:
                f.write(raw)
        elif kind == "real":
            _real_store(path, runs)
        else:
            conn = sqlite3.connect(path)
            for statement in statements:
                conn.execute(statement)
            conn.commit()
            conn.close()
        if damage is not None and os.path.exists(path):
            with open(path, "r+b") as f:
                data = bytearray(f.read())
                if data:
                    at = damage[0] % len(data)
                    data[at] ^= damage[1]
                    f.seek(0)
                    f.write(data)
        for create in (False, True):
            store = result_or_zoo_error(RunStore, path, create=create, timeout=0.1)
            if isinstance(store, ZooError):
                continue
            with store:
                listed = result_or_zoo_error(store.list)
                if not isinstance(listed, ZooError):
                    for row in listed[:2]:
                        result_or_zoo_error(store.get, row["id"])
                result_or_zoo_error(store.get, 10**20)
                result_or_zoo_error(store.count)


test_run_stores, test_run_stores_long = both_lanes(store_files())(_check_store)


# -- checkpoints --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    """A real checkpoint (a tiny mlp on xor): its bytes, tensors and metadata."""
    from zoo.checkpoints.checkpoint import save_run
    from zoo.checkpoints.format import read_checkpoint
    from zoo.run import Run, RunConfig

    run = Run(RunConfig(arch="mlp", dataset="xor", options={"hidden": "4"}, epochs=1, seed=1))
    run.fit()
    path = tmp_path_factory.mktemp("ckpt") / "mlp.ckpt"
    save_run(run, path)
    tensors, metadata = read_checkpoint(path)
    return path.read_bytes(), tensors, metadata


JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                        st.sampled_from(["mlp", "xor", "adam", "classify", "40000,40000",
                                         "max_epochs=1", "all_of(" * 40 + ")" * 40]))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12)
byte_edits = st.tuples(st.sampled_from(["truncate", "flip", "length", "append"]),
                       st.integers(0, 2**16), st.integers(1, 255),
                       st.sampled_from([0, 7, 2**20, 2**32, 2**63, 2**64 - 1]))
metadata_edits = st.lists(st.tuples(st.lists(st.integers(0, 30), min_size=1, max_size=4),
                                    st.one_of(st.just("delete"), JSON_VALUES)), max_size=3)
tensor_edits = st.lists(st.tuples(st.integers(0, 30),
                                  st.sampled_from(["drop", "f64", "i8", "bool", "reshape"])),
                        max_size=2)


def _edit(tree, path, value):
    """``tree`` with the node at ``path`` (indices into keys / items, walked while the nodes are
    containers) replaced by ``value``, or deleted for "delete"."""
    if not isinstance(tree, (dict, list)) or not tree:
        return value
    keys = list(tree) if isinstance(tree, dict) else list(range(len(tree)))
    key = keys[path[0] % len(keys)]
    copy = dict(tree) if isinstance(tree, dict) else list(tree)
    if len(path) > 1 and isinstance(copy[key], (dict, list)) and copy[key]:
        copy[key] = _edit(copy[key], path[1:], value)
    elif value == "delete":
        del copy[key]
    else:
        copy[key] = value
    return copy


def _edited_tensors(tensors, edits):
    tensors = dict(tensors)
    for index, edit in edits:
        if not tensors:
            break
        name = sorted(tensors)[index % len(tensors)]
        if edit == "drop":
            del tensors[name]
        elif edit == "reshape":
            tensors[name] = tensors[name].reshape(-1)[:max(tensors[name].size - 1, 0)]
        else:
            tensors[name] = tensors[name].astype({"f64": "<f8", "i8": "|i1", "bool": "|b1"}[edit])
    return tensors


def _check_checkpoint(checkpoint_file, bytes_edit, meta_edits, tensor_changes, resign):
    from zoo.checkpoints.checkpoint import load_checkpoint
    from zoo.checkpoints.format import checkpoint_bytes

    blob, tensors, metadata = checkpoint_file
    if resign:  # a structurally edited file with a valid hash: only the checks can refuse it
        for path, value in meta_edits:
            metadata = _edit(metadata, path, value)
        if not isinstance(metadata, dict):
            metadata = {"config": metadata}
        try:
            blob = checkpoint_bytes(_edited_tensors(tensors, tensor_changes), metadata)
        except ZooError:
            return  # not even writable: the writer's refusal is its own test
    else:
        kind, at, xor, length = bytes_edit
        at %= len(blob)
        if kind == "truncate":
            blob = blob[:at]
        elif kind == "flip":
            blob = blob[:at] + bytes([blob[at] ^ xor]) + blob[at + 1:]
        elif kind == "length":
            blob = length.to_bytes(8, "little") + blob[8:]
        else:
            blob = blob + bytes([xor]) * (at % 64)
    with folder() as where:
        path = os.path.join(where, "c.ckpt")
        with open(path, "wb") as f:
            f.write(blob)
        loaded = result_or_zoo_error(load_checkpoint, path)
    if not isinstance(loaded, ZooError):
        for spec in loaded.config["stop"]:
            result_or_zoo_error(parse_stop, spec)


_CHECKPOINT_CASES = dict(bytes_edit=byte_edits, meta_edits=metadata_edits,
                         tensor_changes=tensor_edits, resign=st.booleans())
_fast_checkpoints = FAST(given(**_CHECKPOINT_CASES)(_check_checkpoint))
_long_checkpoints = LONG(given(**_CHECKPOINT_CASES)(_check_checkpoint))


def test_checkpoints(checkpoint_file):
    _fast_checkpoints(checkpoint_file)


@pytest.mark.slow
def test_checkpoints_long(checkpoint_file):
    _long_checkpoints(checkpoint_file)
