"""Fuzzing the checkpoint reader against an independent, obviously correct reference.

Thousands of mutated checkpoints (truncations, bit flips anywhere, header edits, hostile header
lengths, and structural edits re-signed with a valid hash so that only the structural checks
can catch them) must each either load exactly as the reference loads them or raise
``CheckpointError`` exactly when the reference rejects them; nothing else may escape, and
parsing must not allocate much more than the file it reads.
"""

import hashlib
import json
import math
import re
import time
import tracemalloc

import numpy as np
import safetensors.numpy as stnp

from zoo.checkpoints import safetensors_io as st
from zoo.errors import CheckpointError

SEED = 8_2024
CODES = {"BOOL": "|b1", "U8": "|u1", "I8": "|i1", "U16": "<u2", "I16": "<i2", "F16": "<f2",
         "U32": "<u4", "I32": "<i4", "F32": "<f4", "U64": "<u8", "I64": "<i8", "F64": "<f8"}
MAX_HEADER = 16 * 1024 * 1024


# -- the reference: the spec and the module docstring, read literally --------------------------

class Invalid(Exception):
    pass


def _no_duplicates(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise Invalid
    return dict(pairs)


def _refuse(_):
    raise Invalid


def _is_int(x):
    return type(x) is int and abs(x) < 10**20


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


def reference_structure(buf):
    """Tensors (name -> (code, shape, bytes)) and string metadata of a valid safetensors file."""
    if len(buf) < 8:
        raise Invalid
    n = int.from_bytes(buf[:8], "little")
    if not 2 <= n <= min(len(buf) - 8, MAX_HEADER):
        raise Invalid
    try:
        header = json.loads(buf[8:8 + n].decode("utf-8"), object_pairs_hook=_no_duplicates,
                            parse_float=_refuse, parse_constant=_refuse)
    except (ValueError, RecursionError):
        raise Invalid from None
    if type(header) is not dict:
        raise Invalid
    metadata = header.pop("__metadata__", {})
    if type(metadata) is not dict or not all(type(v) is str for v in metadata.values()):
        raise Invalid
    data = buf[8 + n:]
    spans, tensors = [], {}
    for name, info in header.items():
        if name == "" or type(info) is not dict or set(info) != {"dtype", "shape", "data_offsets"}:
            raise Invalid
        code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if type(code) is not str or code not in CODES:
            raise Invalid
        if type(shape) is not list or len(shape) > 32:
            raise Invalid
        if not all(_is_int(d) and d >= 0 for d in shape):
            raise Invalid
        if type(offsets) is not list or len(offsets) != 2 or not all(map(_is_int, offsets)):
            raise Invalid
        begin, end = offsets
        itemsize = np.dtype(CODES[code]).itemsize
        if not 0 <= begin <= end <= len(data):
            raise Invalid
        if math.prod(shape) * itemsize != end - begin:
            raise Invalid
        if math.prod(max(d, 1) for d in shape) * itemsize > 2**63 - 1:
            raise Invalid
        raw = bytes(data[begin:end])
        if code == "BOOL" and any(b > 1 for b in raw):
            raise Invalid
        spans.append((begin, end))
        tensors[name] = (code, tuple(shape), raw)
    cursor = 0
    for begin, end in sorted(spans):
        if begin != cursor:
            raise Invalid
        cursor = end
    if cursor != len(data):
        raise Invalid
    return tensors, metadata


def reference_load(buf):
    """(tensors, metadata) of a valid zoo checkpoint, or None."""
    try:
        tensors, metadata = reference_structure(buf)
        if metadata.get("zoo.format") != "zoo-checkpoint-1":
            raise Invalid
        if not re.fullmatch("[0-9a-f]{64}", metadata.get("zoo.sha256", "")):
            raise Invalid
        if any(k.startswith("zoo.") and k not in ("zoo.format", "zoo.sha256") for k in metadata):
            raise Invalid
        if reference_digest(tensors, metadata) != metadata["zoo.sha256"]:
            raise Invalid
        decoded = {k: json.loads(v) for k, v in metadata.items() if not k.startswith("zoo.")}
    except (Invalid, ValueError, RecursionError):
        return None
    return tensors, decoded


def summary_of_ours(result):
    tensors, metadata = result
    codes = {np.dtype(v): k for k, v in CODES.items()}
    return ({name: (codes[a.dtype], a.shape, a.tobytes()) for name, a in tensors.items()},
            json.dumps(metadata))


def summary_of_reference(result):
    tensors, metadata = result
    return tensors, json.dumps(metadata)


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

def ours(buf):
    try:
        return st.parse_checkpoint_bytes(buf)
    except CheckpointError:
        return None


def traced(load, *args):
    """``load(*args)`` (or the CheckpointError it raised) and the peak bytes it allocated."""
    tracemalloc.start()
    try:
        try:
            result = load(*args)
        except CheckpointError as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_fuzzed_checkpoints_load_exactly_or_raise_checkpoint_error():
    rng = np.random.default_rng(SEED)
    bases = base_files()
    originals = [summary_of_reference(reference_load(b)) for b in bases]
    counts = {"raw": [0, 0], "structural": [0, 0]}
    worst_extra = 0
    start = time.perf_counter()
    for i in range(5000):
        which = i % len(bases)
        family = "raw" if i % 2 else "structural"
        mutate = raw_mutation if family == "raw" else structural_mutation
        buf = mutate(bases[which], rng)
        expected = reference_load(buf)
        result, extra = traced(st.parse_checkpoint_bytes, buf)
        worst_extra = max(worst_extra, extra)
        assert extra <= 3 * len(buf) + 32 * 1024, (family, i, len(buf), extra)
        if expected is None:
            assert isinstance(result, CheckpointError), (family, i, buf)
            counts[family][0] += 1
            continue
        assert not isinstance(result, CheckpointError), (family, i, buf, result)
        assert summary_of_ours(result) == summary_of_reference(expected), (family, i)
        if family == "raw":  # no re-signing: what loads is the original, bit for bit
            assert summary_of_reference(expected) == originals[which], (family, i)
        # Whatever zoo accepts, the safetensors package reads the same way.
        theirs = stnp.load(buf)
        assert {k: v.tobytes() for k, v in theirs.items()} == \
            {k: v.tobytes() for k, v in result.tensors.items()}
        counts[family][1] += 1
    elapsed = time.perf_counter() - start
    # Both outcomes happen in both families, so neither the oracle nor the parser is vacuous.
    assert all(rejected > 100 and loaded > 0 for rejected, loaded in counts.values()), counts
    assert counts["structural"][1] > 100, counts
    assert elapsed < 30, elapsed
    print(f"fuzz: {counts} (rejected, loaded) in {elapsed:.2f}s; largest allocation while "
          f"parsing {worst_extra} bytes (files of {min(map(len, bases))}-"
          f"{max(map(len, bases))} bytes)")


def test_fuzzed_files_on_disk(tmp_path):
    """The file reader agrees with the bytes reader and allocates about the file size."""
    rng = np.random.default_rng(SEED + 1)
    bases = base_files()
    path = tmp_path / "fuzz.ckpt"
    for i in range(300):
        mutate = raw_mutation if i % 2 else structural_mutation
        buf = mutate(bases[i % len(bases)], rng)
        path.write_bytes(buf)
        result, extra = traced(st.read_checkpoint, path)
        assert extra <= 3 * len(buf) + 32 * 1024, (i, len(buf), extra)
        from_bytes = ours(buf)
        if isinstance(result, CheckpointError):
            assert from_bytes is None and str(result).startswith(f"checkpoint {path}: "), i
        else:
            assert summary_of_ours(result) == summary_of_ours(from_bytes), i


def test_hostile_header_lengths_allocate_nothing(tmp_path):
    path = tmp_path / "liar.ckpt"
    for claimed in [2**64 - 1, 2**63, 2**40, MAX_HEADER + 1, 10**9]:
        buf = claimed.to_bytes(8, "little") + b'{"a":' * 20
        path.write_bytes(buf)
        for load, arg in [(st.read_checkpoint, path), (st.parse_checkpoint_bytes, buf),
                          (st.read_metadata, path)]:
            result, extra = traced(load, arg)
            assert isinstance(result, CheckpointError) and extra < 16 * 1024


def test_large_hostile_headers_cost_a_bounded_multiple_of_their_size():
    """Headers near the worst case for the parser: many tiny tensors, many metadata keys,
    deep nesting. Each is refused or loaded; the memory stays a small multiple of the file."""
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
    for buf in cases:
        start = time.perf_counter()
        _, extra = traced(st.parse_safetensors_bytes, buf)
        elapsed = time.perf_counter() - start
        print(f"hostile header of {len(buf)} bytes: {extra / len(buf):.1f}x, {elapsed:.2f}s")
        assert extra <= 12 * len(buf), (len(buf), extra)
        assert elapsed < 5
