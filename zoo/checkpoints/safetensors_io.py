"""Read and write tensor files in the safetensors layout, and zoo checkpoints on top of it.

The layout (https://github.com/huggingface/safetensors#format) is: an 8-byte little-endian
unsigned header length ``N``; ``N`` bytes of UTF-8 JSON mapping each tensor name to
``{"dtype", "shape", "data_offsets": [begin, end]}`` plus an optional ``"__metadata__"`` map of
string to string; then the data area, the raw little-endian bytes of every tensor, indexed
entirely by the offsets (relative to the start of the data area) with no gaps or overlaps.
Files written here are readable by the ``safetensors`` package and other safetensors tools,
and files they write are readable here. Nothing here unpickles or imports anything: a file is
pure data.

A *zoo checkpoint* is such a file whose metadata also holds, under reserved keys (every key
starting with ``zoo.`` is reserved for this module):

- ``zoo.format``: ``"zoo-checkpoint-1"``, the version of these rules;
- ``zoo.sha256``: the SHA-256 of the file's *content*, in lowercase hex: of the line
  ``zoo-checkpoint-1``, a newline, the compact ASCII JSON
  ``{"metadata": [[key, value], ...], "tensors": [[name, dtype, shape], ...]}`` (both sorted by
  key or name; the metadata without ``zoo.sha256`` itself), a newline, then each tensor's bytes
  in name order. The hash covers the metadata and does not depend on where the tensors sit in
  the file, so a checkpoint re-saved by another safetensors tool with the same metadata still
  verifies. It detects corruption; it is not a signature.

Every other metadata value of a checkpoint is a JSON document (``write_checkpoint`` encodes it,
``read_checkpoint`` decodes it): floats round-trip exactly, ``inf`` and ``nan`` are written as
``Infinity`` and ``NaN`` (as Python's ``json`` does), and tuples come back as lists.

Loading validates everything before allocating the data: the file is a regular file, the header
length is within a cap and the file, the header is a JSON object of the expected shape (parsed
by ``zoo.checkpoints.safetensors_header``, which never builds more than the header describes),
every dtype
is in the allow-list ``DTYPES``, every shape's byte count matches its offsets, the offsets tile
the data area exactly, metadata values are strings, and for checkpoints the hash matches.
Anything wrong raises ``zoo.errors.CheckpointError`` with one line naming the file and the
problem. The data area is read into one buffer of exactly its size and the arrays are views
into it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import stat
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from zoo.atomic import atomic_open
from zoo.checkpoints.safetensors_header import DTYPES, parse_header
from zoo.checkpoints.safetensors_header import METADATA_KEY as _METADATA
from zoo.errors import CheckpointError

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "DTYPES",
    "FORMAT",
    "FORMAT_KEY",
    "HASH_KEY",
    "TensorFile",
    "checkpoint_bytes",
    "parse_checkpoint_bytes",
    "parse_safetensors_bytes",
    "read_checkpoint",
    "read_metadata",
    "read_safetensors",
    "safetensors_bytes",
    "write_checkpoint",
    "write_safetensors",
]

FORMAT_KEY = "zoo.format"
FORMAT = "zoo-checkpoint-1"
HASH_KEY = "zoo.sha256"
RESERVED_PREFIX = "zoo."

# Generous for zoo (a checkpoint header is a few KiB) yet a bounded cost for a hostile file.
DEFAULT_MAX_HEADER_BYTES = 16 * 1024 * 1024

_CODES = {(dt.kind, dt.itemsize): code for code, dt in DTYPES.items()}
_MAX_METADATA_ITEMS = 1 << 20  # bounds the objects json.loads may build from the metadata

# What a file that is not in the safetensors layout usually is, by its first bytes.
_FOREIGN_MAGIC = [
    (b"\x80\x02", "a Python pickle"), (b"\x80\x03", "a Python pickle"),
    (b"\x80\x04", "a Python pickle"), (b"\x80\x05", "a Python pickle"),
    (b"PK\x03\x04", "a zip archive (such as a PyTorch .pt file or a numpy .npz)"),
    (b"\x93NUMPY", "a numpy .npy file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (such as a Keras .h5 file)"),
]


class TensorFile(NamedTuple):
    """What a reader returns: tensors by name and the metadata."""

    tensors: dict[str, np.ndarray]
    metadata: dict


# -- writing -----------------------------------------------------------------------------------

def write_safetensors(path, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` and string ``metadata`` to ``path`` in the safetensors layout, atomically.

    Args:
        path: the file to create or replace. It is replaced only once the new file is complete
            and on disk; on any failure the old file is intact and no temporary file remains.
        tensors: names to arrays of a dtype in ``DTYPES`` (any strides and byte order).
        metadata: optional string-to-string map stored as ``__metadata__``.
    """
    where = _where(path)
    items = _prepare_tensors(tensors, where)
    meta = _check_string_metadata(metadata or {}, where)
    _atomic_write(path, where, _layout(items, meta, where))


def write_checkpoint(path, tensors: Mapping[str, np.ndarray],
                     metadata: Mapping[str, object]) -> None:
    """Write a zoo checkpoint: tensors plus JSON metadata, with format marker and content hash.

    Args:
        path: the file to create or replace, atomically (see ``write_safetensors``).
        tensors: names to arrays of a dtype in ``DTYPES``.
        metadata: keys (not starting with ``zoo.``) to JSON values: dicts with string keys,
            lists, tuples, strings, ints, floats, bools and None.
    """
    where = _where(path)
    _atomic_write(path, where, _checkpoint_layout(tensors, metadata, where))


def safetensors_bytes(tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> bytes:
    """The bytes ``write_safetensors`` would write."""
    items = _prepare_tensors(tensors, "tensor file")
    meta = _check_string_metadata(metadata or {}, "tensor file")
    return b"".join(_layout(items, meta, "tensor file"))


def checkpoint_bytes(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, object]) -> bytes:
    """The bytes ``write_checkpoint`` would write."""
    return b"".join(_checkpoint_layout(tensors, metadata, "checkpoint"))


def _checkpoint_layout(tensors, metadata, where) -> list:
    items = _prepare_tensors(tensors, where)
    if not isinstance(metadata, Mapping):
        raise CheckpointError(f"{where}: metadata must be a dict; "
                              f"received {type(metadata).__name__}")
    meta = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or key.startswith(RESERVED_PREFIX) or key == "":
            raise CheckpointError(f"{where}: metadata keys must be non-empty strings not starting "
                                  f"with {RESERVED_PREFIX!r}; received {key!r}")
        _check_json_value(value, f"{where}: metadata {key!r}")
        meta[key] = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    meta[FORMAT_KEY] = FORMAT
    meta[HASH_KEY] = _content_digest(
        [(name, code, arr.shape, _raw(arr)) for name, code, arr in items], meta)
    return _layout(items, meta, where)


def _prepare_tensors(tensors, where) -> list[tuple[str, str, np.ndarray]]:
    """Validate tensors; return (name, code, C-contiguous little-endian array) in file order."""
    if not isinstance(tensors, Mapping):
        raise CheckpointError(f"{where}: tensors must be a dict of name to array; "
                              f"received {type(tensors).__name__}")
    items = []
    for name, value in tensors.items():
        if not isinstance(name, str) or name in ("", _METADATA):
            raise CheckpointError(f"{where}: tensor names must be non-empty strings other than "
                                  f"{_METADATA!r}; received {name!r}")
        if not isinstance(value, (np.ndarray, np.generic)):
            raise CheckpointError(f"{where}: tensor {name!r} must be a numpy array; "
                                  f"received {type(value).__name__}")
        arr = np.asarray(value)
        code = _CODES.get((arr.dtype.kind, arr.dtype.itemsize))
        if code is None or arr.dtype.fields is not None:
            raise CheckpointError(f"{where}: tensor {name!r} has dtype {arr.dtype}, which a "
                                  f"checkpoint cannot hold; expected one of bool, int8-int64, "
                                  f"uint8-uint64, float16, float32, float64")
        if code == "BOOL":
            arr = arr.view(np.uint8) != 0  # a bool array viewed from bytes may hold 2..255
        items.append((name, code, arr.astype(DTYPES[code], order="C", copy=False)))
    # Larger items first keeps every tensor aligned to its itemsize (the data area starts at a
    # multiple of 8), so readers get aligned views; the safetensors package orders them so too.
    items.sort(key=lambda item: (-item[2].itemsize, item[0]))
    return items


def _check_string_metadata(metadata, where) -> dict[str, str]:
    if not isinstance(metadata, Mapping):
        raise CheckpointError(f"{where}: metadata must be a dict; "
                              f"received {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise CheckpointError(f"{where}: metadata must map strings to strings; received "
                                  f"{key!r}: {type(value).__name__}")
    return dict(metadata)


def _check_json_value(value, where, depth=0) -> None:
    """Refuse what ``json.dumps`` would silently change (non-string keys) or cannot encode."""
    if depth > 100:
        raise CheckpointError(f"{where}: nested more than 100 levels deep")
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_json_value(item, where, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CheckpointError(f"{where}: dict keys must be strings; received {key!r}")
            _check_json_value(item, where, depth + 1)
        return
    raise CheckpointError(f"{where}: {type(value).__module__}.{type(value).__name__} is not a "
                          f"JSON value; expected dict, list, str, int, float, bool or None")


def _raw(arr: np.ndarray) -> np.ndarray:
    """The bytes of a C-contiguous array, as a flat uint8 view (no copy)."""
    return arr.reshape(-1).view(np.uint8)


def _layout(items, metadata: dict[str, str], where) -> list:
    """The chunks of a file: length prefix and padded header, then each tensor's bytes."""
    header: dict = {_METADATA: metadata} if metadata else {}
    offset = 0
    for name, code, arr in items:
        header[name] = {"dtype": code, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    text = json.dumps(header, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    text += b" " * (-len(text) % 8)  # pad so the data area starts 8-aligned, as the spec advises
    if len(text) > DEFAULT_MAX_HEADER_BYTES:
        raise CheckpointError(f"{where}: the header would be {len(text)} bytes, over the "
                              f"{DEFAULT_MAX_HEADER_BYTES}-byte limit readers apply; store large "
                              f"values as tensors, not metadata")
    return [len(text).to_bytes(8, "little") + text] + [_raw(arr) for _, _, arr in items]


def _atomic_write(path, where, chunks) -> None:
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise CheckpointError(f"{where}: cannot write: the folder {folder} does not exist")
    if os.path.isdir(target):
        raise CheckpointError(f"{where}: cannot write: it is a folder")
    try:
        with atomic_open(target) as f:
            for chunk in chunks:
                f.write(chunk)
    except OSError as exc:
        raise CheckpointError(f"{where}: cannot write: {exc.strerror or exc}") from exc


# -- reading -----------------------------------------------------------------------------------

def read_safetensors(path, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> TensorFile:
    """Read any safetensors file: tensors (views into one writable buffer) and string metadata."""
    return _read_file(path, max_header_bytes, checkpoint=False)


def read_checkpoint(path, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> TensorFile:
    """Read a zoo checkpoint: verify its format marker and hash, decode its JSON metadata.

    Returns ``(tensors, metadata)``: the arrays are views into one writable buffer the size of
    the data area; ``metadata`` is what ``write_checkpoint`` was given (tuples as lists).
    """
    return _read_file(path, max_header_bytes, checkpoint=True)


def read_metadata(path, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> dict:
    """Read only the header of a zoo checkpoint and return its decoded metadata.

    The header is fully validated against the file size, but the content hash is not checked
    (that needs the data); ``read_checkpoint`` checks it.
    """
    where = _where(path)
    with _open_regular(path, where) as f:
        size = os.fstat(f.fileno()).st_size
        header_len = _header_length(_read_exact(f, min(size, 8), where), size, max_header_bytes,
                                    where)
        _, metadata = parse_header(_read_exact(f, header_len, where), size - 8 - header_len,
                                   where)
    return _decode_checkpoint_metadata(metadata, where)


def parse_safetensors_bytes(buf, *, name: str = "<bytes>",
                            max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> TensorFile:
    """``read_safetensors`` for a file already in memory; the arrays are views into ``buf``."""
    return _parse_buffer(buf, name, max_header_bytes, checkpoint=False)


def parse_checkpoint_bytes(buf, *, name: str = "<bytes>",
                           max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> TensorFile:
    """``read_checkpoint`` for a file already in memory; the arrays are views into ``buf``."""
    return _parse_buffer(buf, name, max_header_bytes, checkpoint=True)


def _where(path) -> str:
    return f"checkpoint {os.fspath(path)}"


def _read_file(path, max_header_bytes, checkpoint) -> TensorFile:
    where = _where(path)
    with _open_regular(path, where) as f:
        size = os.fstat(f.fileno()).st_size
        header_len = _header_length(_read_exact(f, min(size, 8), where), size, max_header_bytes,
                                    where)
        data_len = size - 8 - header_len
        entries, metadata = parse_header(_read_exact(f, header_len, where), data_len, where)
        # Only now, with every entry checked against the file size, is the data allocated.
        data = np.empty(data_len, dtype=np.uint8)
        _read_exact(f, data_len, where, into=data)
    return _finish(data, entries, metadata, where, checkpoint)


def _parse_buffer(buf, name, max_header_bytes, checkpoint) -> TensorFile:
    where = f"checkpoint {name}"
    view = memoryview(buf).cast("B")
    header_len = _header_length(view[:8], len(view), max_header_bytes, where)
    entries, metadata = parse_header(view[8:8 + header_len], len(view) - 8 - header_len, where)
    return _finish(view[8 + header_len:], entries, metadata, where, checkpoint)


class _open_regular:
    """Open ``path`` for reading, refusing anything but a regular file (without blocking on a
    FIFO: the file is opened non-blocking and checked before any read)."""

    def __init__(self, path, where):
        flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise CheckpointError(f"{where}: no such file") from None
        except OSError as exc:
            raise CheckpointError(f"{where}: cannot open: {exc.strerror or exc}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise CheckpointError(f"{where}: not a regular file")
        self.file = os.fdopen(fd, "rb", buffering=0)

    def __enter__(self):
        return self.file

    def __exit__(self, *exc):
        self.file.close()


def _read_exact(f, n: int, where, into: np.ndarray | None = None):
    buf = bytearray(n) if into is None else into
    view = memoryview(buf).cast("B")
    done = 0
    while done < n:
        try:
            got = f.readinto(view[done:])
        except OSError as exc:
            raise CheckpointError(f"{where}: cannot read: {exc.strerror or exc}") from None
        if not got:
            raise CheckpointError(f"{where}: the file was truncated while being read")
        done += got
    return buf


def _header_length(prefix, size: int, max_header_bytes: int, where) -> int:
    """Check the first 8 bytes against the file size and the cap; return the header length."""
    prefix = bytes(prefix)
    n = int.from_bytes(prefix, "little")
    if size < 8 or n > size - 8:
        # Only an implausible length gets a name for what the file is: a valid header length
        # can begin with the same bytes as a magic number (640 is b"\x80\x02...").
        for magic, kind in _FOREIGN_MAGIC:
            if prefix.startswith(magic):
                raise CheckpointError(f"{where}: this is {kind}, not a zoo checkpoint (zoo "
                                      f"never loads pickles or code, only the safetensors layout)")
    if size < 8:
        raise CheckpointError(f"{where}: not a zoo checkpoint: the file has {size} bytes, fewer "
                              f"than the 8-byte header length of the safetensors layout")
    if n > size - 8:
        raise CheckpointError(f"{where}: not a zoo checkpoint (safetensors layout): header length "
                              f"{n} exceeds the file size ({size} bytes)")
    if n > max_header_bytes:
        raise CheckpointError(f"{where}: header length {n} exceeds the limit of "
                              f"{max_header_bytes} bytes")
    if n < 2:
        raise CheckpointError(f"{where}: not a zoo checkpoint (safetensors layout): header "
                              f"length {n} is too small for a JSON object")
    return n


def _finish(data, entries, metadata, where, checkpoint) -> TensorFile:
    data = memoryview(data).cast("B")
    if checkpoint:
        _verify(entries, data, metadata, where)
        metadata = _decode_checkpoint_metadata(metadata, where)
    tensors = {}
    for name, code, shape, begin, _end in entries:
        dtype = DTYPES[code]
        arr = np.ndarray(shape, dtype=dtype, buffer=data, offset=begin)  # a view, one object
        if code == "BOOL" and arr.size and arr.view(np.uint8).max() > 1:
            raise CheckpointError(f"{where}: tensor {name!r}: BOOL bytes must be 0 or 1")
        if not arr.flags.aligned or not dtype.isnative:
            arr = arr.astype(dtype.newbyteorder("="))  # only for foreign files or big-endian hosts
        tensors[name] = arr
    return TensorFile(tensors, metadata)


# -- checkpoints: format marker, hash, JSON metadata ---------------------------------------------

def _content_digest(items, metadata: Mapping[str, str]) -> str:
    """SHA-256 of the content (see the module docstring); items are (name, code, shape, bytes)."""
    items = sorted(items, key=lambda item: item[0])
    index = {
        "metadata": sorted([k, v] for k, v in metadata.items() if k != HASH_KEY),
        "tensors": [[name, code, list(shape)] for name, code, shape, _ in items],
    }
    digest = hashlib.sha256(f"{FORMAT}\n".encode())
    digest.update(json.dumps(index, ensure_ascii=True, separators=(",", ":")).encode("ascii"))
    digest.update(b"\n")
    for *_, raw in items:
        digest.update(raw)
    return digest.hexdigest()


def _check_marker(metadata: Mapping[str, str], where) -> None:
    fmt = metadata.get(FORMAT_KEY)
    if fmt is None:
        raise CheckpointError(f"{where}: a safetensors file but not a zoo checkpoint (its "
                              f"metadata has no {FORMAT_KEY!r})")
    if fmt != FORMAT:
        raise CheckpointError(f"{where}: checkpoint format {fmt!r} is not supported; this zoo "
                              f"reads {FORMAT!r}")
    expected = metadata.get(HASH_KEY)
    if expected is None or not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise CheckpointError(f"{where}: the metadata has no valid {HASH_KEY!r} (64 lowercase "
                              f"hex digits)")
    unknown = sorted(k for k in metadata if k.startswith(RESERVED_PREFIX)
                     and k not in (FORMAT_KEY, HASH_KEY))
    if unknown:
        raise CheckpointError(f"{where}: unknown reserved metadata keys {unknown}")


def _verify(entries, data: memoryview, metadata: dict[str, str], where) -> None:
    _check_marker(metadata, where)
    actual = _content_digest(
        [(name, code, shape, data[begin:end]) for name, code, shape, begin, end in entries],
        metadata)
    expected = metadata[HASH_KEY]
    if not hmac.compare_digest(actual, expected):
        raise CheckpointError(f"{where}: the content hash does not match (the file is corrupted "
                              f"or was modified): expected sha256 {expected[:16]}..., computed "
                              f"{actual[:16]}...")


def _decode_checkpoint_metadata(metadata: dict[str, str], where) -> dict:
    _check_marker(metadata, where)
    values = {k: v for k, v in metadata.items() if not k.startswith(RESERVED_PREFIX)}
    # Bound what json.loads may build: in a JSON document every value but the first follows a
    # ',' or opens with '[' or '{' (an over-count, as strings may hold these characters too).
    items = sum(v.count(",") + v.count("[") + v.count("{") for v in values.values())
    if items > _MAX_METADATA_ITEMS:
        raise CheckpointError(f"{where}: the metadata holds more than {_MAX_METADATA_ITEMS} JSON "
                              f"values; large data belongs in tensors")
    out = {}
    for key, value in values.items():
        try:
            out[key] = json.loads(value)
        except (ValueError, RecursionError):
            raise CheckpointError(f"{where}: metadata {key!r} is not valid JSON") from None
    return out

