"""The safetensors layout and zoo checkpoints: round trips, interop, atomic writes, bad files."""

import hashlib
import json
import os
import pickle
import stat
import zipfile

import numpy as np
import pytest
import safetensors
import safetensors.numpy as stnp

from zoo.checkpoints import safetensors_io as st
from zoo.errors import CheckpointError

ALL_DTYPES = [np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.float16, np.uint32, np.int32,
              np.float32, np.uint64, np.int64, np.float64]


def sample(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    values = rng.standard_normal(size=shape).astype(dtype)
    flat = values.reshape(-1)
    # Special values must survive bit for bit.
    for i, special in enumerate([np.nan, -0.0, np.inf, -np.inf, np.finfo(dtype).tiny]):
        if i < flat.size:
            flat[i] = special
    return values


def same(a, b):
    """Equal dtype, shape and bytes (so NaN payloads and -0.0 count)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def every_dtype_tensors():
    tensors = {}
    for i, dtype in enumerate(ALL_DTYPES):
        name = np.dtype(dtype).name
        tensors[f"{name}/matrix"] = sample(dtype, (3, 5), seed=i)
        tensors[f"{name}/scalar"] = sample(dtype, (), seed=100 + i)
        tensors[f"{name}/empty"] = np.zeros((0,), dtype)
        tensors[f"{name}/empty2d"] = np.zeros((4, 0, 2), dtype)
        tensors[f"{name}/odd"] = sample(dtype, (7,), seed=200 + i)  # odd byte counts
    return tensors


METADATA = {
    "arch": {"name": "lstm", "options": {"hidden": 128, "bidirectional": False}},
    "optimizer": {"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8},
    "rng": np.random.default_rng(1234).bit_generator.state,  # 128-bit integers
    "stopping": {"best": float("inf"), "wait": 0, "history": [0.1 + 0.2, 1 / 3, -0.0, 5e-324]},
    "epoch": 7,
    "note": "résumé ✓ \u2028 \"quoted\" \\ back\nslash",
    "nothing": None,
}


# -- round trips -----------------------------------------------------------------------------

def test_round_trip_every_dtype_and_shape(tmp_path):
    tensors = every_dtype_tensors()
    path = tmp_path / "model.ckpt"
    st.write_checkpoint(path, tensors, METADATA)
    loaded, metadata = st.read_checkpoint(path)
    assert sorted(loaded) == sorted(tensors)
    for name, value in tensors.items():
        assert same(loaded[name], value), name
        assert loaded[name].flags.aligned and loaded[name].flags.writeable
    assert metadata == METADATA
    assert os.listdir(tmp_path) == ["model.ckpt"]


def test_bytes_and_file_apis_agree(tmp_path):
    tensors = every_dtype_tensors()
    blob = st.checkpoint_bytes(tensors, METADATA)
    path = tmp_path / "a.ckpt"
    st.write_checkpoint(path, tensors, METADATA)
    assert path.read_bytes() == blob
    parsed, metadata = st.parse_checkpoint_bytes(blob)
    assert metadata == METADATA
    assert all(same(parsed[k], tensors[k]) for k in tensors)
    assert not parsed["float32/matrix"].flags.writeable  # a view into the immutable bytes


def test_metadata_round_trip_is_exact(tmp_path):
    path = tmp_path / "m.ckpt"
    floats = np.random.default_rng(0).standard_normal(50).tolist()
    metadata = {**METADATA, "floats": floats, "tuple": (1, (2, 3)), "nan": float("nan")}
    st.write_checkpoint(path, {}, metadata)
    _, loaded = st.read_checkpoint(path)
    assert loaded["floats"] == floats  # repr round trip: every float bit-exact
    assert loaded["tuple"] == [1, [2, 3]]
    assert np.isnan(loaded["nan"])
    assert st.read_metadata(path)["rng"] == METADATA["rng"]
    # The generator state really restores the stream.
    gen = np.random.default_rng()
    gen.bit_generator.state = loaded["rng"]
    assert np.array_equal(gen.random(5), np.random.default_rng(1234).random(5))


def test_non_contiguous_big_endian_and_odd_bools_are_normalised(tmp_path):
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    weird_bool = np.array([0, 1, 2, 255], dtype=np.uint8).view(bool)
    tensors = {"t": base.T, "s": base[::2, 1::3], "be": base.astype(">f8"), "b": weird_bool,
               "i": np.arange(5, dtype=">i4")}
    st.write_checkpoint(tmp_path / "n.ckpt", tensors, {})
    loaded, _ = st.read_checkpoint(tmp_path / "n.ckpt")
    assert np.array_equal(loaded["t"], base.T) and loaded["t"].flags.c_contiguous
    assert np.array_equal(loaded["s"], base[::2, 1::3])
    assert loaded["be"].dtype == np.float64 and np.array_equal(loaded["be"], base)
    assert loaded["i"].dtype == np.int32 and loaded["i"].tolist() == [0, 1, 2, 3, 4]
    assert loaded["b"].view(np.uint8).tolist() == [0, 1, 1, 1]


def test_read_metadata_reads_only_the_header(tmp_path):
    path = tmp_path / "big.ckpt"
    st.write_checkpoint(path, {"w": np.ones(1000, np.float32)}, {"epoch": 3})
    blob = path.read_bytes()
    header_end = 8 + int.from_bytes(blob[:8], "little")
    # Corrupt the data: the header alone is still readable; the full read notices.
    path.write_bytes(blob[:header_end] + b"\x01" + blob[header_end + 1:])
    assert st.read_metadata(path) == {"epoch": 3}
    with pytest.raises(CheckpointError, match="content hash does not match"):
        st.read_checkpoint(path)


def test_file_layout_follows_the_spec():
    blob = st.checkpoint_bytes({"a": np.ones(3, np.uint8), "b": np.ones(2, np.float64)},
                               {"k": "v"})
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    assert n % 8 == 0 and blob[8:9] == b"{"
    assert header["b"] == {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}
    assert header["a"] == {"dtype": "U8", "shape": [3], "data_offsets": [16, 19]}
    assert header["__metadata__"]["k"] == '"v"'
    assert header["__metadata__"][st.FORMAT_KEY] == st.FORMAT
    assert len(blob) == 8 + n + 19


def test_hash_is_the_documented_content_hash():
    tensors = {"w": np.arange(4, dtype=np.float32), "a": np.zeros((2, 0), np.int8)}
    blob = st.checkpoint_bytes(tensors, {"epoch": 1})
    n = int.from_bytes(blob[:8], "little")
    meta = json.loads(blob[8:8 + n])["__metadata__"]
    index = {"metadata": sorted([k, v] for k, v in meta.items() if k != st.HASH_KEY),
             "tensors": [["a", "I8", [2, 0]], ["w", "F32", [4]]]}
    digest = hashlib.sha256(b"zoo-checkpoint-1\n" + json.dumps(index, separators=(",", ":"))
                            .encode() + b"\n" + tensors["w"].tobytes())
    assert meta[st.HASH_KEY] == digest.hexdigest()


# -- interop with the safetensors package ----------------------------------------------------

def test_files_written_here_load_in_safetensors(tmp_path):
    tensors = every_dtype_tensors()
    path = tmp_path / "ours.ckpt"
    st.write_checkpoint(path, tensors, METADATA)
    theirs = stnp.load_file(str(path))
    assert sorted(theirs) == sorted(tensors)
    assert all(same(theirs[k], v) for k, v in tensors.items())
    with safetensors.safe_open(str(path), framework="np") as f:
        meta = f.metadata()
    assert json.loads(meta["optimizer"]) == METADATA["optimizer"]
    assert meta[st.FORMAT_KEY] == st.FORMAT


def test_files_written_by_safetensors_load_here(tmp_path):
    tensors = every_dtype_tensors()
    path = tmp_path / "theirs.safetensors"
    stnp.save_file(tensors, str(path), metadata={"format": "np", "author": "someone"})
    loaded, meta = st.read_safetensors(path)
    assert all(same(loaded[k], v) for k, v in tensors.items()) and sorted(loaded) == sorted(tensors)
    assert meta == {"format": "np", "author": "someone"}
    with pytest.raises(CheckpointError, match="not a zoo checkpoint"):
        st.read_checkpoint(path)
    assert st.parse_safetensors_bytes(stnp.save(tensors))[0].keys() == tensors.keys()


def test_checkpoint_resaved_by_safetensors_still_verifies(tmp_path):
    """The hash covers content, not layout: another tool may rewrite the file."""
    tensors = every_dtype_tensors()
    ours = tmp_path / "ours.ckpt"
    st.write_checkpoint(ours, tensors, METADATA)
    with safetensors.safe_open(str(ours), framework="np") as f:
        meta = f.metadata()
    resaved = tmp_path / "resaved.ckpt"
    stnp.save_file(stnp.load_file(str(ours)), str(resaved), metadata=meta)
    loaded, metadata = st.read_checkpoint(resaved)
    assert metadata == METADATA and all(same(loaded[k], v) for k, v in tensors.items())
    # ...and a tool that changed a value is caught.
    changed = dict(stnp.load_file(str(ours)))
    changed["float32/matrix"] = changed["float32/matrix"] + 1
    stnp.save_file(changed, str(resaved), metadata=meta)
    with pytest.raises(CheckpointError, match="content hash does not match"):
        st.read_checkpoint(resaved)


def test_plain_safetensors_round_trip(tmp_path):
    path = tmp_path / "w.safetensors"
    st.write_safetensors(path, {"w": np.eye(3, dtype=np.float32)}, {"format": "np"})
    loaded, meta = st.read_safetensors(path)
    assert np.array_equal(loaded["w"], np.eye(3)) and meta == {"format": "np"}
    assert np.array_equal(stnp.load_file(str(path))["w"], np.eye(3))


def test_unaligned_foreign_file_gives_aligned_arrays():
    header = json.dumps({"u": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
                         "f": {"dtype": "F32", "shape": [2], "data_offsets": [1, 9]}}).encode()
    data = b"\x07" + np.array([1.5, -2.0], np.float32).tobytes()
    tensors, _ = st.parse_safetensors_bytes(len(header).to_bytes(8, "little") + header + data)
    assert tensors["f"].flags.aligned and tensors["f"].tolist() == [1.5, -2.0]
    assert tensors["u"].tolist() == [7]


# -- atomic writes ---------------------------------------------------------------------------

class Interrupt(BaseException):
    """Stands in for Ctrl-C or SystemExit arriving mid-write."""


OLD = {"w": np.zeros(4, np.float32)}
NEW = {"w": np.ones(1 << 16, np.float32)}


@pytest.fixture
def old_checkpoint(tmp_path):
    path = tmp_path / "run.ckpt"
    st.write_checkpoint(path, OLD, {"epoch": 1})
    return path, path.read_bytes()


def _fail_after_first_chunk(monkeypatch, exc):
    real = st._layout

    def layout(*args):
        def chunks():
            chunks = real(*args)
            yield chunks[0]
            raise exc
        return chunks()
    monkeypatch.setattr(st, "_layout", layout)


@pytest.mark.parametrize("inject", ["fsync", "replace", "mid_write_oserror", "mid_write_interrupt"])
def test_failed_write_keeps_the_old_file_and_leaves_no_temp(old_checkpoint, monkeypatch, inject):
    path, before = old_checkpoint

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if inject == "fsync":
        monkeypatch.setattr(os, "fsync", boom)
    elif inject == "replace":
        monkeypatch.setattr(os, "replace", boom)
    elif inject == "mid_write_oserror":
        _fail_after_first_chunk(monkeypatch, OSError(28, "No space left on device"))
    else:
        _fail_after_first_chunk(monkeypatch, Interrupt())
    expected = Interrupt if inject == "mid_write_interrupt" else CheckpointError
    with pytest.raises(expected) as info:
        st.write_checkpoint(path, NEW, {"epoch": 2})
    if expected is CheckpointError:
        assert "No space left on device" in str(info.value) and str(path) in str(info.value)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]
    assert st.read_checkpoint(path).metadata == {"epoch": 1}


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    _fail_after_first_chunk(monkeypatch, Interrupt())
    with pytest.raises(Interrupt):
        st.write_checkpoint(tmp_path / "new.ckpt", NEW, {})
    assert os.listdir(tmp_path) == []


def test_write_replaces_and_uses_default_permissions(old_checkpoint):
    path, _ = old_checkpoint
    st.write_checkpoint(path, NEW, {"epoch": 2})
    assert st.read_checkpoint(path).metadata == {"epoch": 2}
    assert os.listdir(path.parent) == [path.name]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


def test_write_to_missing_folder_or_a_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        st.write_checkpoint(tmp_path / "nope" / "x.ckpt", OLD, {})
    with pytest.raises(CheckpointError, match="is a folder"):
        st.write_checkpoint(tmp_path, OLD, {})


@pytest.mark.parametrize("tensors, metadata, match", [
    ({"c": np.zeros(2, np.complex64)}, {}, "dtype complex64"),
    ({"o": np.array([1, "a"], dtype=object)}, {}, "dtype object"),
    ({"s": np.array(["ab"])}, {}, "dtype <U2"),
    ({"l": [1, 2]}, {}, "must be a numpy array; received list"),
    ({"": np.zeros(1)}, {}, "non-empty strings"),
    ({"__metadata__": np.zeros(1)}, {}, "non-empty strings"),
    ({}, {"zoo.sha256": "x"}, "not starting with 'zoo.'"),
    ({}, {"n": np.int64(3)}, "numpy.int64 is not a JSON value"),
    ({}, {"s": {1, 2}}, "builtins.set is not a JSON value"),
    ({}, {"d": {1: "a"}}, "dict keys must be strings; received 1"),
    ({}, {"big": "x" * (17 << 20)}, "over the 16777216-byte limit"),
    ([np.zeros(1)], {}, "must be a dict of name to array"),
])
def test_write_refuses_what_cannot_be_stored(tmp_path, tensors, metadata, match):
    with pytest.raises(CheckpointError, match=match):
        st.write_checkpoint(tmp_path / "bad.ckpt", tensors, metadata)
    assert os.listdir(tmp_path) == []


# -- malformed and hostile files -------------------------------------------------------------

def framed(header, data=b"", length=None):
    """A file from a header (dict, str or bytes) and a data area."""
    if isinstance(header, dict):
        header = json.dumps(header)
    if isinstance(header, str):
        header = header.encode()
    n = len(header) if length is None else length
    return n.to_bytes(8, "little") + header + data


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def resigned(header, data):
    """A checkpoint with ``header``'s tensors and metadata and a correct hash (so that only
    the flaw under test can be what the reader objects to)."""
    header = json.loads(json.dumps(header))
    meta = header.setdefault("__metadata__", {})
    meta.setdefault(st.FORMAT_KEY, st.FORMAT)
    meta.pop(st.HASH_KEY, None)
    items = sorted((name, e["dtype"], e["shape"], data[e["data_offsets"][0]:e["data_offsets"][1]])
                   for name, e in header.items() if name != "__metadata__")
    index = {"metadata": sorted([k, v] for k, v in meta.items()),
             "tensors": [[n, d, s] for n, d, s, _ in items]}
    digest = hashlib.sha256(b"zoo-checkpoint-1\n"
                            + json.dumps(index, separators=(",", ":")).encode() + b"\n")
    for *_, raw in items:
        digest.update(raw)
    meta[st.HASH_KEY] = digest.hexdigest()
    return framed(header, data)


GOOD = st.checkpoint_bytes({"w": np.arange(6, dtype=np.float32), "b": np.ones(3, np.int8)},
                           {"epoch": 1})
GOOD_N = int.from_bytes(GOOD[:8], "little")
W8 = np.arange(2, dtype=np.float32).tobytes()


def _zip_bytes():
    import io
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
    return out.getvalue()


def _npy_bytes():
    import io
    out = io.BytesIO()
    np.save(out, np.zeros(3))
    return out.getvalue()


# (id, file bytes, expected message fragment)
MALFORMED = [
    ("empty file", b"", "the file has 0 bytes"),
    ("shorter than the length", b"\x10\x00\x00", "the file has 3 bytes"),
    ("truncated in the header", GOOD[:GOOD_N // 2], "exceeds the file size"),
    ("truncated in the data", GOOD[:-3], "beyond the data area"),
    ("truncated after the header", GOOD[:8 + GOOD_N], "beyond the data area"),
    ("header length huge", (9999999999).to_bytes(8, "little") + b"{}" * 8,
     "header length 9999999999 exceeds the file size (24 bytes)"),
    ("header length 2**64-1", b"\xff" * 8 + b"{}", "exceeds the file size"),
    ("header length zero", framed(b"", b"{}", length=0), "too small for a JSON object"),
    ("header covers the data", (GOOD_N + 4).to_bytes(8, "little") + GOOD[8:],
     "unexpected text after the header"),
    ("header not UTF-8", framed(b'{"\xff": 1}'), "not UTF-8"),
    ("header not JSON", framed(b"{nope}"), "expected a string key"),
    ("header is a list", framed(b"[1, 2]"), "must be a JSON object"),
    ("header is a string", framed(b'"{}"'), "must be a JSON object"),
    ("header has trailing text", framed(b"{} {}"), "unexpected text after"),
    ("unterminated header", framed(b'{"w": {"dtype": "F32"'), "expected ',' or '}'"),
    ("control character in a string", framed(b'{"a\x01": {}}'), "expected a string key"),
    ("bad escape", framed(b'{"a\\x": {}}'), "expected a string key"),
    ("duplicate tensor", framed(b'{"w": %s, "w": %s}' % (json.dumps(entry()).encode(),
                                                       json.dumps(entry()).encode()), W8),
     "'w' appears twice"),
    ("duplicate field", framed(b'{"w": {"dtype": "F32", "dtype": "F32"}}'), "has 'dtype' twice"),
    ("unknown dtype BF16", framed({"w": entry("BF16", (4,))}, W8), "dtype 'BF16'"),
    ("numpy dtype name", framed({"w": entry("float32")}, W8), "dtype 'float32'"),
    ("dtype not a string", framed({"w": entry(7)}, W8), "dtype must be a string"),
    ("object dtype", framed({"w": entry("O")}, W8), "dtype 'O'; expected one of"),
    ("shape/bytes mismatch", framed({"w": entry(shape=(3,))}, W8), "needs 12 bytes"),
    ("negative dimension", framed({"w": entry(shape=(-2,), offsets=(0, 0))}),
     "negative dimension"),
    ("float dimension", framed(b'{"w": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}',
                               W8), "list of integers"),
    ("bool dimension", framed(b'{"w": {"dtype": "F32", "shape": [true], "data_offsets": [0, 4]}}',
                              W8[:4]), "list of integers"),
    ("leading zero", framed(b'{"w": {"dtype": "F32", "shape": [02], "data_offsets": [0, 8]}}', W8),
     "list of integers"),
    ("21-digit dimension", framed({"w": entry(shape=(0, 10**20), offsets=(0, 0))}),
     "at most 20 digits"),
    ("too many dimensions", framed({"w": entry(shape=(1,) * 33, offsets=(0, 4))}, W8[:4]),
     "more than 32 entries"),
    ("empty array too large for numpy", framed({"w": entry(shape=(0, 2**62), offsets=(0, 0))}),
     "too large for numpy"),
    ("shape missing", framed({"w": {"dtype": "F32", "data_offsets": [0, 8]}}, W8), "no 'shape'"),
    ("unknown field", framed({"w": {**entry(), "code": "x"}}, W8), "unknown field 'code'"),
    ("entry not an object", framed({"w": [1, 2]}, W8), "must be a JSON object"),
    ("three offsets", framed({"w": entry(offsets=(0, 4, 8))}, W8), "more than 2 entries"),
    ("one offset", framed({"w": entry(offsets=(8,))}, W8), "must be [begin, end]"),
    ("begin after end", framed({"w": entry(offsets=(8, 0))}, W8), "0 <= begin <= end"),
    ("negative offset", framed({"w": entry(offsets=(-8, 0))}, W8), "0 <= begin <= end"),
    ("offset out of range", framed({"w": entry(offsets=(0, 8))}, W8[:4]), "beyond the data area"),
    ("huge offset", framed({"w": entry(offsets=(2**63, 2**63 + 8))}, W8), "beyond the data area"),
    ("overlapping offsets", framed({"a": entry(), "b": entry(shape=(1,), offsets=(4, 8))}, W8),
     "overlap"),
    ("same offsets twice", framed({"a": entry(), "b": entry()}, W8), "overlap"),
    ("empty tensor inside another", framed({"a": entry(), "e": entry(shape=(0,), offsets=(4, 4))},
                                           W8), "overlap"),
    ("gap between tensors", framed({"a": entry(shape=(1,), offsets=(0, 4)),
                                    "b": entry(shape=(1,), offsets=(8, 12))}, W8 + W8[:4]),
     "bytes 4 to 8 of the data area belong to no tensor"),
    ("gap at the start", framed({"a": entry(shape=(1,), offsets=(4, 8))}, W8), "bytes 0 to 4"),
    ("unused bytes at the end", framed({"a": entry()}, W8 + b"junk"), "bytes 8 to 12"),
    ("data but no tensors", framed({}, b"junk"), "bytes 0 to 4"),
    ("empty tensor name", framed({"": entry()}, W8), "a tensor name is empty"),
    ("metadata value a number", framed({"__metadata__": {"epoch": 3}}), "must be a string"),
    ("metadata value null", framed({"__metadata__": {"x": None}}), "must be a string"),
    ("metadata a list", framed({"__metadata__": ["a"]}), "__metadata__ must be a JSON object"),
    ("NaN in the header", framed(b'{"w": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 8]}}',
                                 W8), "list of integers"),
    ("BOOL byte 2", resigned({"m": entry("BOOL", (2,), (0, 2))}, b"\x01\x02"),
     "BOOL bytes must be 0 or 1"),
    ("hash mismatch", GOOD[:-1] + bytes([GOOD[-1] ^ 1]), "content hash does not match"),
    ("hash malformed", framed({"__metadata__": {st.FORMAT_KEY: st.FORMAT, st.HASH_KEY: "abc"}}),
     "no valid 'zoo.sha256'"),
    ("hash missing", framed({"__metadata__": {st.FORMAT_KEY: st.FORMAT}}), "no valid 'zoo.sha256'"),
    ("plain safetensors", stnp.save({"w": np.zeros(2, np.float32)}), "not a zoo checkpoint"),
    ("newer format", framed({"__metadata__": {st.FORMAT_KEY: "zoo-checkpoint-9"}}),
     "format 'zoo-checkpoint-9' is not supported"),
    ("unknown reserved key", resigned({"__metadata__": {"zoo.exec": "os.system"}}, b""),
     "unknown reserved metadata keys"),
    ("metadata not JSON", resigned({"__metadata__": {"epoch": "three"}}, b""),
     "metadata 'epoch' is not valid JSON"),
    ("pickle protocol 2", pickle.dumps({"w": [1.0] * 3}, protocol=2), "a Python pickle"),
    ("pickle protocol 5", pickle.dumps({"w": [1.0] * 3}, protocol=5), "a Python pickle"),
    ("tiny pickle", pickle.dumps(None, protocol=4), "a Python pickle"),
    ("pickle protocol 0", pickle.dumps({"w": [1.0] * 3}, protocol=0), "not a zoo checkpoint"),
    ("zip (PyTorch-style)", _zip_bytes(), "a zip archive"),
    ("numpy .npy", _npy_bytes(), "a numpy .npy file"),
]


@pytest.mark.parametrize("blob, match", [case[1:] for case in MALFORMED],
                         ids=[case[0] for case in MALFORMED])
def test_malformed_files_raise_checkpoint_error(tmp_path, blob, match):
    path = tmp_path / "model.ckpt"
    path.write_bytes(blob)
    for load in (st.read_checkpoint, lambda p: st.parse_checkpoint_bytes(p.read_bytes(),
                                                                         name=str(p))):
        with pytest.raises(CheckpointError) as info:
            load(path)
        message = str(info.value)
        assert match in message
        assert message.startswith(f"checkpoint {path}: ") and "\n" not in message


def test_good_file_of_the_table_is_good():
    """The table's base file and its 'resigned' helper do produce loadable checkpoints."""
    assert st.parse_checkpoint_bytes(GOOD).metadata == {"epoch": 1}
    blob = resigned({"m": entry("BOOL", (2,), (0, 2)), "__metadata__": {"epoch": "1"}},
                    b"\x01\x00")
    assert st.parse_checkpoint_bytes(blob).tensors["m"].tolist() == [True, False]


def test_header_cap(tmp_path):
    path = tmp_path / "m.ckpt"
    st.write_checkpoint(path, {}, {"blob": "x" * 1000})
    with pytest.raises(CheckpointError, match="exceeds the limit of 512 bytes"):
        st.read_checkpoint(path, max_header_bytes=512)
    assert st.read_checkpoint(path, max_header_bytes=4096).metadata["blob"] == "x" * 1000


def test_too_much_metadata_structure_is_refused():
    blob = resigned({"__metadata__": {"list": json.dumps([0] * ((1 << 20) + 1))}}, b"")
    with pytest.raises(CheckpointError, match="more than 1048576 JSON values"):
        st.parse_checkpoint_bytes(blob)


def test_missing_folder_and_fifo(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        st.read_checkpoint(tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match="not a regular file"):
        st.read_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="not a regular file"):
        st.read_metadata(tmp_path)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
        with pytest.raises(CheckpointError, match="not a regular file"):  # and does not block
            st.read_checkpoint(tmp_path / "fifo")


def test_valid_length_starting_like_a_magic_number_is_not_misread():
    """A header of 640 bytes starts with b'\\x80\\x02', the pickle protocol 2 magic."""
    meta = {"pad": "x" * (640 - 200)}
    for extra in range(40):
        blob = st.checkpoint_bytes({}, {**meta, "p": "y" * extra})
        if blob[:2] == b"\x80\x02":
            assert st.parse_checkpoint_bytes(blob).metadata["p"] == "y" * extra
            return
    pytest.fail("no header of 640 bytes produced")
