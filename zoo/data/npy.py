"""``.npy`` files and ``.npz`` archives read with every size claim checked before allocating.

A ``.npy`` header states a shape and a dtype; numpy allocates ``shape x itemsize`` bytes
before reading, so a 1 kB file claiming 512 GiB would be allocated. Here the claim is compared
with what is present first:

- a ``.npy`` file must hold at least the claimed bytes after its header;
- an ``.npz`` member must be stored or deflated (what ``numpy.savez`` and
  ``savez_compressed`` write), its zip entry's uncompressed size must equal header plus claim,
  and that size must be possible: a stored member's bytes lie inside the archive, and deflate
  cannot expand data more than 1032-fold, so a deflated member may claim at most 1032 times its
  compressed size. Decompression reads at most the claimed bytes, then the CRC is checked.

Object (pickled) dtypes are refused from the header alone; nothing is ever unpickled. Every
problem is one error line naming the file, what was expected and what was received.
"""

from __future__ import annotations

import math
import zipfile
import zlib

import numpy as np
from numpy.lib import format as npy_format

from zoo.errors import DataError
from zoo.userfile import file_size, human_bytes, open_regular, read_exact, shown

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
# zlib's deflate format cannot expand data by more than 1032:1 (RFC 1951 block limits);
# a zip entry claiming more than that of its compressed size is lying.
DEFLATE_MAX_RATIO = 1032
# dtype kinds zoo reads: booleans, integers, floats, and strings (class names, kind, task)
READABLE_KINDS = "biufUS"


def read_npy(path, where: str | None = None) -> np.ndarray:
    """The array in the ``.npy`` file ``path``, after checking its header against the file.

    ``where`` starts every message (default: the path), e.g. ``"input x.npy"``. A file that
    is not ``.npy`` is named from its first bytes (an ``.npz`` archive, a safetensors
    checkpoint, a pickle)."""
    where = where or shown(path)
    with open_regular(path, where) as f:
        size = file_size(f)
        start = f.read(16)
        if not start.startswith(NPY_MAGIC):
            raise DataError(f"{where}: {_not_npy(start)}")
        f.seek(0)
        shape, order, dtype, claim = _header(f, where)
        present = size - f.tell()
        if present != claim:
            raise DataError(f"{where}: its header claims {claim:,} bytes of data ({dtype} array "
                            f"of shape {tuple(shape)}); the file holds {present:,} bytes")
        data = read_exact(f, claim, where)
    return _array(data, shape, order, dtype, where)


def _not_npy(start: bytes) -> str:
    """What a file that is not ``.npy`` is, from its first bytes."""
    if start.startswith(ZIP_MAGIC):
        return "is an .npz archive (a zip file); expected a .npy file holding one array"
    if len(start) >= 10 and start[8:10] == b'{"':
        return ("is a safetensors file (a zoo checkpoint?); give the checkpoint first and a "
                ".npy file of inputs second")
    if len(start) > 1 and start[0] == 0x80 and 2 <= start[1] <= 5:  # pickle protocols 2-5
        return "holds pickled Python objects, which zoo never loads; expected a .npy array"
    return "not a .npy file (no NUMPY header)"


def _header(f, where):
    """Shape, order, dtype and claimed data bytes from a .npy header (read from ``f``)."""
    try:
        version = npy_format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npy_format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001
        # numpy's header parser reads a Python literal (at most 10000 characters) through
        # tokenize and ast: on hostile text it raises ValueError, SyntaxError, TokenError,
        # TypeError... Whatever it raises, the header is malformed.
        raise DataError(f"{where}: malformed .npy header ({_first_line(exc)})") from None
    if dtype.hasobject:
        raise DataError(f"{where}: has object dtype (pickled Python objects), which zoo "
                        f"never unpickles; expected a numeric array")
    if dtype.kind not in READABLE_KINDS or dtype.subdtype is not None or dtype.itemsize == 0:
        raise DataError(f"{where}: dtype {dtype} is not readable; expected numbers (or "
                        f"strings for class names)")
    if any(d < 0 for d in shape):
        raise DataError(f"{where}: malformed .npy header (negative dimension in {shape})")
    claim = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    return shape, "F" if fortran else "C", dtype, claim


def _claim_text(shape, dtype, claim) -> str:
    return f"shape {tuple(shape)} of {dtype} ({human_bytes(claim)})"


def _array(data, shape, order, dtype, where) -> np.ndarray:
    try:
        flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape))
        if order == "F":
            return flat.reshape(shape[::-1]).transpose()
        return flat.reshape(shape)
    except (ValueError, OverflowError) as exc:  # e.g. shape (0, 2**70): no bytes, no array
        raise DataError(f"{where}: header shape {tuple(shape)} is not a possible array "
                        f"({_first_line(exc)})") from None


def _first_line(exc) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


class NpzArchive:
    """The members of a ``.npz`` file, each read on request with its claims checked.

    Use as a context manager; ``names`` lists the arrays (without ``.npy``).
    """

    def __init__(self, path, where: str | None = None):
        self.where = where or shown(path)
        self._file = open_regular(path, self.where)
        try:
            self._size = file_size(self._file)
            if self._size == 0:
                raise DataError(f"{self.where}: the file is empty; expected a .npz archive "
                                f"with an array x")
            self._zip = zipfile.ZipFile(self._file)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            self._file.close()
            raise DataError(f"{self.where}: not a readable .npz archive ({_first_line(exc)}); "
                            f"expected a file written by numpy.savez with an array x") \
                from None
        except BaseException:
            self._file.close()
            raise
        self._members: dict[str, zipfile.ZipInfo] = {}
        for info in self._zip.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            self._members.setdefault(name, info)

    @property
    def names(self) -> list[str]:
        return list(self._members)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._zip.close()
        self._file.close()

    def read(self, name: str) -> np.ndarray:
        """Member ``name`` as an array; every size it claims is checked before allocating."""
        info = self._members[name]
        where = f"{self.where}: array {shown(name)}"
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise DataError(f"{where} uses zip compression method {info.compress_type}; "
                            f"expected stored or deflated members, as numpy.savez writes")
        if info.flag_bits & 0x1:
            raise DataError(f"{where} is encrypted; expected a plain numpy.savez archive")
        if info.compress_size > self._size:
            raise DataError(f"{where}: its zip entry claims {human_bytes(info.compress_size)} "
                            f"of data; the whole archive is {human_bytes(self._size)}")
        limit = info.compress_size * (1 if info.compress_type == zipfile.ZIP_STORED
                                      else DEFLATE_MAX_RATIO)
        if info.file_size > limit:
            raise DataError(f"{where}: its zip entry claims {human_bytes(info.file_size)} "
                            f"from {human_bytes(info.compress_size)} of "
                            f"{'stored' if limit == info.compress_size else 'deflated'} data; "
                            f"at most {human_bytes(limit)} is possible")
        try:
            with self._zip.open(info) as member:
                start = member.read(16)
                if not start.startswith(NPY_MAGIC):
                    raise DataError(f"{where}: {_not_npy(start)} (as an archive member)")
                member.seek(0)
                shape, order, dtype, claim = _header(member, where)
                header = member.tell()
                if header + claim != info.file_size:
                    raise DataError(f"{where}: header says {_claim_text(shape, dtype, claim)}; "
                                    f"the member holds {human_bytes(info.file_size - header)} "
                                    f"after its header")
                data = read_exact(member, claim, where)
                member.read(1)  # at the end: lets zipfile check the CRC
            return _array(data, shape, order, dtype, where)
        # RuntimeError: zipfile's "password required"
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError,
                NotImplementedError, RuntimeError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{where} is corrupt or cut short ({_first_line(exc)}); expected "
                            f"a complete numpy.savez archive") from None
