"""The checkpoint file: safetensors (from the ``safetensors`` package) plus zoo's metadata,
a content hash and an atomic write.

A checkpoint is a plain safetensors file (https://github.com/huggingface/safetensors): any
safetensors tool reads its tensors, and nothing in it is ever unpickled or imported. The
``safetensors`` package writes it (``safetensors.numpy.save``) and reads it
(``safe_open(..., framework="np")``), and validates the layout: header length, header JSON,
shapes against offsets, offsets tiling the data area. zoo adds, in the header's
``__metadata__`` (a map of string to string):

- ``zoo.format``: ``"zoo-checkpoint-1"``, the version of these rules;
- ``zoo.sha256``: the SHA-256 of the *content*, in lowercase hex: of the line
  ``zoo-checkpoint-1``, a newline, the compact ASCII JSON
  ``{"metadata": [[key, value], ...], "tensors": [[name, dtype, shape], ...]}`` (both sorted by
  key or name; the metadata without ``zoo.sha256`` itself; dtypes as safetensors spells them,
  e.g. ``F32``), a newline, then each tensor's bytes in name order. It covers the metadata and
  does not depend on where tensors sit in the file, so a file re-saved by another safetensors
  tool with the same metadata still verifies. It detects corruption; it is not a signature.
- every other key (not starting with ``zoo.``, which is reserved): a JSON document.

Before the library sees a file, zoo checks what the library does not: that it is a regular
file (``safe_open`` blocks forever on a FIFO), that its header length fits zoo's cap
(``MAX_HEADER_BYTES``, far below the library's 100 MB) and the file, and names what a foreign
file is (a pickle, a zip, an ``.npy``). The file checked is the file read: the library opens
it through the checked descriptor (``/proc/self/fd`` where there is one). After reading, zoo
checks the format marker and decodes its metadata JSON before building any tensor, allows
only the dtypes of ``DTYPES``, refuses BOOL bytes other than 0 and 1, and verifies the hash.
Anything wrong is one ``CheckpointError`` line naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import stat
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from zoo.atomic import atomic_open
from zoo.errors import CheckpointError

FORMAT_KEY = "zoo.format"
FORMAT = "zoo-checkpoint-1"
HASH_KEY = "zoo.sha256"
RESERVED_PREFIX = "zoo."

# Generous for zoo (a checkpoint header is a few KiB) yet a bounded cost for a hostile file.
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_METADATA_ITEMS = 1 << 20  # bounds the objects json.loads may build from the metadata

# safetensors dtype code -> little-endian numpy dtype: what a checkpoint may hold.
DTYPES: dict[str, np.dtype] = {
    code: np.dtype(spec)
    for code, spec in [
        ("BOOL", "|b1"), ("U8", "|u1"), ("I8", "|i1"), ("U16", "<u2"), ("I16", "<i2"),
        ("F16", "<f2"), ("U32", "<u4"), ("I32", "<i4"), ("F32", "<f4"), ("U64", "<u8"),
        ("I64", "<i8"), ("F64", "<f8"),
    ]
}
_CODES = {(dt.kind, dt.itemsize): code for code, dt in DTYPES.items()}

# What a file that is not in the safetensors layout usually is, by its first bytes.
_FOREIGN_MAGIC = [
    (b"\x80\x02", "a Python pickle"), (b"\x80\x03", "a Python pickle"),
    (b"\x80\x04", "a Python pickle"), (b"\x80\x05", "a Python pickle"),
    (b"PK\x03\x04", "a zip archive (such as a PyTorch .pt file or a numpy .npz)"),
    (b"\x93NUMPY", "a numpy .npy file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (such as a Keras .h5 file)"),
]


class TensorFile(NamedTuple):
    """What ``read_checkpoint`` returns: tensors by name and the decoded metadata."""

    tensors: dict[str, np.ndarray]
    metadata: dict


def _where(path) -> str:
    return f"checkpoint {os.fspath(path)}"


# -- writing -----------------------------------------------------------------------------------

def checkpoint_bytes(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, object],
                     where: str = "checkpoint") -> bytes:
    """The bytes of a checkpoint: ``tensors`` plus JSON ``metadata``, marker and hash.

    Args:
        tensors: names to arrays of a dtype in ``DTYPES`` (any strides and byte order).
        metadata: keys (not starting with ``zoo.``) to JSON values: dicts with string keys,
            lists, tuples, strings, ints, floats, bools and None. Floats round-trip exactly;
            ``inf`` and ``nan`` are written as ``Infinity`` and ``NaN`` (as Python's ``json``
            does); tuples come back as lists.
    """
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
    meta[HASH_KEY] = _content_digest(items, meta)
    blob = safetensors.numpy.save(items, metadata=meta)
    header = int.from_bytes(blob[:8], "little")
    if header > MAX_HEADER_BYTES:
        raise CheckpointError(f"{where}: the header would be {header} bytes, over the "
                              f"{MAX_HEADER_BYTES}-byte limit zoo reads; store large values as "
                              f"tensors, not metadata")
    return blob


def write_checkpoint(path, tensors: Mapping[str, np.ndarray],
                     metadata: Mapping[str, object]) -> None:
    """Write ``checkpoint_bytes(tensors, metadata)`` to ``path`` atomically: the file is
    replaced only once the new one is complete and on disk; on any failure the old file is
    intact and no temporary file remains."""
    where = _where(path)
    blob = checkpoint_bytes(tensors, metadata, where)
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise CheckpointError(f"{where}: cannot write: the folder {folder} does not exist")
    if os.path.isdir(target):
        raise CheckpointError(f"{where}: cannot write: it is a folder")
    try:
        with atomic_open(target) as f:
            f.write(blob)
    except OSError as exc:
        raise CheckpointError(f"{where}: cannot write: {exc.strerror or exc}") from exc


def _prepare_tensors(tensors, where) -> dict[str, np.ndarray]:
    """Validate tensors; return C-contiguous little-endian arrays by name."""
    if not isinstance(tensors, Mapping):
        raise CheckpointError(f"{where}: tensors must be a dict of name to array; "
                              f"received {type(tensors).__name__}")
    out = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or name in ("", "__metadata__"):
            raise CheckpointError(f"{where}: tensor names must be non-empty strings other than "
                                  f"'__metadata__'; received {name!r}")
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
        # astype, not ascontiguousarray, which would turn a 0-d array into shape (1,).
        out[name] = arr.astype(DTYPES[code], order="C", copy=False)
    return out


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


def _content_digest(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> str:
    """SHA-256 of the content (see the module docstring)."""
    names = sorted(tensors)
    index = {
        "metadata": sorted([k, v] for k, v in metadata.items() if k != HASH_KEY),
        "tensors": [[n, _CODES[(tensors[n].dtype.kind, tensors[n].dtype.itemsize)],
                     list(tensors[n].shape)] for n in names],
    }
    digest = hashlib.sha256(f"{FORMAT}\n".encode())
    digest.update(json.dumps(index, ensure_ascii=True, separators=(",", ":")).encode("ascii"))
    digest.update(b"\n")
    for name in names:
        digest.update(tensors[name].reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


# -- reading -----------------------------------------------------------------------------------

def read_checkpoint(path, *, max_header_bytes: int = MAX_HEADER_BYTES) -> TensorFile:
    """Read a checkpoint: returns ``(tensors, metadata)``, the arrays (writable, owning their
    memory) by name and the decoded metadata (what ``write_checkpoint`` was given, tuples as
    lists). The format marker, dtypes, layout and content hash are all checked."""
    where = _where(path)
    with _opened(path, where, max_header_bytes) as f:
        metadata = _decode_metadata(_library(f.metadata, where), where)
        tensors = {}
        for name in _library(f.keys, where):
            code = _library(lambda n=name: f.get_slice(n).get_dtype(), where)
            if code not in DTYPES:
                raise CheckpointError(f"{where}: tensor {name!r} has dtype {code!r}; expected one "
                                      f"of {', '.join(sorted(DTYPES))}")
            arr = _library(lambda n=name: f.get_tensor(n), where)
            if code == "BOOL" and arr.size and arr.view(np.uint8).max() > 1:
                raise CheckpointError(f"{where}: tensor {name!r}: BOOL bytes must be 0 or 1")
            tensors[name] = arr
        raw = _library(f.metadata, where)
    actual, expected = _content_digest(tensors, raw), raw[HASH_KEY]
    if not hmac.compare_digest(actual, expected):
        raise CheckpointError(f"{where}: the content hash does not match (the file is corrupted "
                              f"or was modified): expected sha256 {expected[:16]}..., computed "
                              f"{actual[:16]}...")
    return TensorFile(tensors, metadata)


def read_metadata(path, *, max_header_bytes: int = MAX_HEADER_BYTES) -> dict:
    """Only the decoded metadata of a checkpoint. The header is validated; the content hash is
    not (that needs the data: ``read_checkpoint`` checks it)."""
    where = _where(path)
    with _opened(path, where, max_header_bytes) as f:
        return _decode_metadata(_library(f.metadata, where), where)


def _library(call, where):
    """``call()`` into safetensors, its errors (and numpy's, for shapes it cannot hold) as one
    CheckpointError line."""
    try:
        return call()
    except (SafetensorError, ValueError, TypeError, OverflowError, MemoryError) as exc:
        text = " ".join(str(exc).split())
        raise CheckpointError(f"{where}: not a valid safetensors file: {text}") from None
    except OSError as exc:
        raise CheckpointError(f"{where}: cannot read: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _opened(path, where, max_header_bytes):
    """``safe_open`` on ``path`` once zoo's own pre-checks passed (see the module docstring)."""
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CheckpointError(f"{where}: no such file") from None
    except OSError as exc:
        raise CheckpointError(f"{where}: cannot open: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointError(f"{where}: not a regular file")
        try:
            prefix = os.pread(fd, 8, 0) if hasattr(os, "pread") else os.read(fd, 8)
        except OSError as exc:
            raise CheckpointError(f"{where}: cannot read: {exc.strerror or exc}") from None
        _check_header_length(prefix, info.st_size, max_header_bytes, where)
        proc = f"/proc/self/fd/{fd}"
        source = proc if os.path.exists(proc) else os.fspath(path)
        handle = _library(lambda: safe_open(source, framework="np"), where)
        with handle as f:
            yield f
    finally:
        os.close(fd)


def _check_header_length(prefix: bytes, size: int, max_header_bytes: int, where) -> None:
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
                              f"{n} exceeds the file size ({size} bytes; is it truncated?)")
    if n > max_header_bytes:
        raise CheckpointError(f"{where}: header length {n} exceeds the limit of "
                              f"{max_header_bytes} bytes")


def _decode_metadata(metadata, where) -> dict:
    """Check the format marker and hash field, then decode zoo's JSON values (bounded)."""
    metadata = metadata or {}
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
    values = {k: v for k, v in metadata.items() if not k.startswith(RESERVED_PREFIX)}
    # Bound what json.loads may build: in a JSON document every value but the first follows a
    # ',' or opens with '[' or '{' (an over-count, as strings may hold these characters too).
    items = sum(v.count(",") + v.count("[") + v.count("{") for v in values.values())
    if items > MAX_METADATA_ITEMS:
        raise CheckpointError(f"{where}: the metadata holds more than {MAX_METADATA_ITEMS} JSON "
                              f"values; large data belongs in tensors")
    out = {}
    for key, value in values.items():
        try:
            out[key] = json.loads(value)
        except (ValueError, RecursionError):
            raise CheckpointError(f"{where}: metadata {key!r} is not valid JSON") from None
    return out
