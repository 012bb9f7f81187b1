"""The checkpoint file (zoo.checkpoints.format): safetensors from the library, zoo's metadata,
content hash and atomic write, and one CheckpointError line for every file that must not load.
"""

import hashlib
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import safetensors.numpy as stnp

from zoo.checkpoints import format as st
from zoo.errors import CheckpointError


def framed(header, data=b"", length=None):
    """A file in the safetensors layout with the given header (dict or raw bytes)."""
    if isinstance(header, dict):
        header = json.dumps(header).encode()
    n = len(header) if length is None else length
    return n.to_bytes(8, "little") + header + data


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def resigned(header, data):
    """A checkpoint with ``header``'s tensors and metadata and a correct hash, computed here
    from the documented definition (so only the flaw under test can be what is refused)."""
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
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
    return out.getvalue()


def _npy_bytes():
    out = io.BytesIO()
    np.save(out, np.zeros(3))
    return out.getvalue()


# (id, file bytes, expected message fragment): what loading must refuse, each in one line.
MALFORMED = [
    ("empty file", b"", "the file has 0 bytes"),
    ("shorter than the length", b"\x10\x00\x00", "the file has 3 bytes"),
    ("truncated in the header", GOOD[:GOOD_N // 2], "exceeds the file size"),
    ("truncated in the data", GOOD[:-3], "not a valid safetensors file"),
    ("truncated after the header", GOOD[:8 + GOOD_N], "not a valid safetensors file"),
    ("header length beyond the file", (9999999999).to_bytes(8, "little") + b"{}" * 8,
     "header length 9999999999 exceeds the file size (24 bytes"),
    ("header length 2**64-1", b"\xff" * 8 + b"{}", "exceeds the file size"),
    ("header length zero", framed(b"", b"{}", length=0), "not a valid safetensors file"),
    ("header covers the data (lying length)", (GOOD_N + 4).to_bytes(8, "little") + GOOD[8:],
     "not a valid safetensors file"),
    ("header not UTF-8", framed(b'{"\xff": 1}'), "not a valid safetensors file"),
    ("header not JSON", framed(b"{nope}"), "not a valid safetensors file"),
    ("header is a list", framed(b"[1, 2]"), "not a valid safetensors file"),
    ("deeply nested header", framed(b'{"a":' * 5000 + b"{}" + b"}" * 5000),
     "not a valid safetensors file"),
    ("unknown dtype BF16", resigned({"w": entry("BF16", (4,))}, W8), "dtype 'BF16'"),
    ("numpy dtype name", framed({"w": entry("float32")}, W8), "not a valid safetensors file"),
    ("shape/bytes mismatch", framed({"w": entry(shape=(3,))}, W8), "not a valid safetensors"),
    ("negative dimension", framed({"w": entry(shape=(-2,), offsets=(0, 0))}),
     "not a valid safetensors file"),
    ("empty array too large for numpy",
     resigned({"w": entry(shape=(0, 2**62), offsets=(0, 0))}, b""), "too big"),
    ("offset out of range", framed({"w": entry(offsets=(0, 8))}, W8[:4]), "not a valid"),
    ("overlapping offsets", framed({"a": entry(), "b": entry(shape=(1,), offsets=(4, 8))}, W8),
     "invalid offset"),
    ("gap between tensors", framed({"a": entry(shape=(1,), offsets=(0, 4)),
                                    "b": entry(shape=(1,), offsets=(8, 12))}, W8 + W8[:4]),
     "invalid offset"),
    ("unused bytes at the end", framed({"a": entry()}, W8 + b"junk"), "not fully covered"),
    ("metadata value a number", framed({"__metadata__": {"epoch": 3}}), "expected a string"),
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
def test_malformed_files_raise_one_checkpoint_error_line(tmp_path, blob, match):
    path = tmp_path / "model.ckpt"
    path.write_bytes(blob)
    with pytest.raises(CheckpointError) as info:
        st.read_checkpoint(path)
    message = str(info.value)
    assert match in message
    assert message.startswith(f"checkpoint {path}: ") and "\n" not in message


def test_the_table_helpers_make_loadable_checkpoints(tmp_path):
    """The base file and 'resigned' produce good checkpoints, so each case tests its flaw."""
    path = tmp_path / "m.ckpt"
    path.write_bytes(GOOD)
    assert st.read_checkpoint(path).metadata == {"epoch": 1}
    path.write_bytes(resigned({"m": entry("BOOL", (2,), (0, 2)), "__metadata__": {"e": "1"}},
                              b"\x01\x00"))
    assert st.read_checkpoint(path).tensors["m"].tolist() == [True, False]


def test_round_trip_every_dtype_and_metadata_exactly(tmp_path):
    tensors = {f"t_{dt}": (np.arange(6) % 2).astype(dt).reshape(2, 3)
               for dt in ("bool", "u1", "i1", "u2", "i2", "f2", "u4", "i4", "f4", "u8", "i8",
                          "f8")}
    tensors["scalar"] = np.array(3.5)
    tensors["empty"] = np.zeros((0, 4), np.float32)
    tensors["strided_big_endian"] = np.arange(10, dtype=">f8")[::2]
    metadata = {"a": [1, 2.5, None, True, "é ✓"], "b": {"inf": float("inf")}, "c": 0.1 + 0.2,
                "t": (1, 2)}
    path = tmp_path / "m.ckpt"
    st.write_checkpoint(path, tensors, metadata)
    back = st.read_checkpoint(path)
    for name, value in tensors.items():
        assert back.tensors[name].dtype == value.dtype.newbyteorder("=")
        assert np.array_equal(back.tensors[name], value), name
    assert back.metadata == {**metadata, "t": [1, 2]}
    assert st.read_metadata(path) == back.metadata
    # It is a plain safetensors file: the library reads the same tensors.
    theirs = stnp.load_file(path)
    assert {k: v.tobytes() for k, v in theirs.items()} == \
        {k: v.tobytes() for k, v in back.tensors.items()}


def test_hash_is_the_documented_content_hash_and_survives_a_resave(tmp_path):
    tensors = {"w": np.arange(3, dtype=np.float32), "b": np.ones(2, np.int64)}
    blob = st.checkpoint_bytes(tensors, {"epoch": 2})
    n = int.from_bytes(blob[:8], "little")
    meta = json.loads(blob[8:8 + n])["__metadata__"]
    index = {"metadata": sorted([k, v] for k, v in meta.items() if k != st.HASH_KEY),
             "tensors": [["b", "I64", [2]], ["w", "F32", [3]]]}
    digest = hashlib.sha256(b"zoo-checkpoint-1\n" + json.dumps(
        index, separators=(",", ":")).encode() + b"\n" + tensors["b"].tobytes()
        + tensors["w"].tobytes()).hexdigest()
    assert meta[st.HASH_KEY] == digest
    # Another tool re-saving the same tensors and metadata (in another order) still verifies.
    path = tmp_path / "resaved.ckpt"
    stnp.save_file({"w": tensors["w"], "b": tensors["b"]}, path, metadata=meta)
    assert st.read_checkpoint(path).metadata == {"epoch": 2}


@pytest.mark.parametrize("tensors, metadata, match", [
    ({"w": np.array(["a"])}, {}, "cannot hold"),
    ({"w": np.zeros(2, np.complex64)}, {}, "cannot hold"),
    ({"w": [1, 2]}, {}, "must be a numpy array"),
    ({"": np.zeros(1)}, {}, "non-empty strings"),
    ({}, {"zoo.x": 1}, "not starting with 'zoo.'"),
    ({}, {"k": {1: 2}}, "dict keys must be strings"),
    ({}, {"k": object()}, "is not a JSON value"),
    ({}, {"k": "x" * (st.MAX_HEADER_BYTES + 1)}, "over the"),
])
def test_write_refuses_what_cannot_be_stored(tmp_path, tensors, metadata, match):
    with pytest.raises(CheckpointError, match=match):
        st.write_checkpoint(tmp_path / "m.ckpt", tensors, metadata)
    assert list(tmp_path.iterdir()) == []


def test_write_to_a_missing_folder_or_a_folder(tmp_path):
    with pytest.raises(CheckpointError, match="folder .* does not exist"):
        st.write_checkpoint(tmp_path / "no" / "m.ckpt", {}, {})
    with pytest.raises(CheckpointError, match="it is a folder"):
        st.write_checkpoint(tmp_path, {}, {})


def test_header_cap(tmp_path):
    path = tmp_path / "m.ckpt"
    st.write_checkpoint(path, {}, {"blob": "x" * 1000})
    with pytest.raises(CheckpointError, match="exceeds the limit of 512 bytes"):
        st.read_checkpoint(path, max_header_bytes=512)
    assert st.read_checkpoint(path, max_header_bytes=4096).metadata["blob"] == "x" * 1000


def test_too_much_metadata_structure_is_refused(tmp_path):
    path = tmp_path / "m.ckpt"
    path.write_bytes(resigned({"__metadata__": {"list": json.dumps([0] * ((1 << 20) + 1))}}, b""))
    with pytest.raises(CheckpointError, match="more than 1048576 JSON values"):
        st.read_checkpoint(path)


def test_missing_file_folder_and_fifo(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        st.read_checkpoint(tmp_path / "missing.ckpt")
    for read in (st.read_checkpoint, st.read_metadata):
        with pytest.raises(CheckpointError, match="not a regular file"):
            read(tmp_path)
    if hasattr(os, "mkfifo"):  # the library alone would block forever opening a FIFO
        os.mkfifo(tmp_path / "fifo")
        with pytest.raises(CheckpointError, match="not a regular file"):
            st.read_checkpoint(tmp_path / "fifo")


def test_valid_length_starting_like_a_magic_number_is_not_misread(tmp_path):
    """A header of 640 bytes starts with b'\\x80\\x02', the pickle protocol 2 magic."""
    path = tmp_path / "m.ckpt"
    for extra in range(80):
        blob = st.checkpoint_bytes({}, {"pad": "x" * 440, "p": "y" * extra})
        if blob[:2] == b"\x80\x02":
            path.write_bytes(blob)
            assert st.read_checkpoint(path).metadata["p"] == "y" * extra
            return
    pytest.fail("no header of 640 bytes produced")
