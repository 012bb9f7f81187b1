"""Reading files the user names: only regular files, opened so that nothing can block.

A FIFO, a device, a socket or a folder given where a data file is expected would make a plain
``open()`` wait forever (a FIFO without a writer) or read without end (``/dev/zero``). So a
user file is opened with ``O_NONBLOCK`` (which makes opening a FIFO return at once) and
checked with ``fstat`` on the open descriptor (no race between checking and reading) before a
single byte is read. Libraries that open a path themselves (SQLite) get ``require_regular``,
a ``stat`` check, which cannot block either.

Every problem (missing, permission denied, name too long, not a regular file, I/O error)
becomes one line of the caller's error class naming the file. The write side is
``zoo.atomic``.
"""

from __future__ import annotations

import errno
import os
import stat

from zoo.errors import DataError

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def shown(path) -> str:
    """A path as it goes into a one-line message: control characters (a newline in a file
    name) are escaped so the message stays on one line."""
    text = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
    return text if text.isprintable() else repr(text)[1:-1]


def os_problem(exc: OSError) -> str:
    """What went wrong opening or reading a file, in a few words ('permission denied')."""
    if exc.errno == errno.ENAMETOOLONG:
        return "the name is too long for the file system"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "no such file"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return (exc.strerror or type(exc).__name__).lower()


def _not_regular(where: str, mode: int) -> str:
    if stat.S_ISDIR(mode):
        return f"{where}: is a folder; expected a regular file"
    kind = next((name for test, name in _KINDS if test(mode)), "something else")
    return (f"{where}: not a regular file (a pipe, device or socket): it is {kind}; expected a "
            f"regular file")


def open_regular(path, where: str | None = None, error: type[Exception] = DataError):
    """Open ``path`` for binary reading; only a regular file is accepted.

    Args:
        path: the file the user named.
        where: how messages start (default: the path, escaped), e.g. ``"input x.npy"``.
        error: the exception class raised (one line: where, then the problem).

    Returns a buffered binary file object (``rb``); close it (``with``).
    """
    where = where or shown(path)
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        problem = os_problem(exc) if isinstance(exc, OSError) else "the name holds a NUL byte"
        raise error(f"{where}: cannot open it: {problem}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(_not_regular(where, mode))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # a regular file never blocks; ordinary reads from here
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def require_regular(path, where: str | None = None,
                    error: type[Exception] = DataError) -> None:
    """Refuse an existing ``path`` that is not a regular file (``stat`` only: never blocks).

    A missing path passes: callers that may create the file decide about that themselves.
    """
    where = where or shown(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        problem = os_problem(exc) if isinstance(exc, OSError) else "the name holds a NUL byte"
        raise error(f"{where}: cannot use it: {problem}") from None
    if not stat.S_ISREG(mode):
        raise error(_not_regular(where, mode))


def file_size(f) -> int:
    """The size in bytes of an open file (``fstat``)."""
    return os.fstat(f.fileno()).st_size


def read_exact(f, n: int, where: str, error: type[Exception] = DataError) -> bytearray:
    """Exactly ``n`` bytes from ``f``, read in pieces into one buffer; a short file is one
    error line. Callers bound ``n`` by the bytes present before calling."""
    buf = bytearray(n)
    view = memoryview(buf)
    done = 0
    try:
        while done < n:
            got = f.readinto(view[done:done + (16 << 20)])
            if not got:
                raise error(f"{where}: ends after {done} of the {n} bytes expected")
            done += got
    except OSError as exc:
        raise error(f"{where}: cannot read it: {os_problem(exc)}") from None
    return buf


def human_bytes(n: int) -> str:
    """``n`` bytes for a message: '512 GiB', '1.5 MiB', '17 bytes' (exact below 1 KiB)."""
    if n < 1024:
        return f"{n} byte{'s' if n != 1 else ''}"
    units = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    power = min((n.bit_length() - 1) // 10, len(units))  # 1024**power <= n
    return f"{n / 1024**power:.3g} {units[power - 1]}"
