"""Files that appear complete or not at all: every file zoo writes for the user goes through here.

The data goes to a new temporary file beside the target (same folder, so the rename cannot
cross filesystems), is flushed and fsynced, and only then renamed over the target with
``os.replace``; if anything fails, or the process is interrupted inside the block, the
temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets


def _create_temp(folder: str, base: str) -> tuple[str, int]:
    """A new file beside the target, created with the default permissions (umask applies)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(folder, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue


def _fsync_folder(folder: str) -> None:
    """Make the rename durable. Best effort: Windows and some filesystems cannot fsync a folder,
    and by now the new file is in place, so failing here would misreport what happened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path):
    """A binary file object that becomes ``path`` when the block ends without an error."""
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    tmp, fd = _create_temp(folder, os.path.basename(target))
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)
