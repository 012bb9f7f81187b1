"""Fuzzing the checkpoint reader: every mutated file loads exactly or is one CheckpointError.

Thousands of mutated checkpoints (truncations, bit flips anywhere, header edits, hostile header
lengths, and structural edits re-signed with a valid hash so that only the structural checks
can catch them) are written to disk and read with ``read_checkpoint``. Each must either raise
``CheckpointError`` (one line naming the file) or load: a file whose hash was not re-signed
then loads bit for bit as the original, a re-signed one as the ``safetensors`` package itself
reads it. Nothing else may escape.
"""

import hashlib
import json
import time
import tracemalloc

import numpy as np
import safetensors.numpy as stnp

from zoo.checkpoints import format as st
from zoo.errors import CheckpointError

SEED = 8_2024
CODES = {"BOOL": "|b1", "U8": "|u1", "I8": "|i1", "U16": "<u2", "I16": "<i2", "F16": "<f2",
         "U32": "<u4", "I32": "<i4", "F32": "<f4", "U64": "<u8", "I64": "<i8", "F64": "<f8"}
MAX_HEADER = 16 * 1024 * 1024


def reference_digest(tensors, metadata):
    """The documented content hash. ``tensors``: name -> (code, shape, bytes)."""
    index = {"metadata": sorted([k, v] for k, v in metadata.items() if k != "zoo.sha256"),
             "tensors": [[name, tensors[name][0], list(tensors[name][1])]
                         for name in sorted(tensors)]}
    h = hashlib.sha256(b"zoo-checkpoint-1\n")
    h.update(json.dumps(index, separators=(",", ":")).encode() + b"\n")
    for name in sorted(tensors):
        h.update(tensors[name][2])
    return h.hexdigest()


# -- material ------------------------------------------------------------------------------------

def base_files():
    rng = np.random.default_rng(SEED)
    full = {
        "dense/weight": rng.standard_normal((3, 4)).astype(np.float32),
        "dense/bias": np.zeros(4, np.float32),
        "adam/step": np.array(17, np.int64),
        "bn/var": rng.random(5),
        "mask": np.array([True, False, True]),
        "bytes": rng.integers(0, 256, 7).astype(np.uint8),
        "half": rng.standard_normal(3).astype(np.float16),
        "empty": np.zeros(0, np.float16),
        "empty3d": np.zeros((2, 0, 3), np.int16),
        "u32": np.arange(3, dtype=np.uint32),
        "i8": np.array([-1, 2], np.int8),
        "u16": np.array([65535], np.uint16),
        "u64": np.array([2**64 - 1], np.uint64),
        "i32": np.array([[-7]], np.int32),
    }
    metadata = {"arch": {"name": "cnn", "options": {"filters": [6, 16]}}, "epoch": 3,
                "rng": np.random.default_rng(7).bit_generator.state,
                "stopping": {"best": float("inf"), "wait": 2}, "note": "é ✓"}
    return [st.checkpoint_bytes(full, metadata),
            st.checkpoint_bytes({"w": np.arange(2, dtype=np.float32)}, {"epoch": 1}),
            st.checkpoint_bytes({}, {"empty": []})]


JSON_BYTES = b'"{}[],:0123456789-.eE \\tnu'


def split(buf):
    n = int.from_bytes(buf[:8], "little")
    return buf[8:8 + n], buf[8 + n:]


def frame(header: bytes, data: bytes) -> bytes:
    return len(header).to_bytes(8, "little") + header + data


def raw_mutation(buf, rng):
    """A byte-level corruption; the hash is left as it was."""
    b = bytearray(buf)
    n = int.from_bytes(buf[:8], "little")
    kind = rng.integers(10)
    if kind == 0:
        return bytes(b[:rng.integers(len(b))])
    if kind == 1:
        for _ in range(rng.integers(1, 5)):
            i = rng.integers(len(b))
            b[i] ^= 1 << rng.integers(8)
    elif kind == 2:
        i = 8 + rng.integers(n)
        b[i] ^= 1 << rng.integers(8)
    elif kind == 3:
        b[rng.integers(8)] ^= 1 << rng.integers(8)
    elif kind == 4:
        specials = [0, 1, 2, n - 1, n + 1, len(b) - 8, len(b) - 7, 2**32, 2**63, 2**64 - 1,
                    MAX_HEADER + 1, int(rng.integers(2**63))]
        b[:8] = int(specials[rng.integers(len(specials))]).to_bytes(8, "little")
    elif kind == 5:
        b[8 + rng.integers(n)] = JSON_BYTES[rng.integers(len(JSON_BYTES))]
    elif kind == 6:
        header, data = split(buf)
        i = rng.integers(len(header) + 1)
        header = header[:i] + bytes([JSON_BYTES[rng.integers(len(JSON_BYTES))]]) + header[i:]
        return frame(header, data)
    elif kind == 7:
        header, data = split(buf)
        i = rng.integers(len(header))
        return frame(header[:i] + header[i + 1:], data)
    elif kind == 8:
        return bytes(b) + rng.integers(0, 256, rng.integers(1, 9)).astype(np.uint8).tobytes()
    elif len(b) > 8 + n:
        i = 8 + n + rng.integers(len(b) - 8 - n)
        b[i] ^= 1 << rng.integers(8)
    else:
        b.append(0)
    return bytes(b)


def _weird_value(rng):
    values = [-1, 0, 1, 3, 2**31, 2**62, 10**20, 1.5, True, None, "2", [1], {"a": 1}, [], "F32"]
    return values[rng.integers(len(values))]


def structural_mutation(buf, rng):
    """An edit of the header's meaning (or of the data), re-signed with a valid hash."""
    text, data = split(buf)
    header = json.loads(text)
    meta = header.setdefault("__metadata__", {})
    names = [k for k in header if k != "__metadata__"]
    name = names[rng.integers(len(names))] if names else None
    info = header[name] if name else None
    kind = rng.integers(16) if name else 11 + rng.integers(5)
    if kind == 0:
        codes = list(CODES) + ["BF16", "F8_E4M3", "C64", "f32", "float32", "", "F32 ", 5, None]
        info["dtype"] = codes[rng.integers(len(codes))]
    elif kind == 1:
        shape = info["shape"]
        op = rng.integers(5)
        if op == 0:
            shape.append(int(rng.integers(0, 3)))
        elif op == 1 and shape:
            shape.pop()
        elif op == 2 and shape:
            shape[rng.integers(len(shape))] = _weird_value(rng)
        elif op == 3:
            info["shape"] = [int(np.prod(shape))] if rng.integers(2) else [1] * 33
        else:
            info["shape"] = _weird_value(rng)
    elif kind == 2:
        offsets = info["data_offsets"]
        op = rng.integers(5)
        if op == 0:
            offsets[rng.integers(2)] += int(rng.integers(-9, 10))
        elif op == 1:
            offsets.reverse()
        elif op == 2:
            other = header[names[rng.integers(len(names))]]
            info["data_offsets"] = list(other["data_offsets"])
        elif op == 3:
            offsets[rng.integers(2)] = _weird_value(rng)
        else:
            info["data_offsets"] = offsets + [offsets[1]] if rng.integers(2) else offsets[:1]
    elif kind == 3:
        del info[list(info)[rng.integers(len(info))]]
    elif kind == 4:
        info["extra"] = _weird_value(rng)
    elif kind == 5:
        del header[name]
    elif kind == 6:
        header[name + "/copy"] = dict(info)
    elif kind == 7:
        at = int(rng.integers(len(data) + 1))
        header["zero"] = {"dtype": "F32", "shape": [0], "data_offsets": [at, at]}
    elif kind == 8:
        header["" if rng.integers(2) else name.upper() + "\u00e9"] = header.pop(name)
    elif kind == 9:
        if data:
            b = bytearray(data)
            b[rng.integers(len(b))] = int(rng.integers(256))
            data = bytes(b)
    elif kind == 10:
        data = data[:rng.integers(len(data) + 1)] if rng.integers(2) else data + b"\x00" * 4
    elif kind == 11:
        meta[list(meta)[rng.integers(len(meta))]] = _weird_value(rng)
    elif kind == 12:
        meta.pop(list(meta)[rng.integers(len(meta))])
    elif kind == 13:
        choices = [("zoo.format", "zoo-checkpoint-2"), ("zoo.sha256", "0" * 64),
                   ("zoo.sha256", "A" * 64), ("zoo.extra", "1"), ("epoch", "nope"),
                   ("epoch", "NaN"), ("epoch", "[[[[[]]]]]"), ("epoch", "1e999")]
        key, value = choices[rng.integers(len(choices))]
        meta[key] = value
    elif kind == 14:
        header["__metadata__"] = _weird_value(rng)
    else:
        del header["__metadata__"]
    _resign(header, data)
    return frame(_serialise(header, rng), data)


def _resign(header, data):
    """Give the edited header a correct hash, when its structure is interpretable at all."""
    meta = header.get("__metadata__")
    try:
        tensors = {}
        for name, info in header.items():
            if name != "__metadata__":
                begin, end = info["data_offsets"]
                tensors[name] = (info["dtype"], info["shape"], data[begin:end])
        if isinstance(meta, dict) and "zoo.sha256" in meta:
            meta["zoo.sha256"] = reference_digest(tensors, meta)
    except (KeyError, TypeError, ValueError, IndexError):
        pass  # the edit broke the structure: whatever hash is there stays


def _serialise(header, rng) -> bytes:
    """JSON in one of several valid spellings: key order, separators, escapes, padding."""
    items = list(header.items())
    if rng.integers(3) == 0:
        items = [items[i] for i in rng.permutation(len(items))]
    separators = [(",", ":"), (", ", ": ")][rng.integers(2)]
    text = json.dumps(dict(items), separators=separators, ensure_ascii=bool(rng.integers(2)))
    if rng.integers(4) == 0:
        text = text + " " * int(rng.integers(8)) + "\n\t\r"[: rng.integers(4)]
    if rng.integers(6) == 0 and '{"dtype":' in text:  # a duplicate field
        text = text.replace('{"dtype":', '{"dtype":"F32","dtype":', 1)
    return text.encode()


# -- the properties ------------------------------------------------------------------------------

def summary(result):
    tensors, metadata = result
    return ({name: (a.dtype.str, a.shape, a.tobytes()) for name, a in tensors.items()},
            json.dumps(metadata, sort_keys=True))


def load(path, buf):
    path.write_bytes(buf)
    try:
        return st.read_checkpoint(path)
    except CheckpointError as exc:
        message = str(exc)
        assert message.startswith(f"checkpoint {path}: ") and "\n" not in message, message
        return exc


def test_fuzzed_checkpoints_load_exactly_or_raise_checkpoint_error(tmp_path):
    rng = np.random.default_rng(SEED)
    bases = base_files()
    originals = [summary(st.read_checkpoint(_write(tmp_path / f"base{i}.ckpt", b)))
                 for i, b in enumerate(bases)]
    path = tmp_path / "fuzz.ckpt"
    counts = {"raw": [0, 0], "structural": [0, 0]}
    start = time.perf_counter()
    for i in range(3000):
        which = i % len(bases)
        family = "raw" if i % 2 else "structural"
        mutate = raw_mutation if family == "raw" else structural_mutation
        buf = mutate(bases[which], rng)
        result = load(path, buf)
        if isinstance(result, CheckpointError):
            counts[family][0] += 1
            continue
        counts[family][1] += 1
        if family == "raw":  # no re-signing: what loads is the original, bit for bit
            assert summary(result) == originals[which], (family, i)
        else:  # re-signed: what loads is what the safetensors package reads, in allowed dtypes
            theirs = stnp.load(buf)
            assert {k: v.tobytes() for k, v in theirs.items()} == \
                {k: v.tobytes() for k, v in result.tensors.items()}, (family, i)
        for name, array in result.tensors.items():
            assert array.dtype in [np.dtype(c) for c in CODES.values()], (name, array.dtype)
            if array.dtype == bool:
                assert array.view(np.uint8).max(initial=0) <= 1
    elapsed = time.perf_counter() - start
    # Both outcomes happen in both families, so neither the mutations nor the checks are vacuous.
    assert all(rejected > 100 and loaded > 0 for rejected, loaded in counts.values()), counts
    assert counts["structural"][1] > 50, counts
    print(f"fuzz: {counts} (rejected, loaded) in {elapsed:.2f}s")


def _write(path, buf):
    path.write_bytes(buf)
    return path


def test_hostile_header_lengths_allocate_nothing(tmp_path):
    """zoo's own pre-check refuses these before the library reads anything."""
    path = tmp_path / "liar.ckpt"
    for claimed in [2**64 - 1, 2**63, 2**40, MAX_HEADER + 1, 10**9]:
        path.write_bytes(claimed.to_bytes(8, "little") + b'{"a":' * 20)
        for read in (st.read_checkpoint, st.read_metadata):
            tracemalloc.start()
            try:
                try:
                    read(path)
                except CheckpointError as exc:
                    result = exc
                extra = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert isinstance(result, CheckpointError) and "header length" in str(result)
            assert extra < 16 * 1024


def test_large_hostile_headers_are_refused_or_loaded_quickly(tmp_path):
    """Headers near the worst case for a parser: many tiny tensors, many metadata keys,
    deep nesting, long shapes, long escapes. Each is one CheckpointError, fast."""
    many_tensors = {f"t{i}": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}
                    for i in range(10_000)}
    many_keys = {"__metadata__": {f"k{i}": "" for i in range(30_000)}}
    cases = [
        frame(json.dumps(many_tensors, separators=(",", ":")).encode(), b""),
        frame(json.dumps(many_keys, separators=(",", ":")).encode(), b""),
        frame(b'{"a":' * 200_000 + b"{}" + b"}" * 200_000, b""),
        frame(b'{"w":{"dtype":"U8","shape":[' + b"0," * 500_000 + b"0]}}", b""),
        frame(b'{"__metadata__":{"k":"' + b"\\u00e9" * 200_000 + b'"}}', b""),
    ]
    for i, buf in enumerate(cases):
        start = time.perf_counter()
        result = load(tmp_path / f"hostile{i}.ckpt", buf)
        elapsed = time.perf_counter() - start
        print(f"hostile header of {len(buf)} bytes: {elapsed:.2f}s")
        assert isinstance(result, CheckpointError)  # none is a zoo checkpoint
        assert elapsed < 5
