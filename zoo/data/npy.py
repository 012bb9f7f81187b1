"""One ``.npy`` array from a user's file, read without trusting it.

``read_npy`` opens only a regular file (a FIFO or a device would block or never end), tells
what the file is from its first bytes before parsing it (a zoo checkpoint, an ``.npz`` archive
and a pickle each get their own diagnosis), reads the ``.npy`` header, and compares the bytes
the header claims with the bytes the file holds before any array is allocated. No pickle is
ever loaded.
"""

from __future__ import annotations

import os
import stat

import numpy as np

from zoo.errors import DataError

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def _open_regular(path: str, where: str):
    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise DataError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{where}: is a folder; expected a .npy file") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(f"{where}: not a regular file (a pipe, device or socket); expected a "
                        f".npy file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _what_it_is(head: bytes) -> str | None:
    """A diagnosis of a file that is not ``.npy``, from its first bytes."""
    if head.startswith(_ZIP_MAGIC):
        return "is an .npz archive; expected a .npy file holding one array"
    if len(head) >= 10 and head[8:10] == b'{"':
        return ("is a safetensors file (a zoo checkpoint?); give the checkpoint first and a "
                ".npy file of inputs second")
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocols 2-5
        return "holds pickled Python objects, which zoo never loads; expected a .npy array"
    return None


def read_npy(path, where: str | None = None) -> np.ndarray:
    """The array in the ``.npy`` file ``path``; ``DataError`` in one line otherwise."""
    path = os.fspath(path)
    where = where or path
    with _open_regular(path, where) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(16)
        if not head.startswith(_NPY_MAGIC):
            diagnosis = _what_it_is(head)
            raise DataError(f"{where}: {diagnosis or 'not a .npy file (no NUMPY header)'}")
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{where}: a broken .npy header ({' '.join(str(exc).split())})") \
                from None
        if dtype.hasobject:
            raise DataError(f"{where}: holds Python objects, which would need pickle to load; "
                            f"expected a numeric array")
        count = 1
        for n in shape:
            count *= int(n)
        claimed = count * dtype.itemsize
        present = size - f.tell()
        if claimed != present:
            raise DataError(f"{where}: its header claims {claimed:,} bytes of data "
                            f"({dtype} array of shape {tuple(shape)}); the file holds "
                            f"{present:,}")
        data = np.fromfile(f, dtype=dtype, count=count)
    return data.reshape(shape, order="F" if fortran else "C")
