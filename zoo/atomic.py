"""Files that appear complete or not at all: every file zoo writes for the user goes through here.

The data goes to a new temporary file beside the target (same folder, so the rename cannot
cross filesystems), is flushed and fsynced, and only then renamed over the target with
``os.replace``; if anything fails, or the process is interrupted inside the block, the
temporary file is removed and the target is left as it was.

Temporary names. ``.{stem}.{target}.{host}.{pid}.{random}.tmp``: ``target`` is a hash of the
target's file name, ``host`` a hash of the machine's name and ``pid`` the writing process, so a
temp file says whose it is. ``stem`` is the target's name, cut so the whole name stays within
the file system's limit (255 bytes on most): a legal target name always gets a legal temp name.

Stale temps. A process killed inside the block (kill -9, power loss) leaves its temp file. The
next save to the same target removes the temps of that target whose writer is certainly gone:
made on this machine by a process that no longer exists, or (when that cannot be told: another
machine sharing the folder, an older zoo's name without a pid) untouched for ``STALE_AGE``
seconds. A live writer's temp is never touched, nor any file zoo's scheme did not name.

``probe_writable(path)`` creates and removes a real temp file beside ``path``, with this
scheme, so commands can refuse an unwritable ``--save``/``--out`` before any work.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import socket
import time

from zoo.errors import ConfigError, describe_os_error

STALE_AGE = 24 * 3600.0  # seconds without a write after which any writer is surely gone
_NAME_MAX = 255

_TEMP = re.compile(r"\.(?P<stem>.*)\.(?P<target>[0-9a-f]{8})\.(?P<host>[0-9a-f]{6})\."
                   r"(?P<pid>[0-9]{1,10})\.[0-9a-f]{8}\.tmp\Z", re.DOTALL)
# The scheme of zoo before this one: ``.{base}.{12 hex}.tmp``, with no owner in it.
_OLD_TEMP = re.compile(r"\.(?P<base>.*)\.[0-9a-f]{12}\.tmp\Z", re.DOTALL)


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(os.fsencode(text)).hexdigest()[:n]


def _host_tag() -> str:
    return _digest(socket.gethostname(), 6)


def _name_max(folder: str) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (AttributeError, ValueError, OSError):
        return _NAME_MAX


def temp_name(folder: str, base: str) -> str:
    """A new temp file name for the target ``base`` in ``folder``, within the name limit."""
    suffix = f".{_digest(base, 8)}.{_host_tag()}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # Cut by bytes (the limit is in bytes); a character cut in two stays as escaped bytes,
    # which encode back to the same bytes, so the stem is always a byte prefix of the name.
    stem = os.fsdecode(os.fsencode(base)[:max(_name_max(folder) - 1 - len(suffix), 0)])
    return f".{stem}{suffix}"


def _create_temp(folder: str, base: str) -> tuple[str, int]:
    """A new file beside the target, created with the default permissions (umask applies)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(folder, temp_name(folder, base))
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill would terminate it: cannot ask, so assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process (or a pid this system cannot hold)
    return True


def _is_stale(entry: os.DirEntry, base: str, now: float) -> bool:
    name = entry.name
    match = _TEMP.match(name)
    if match:
        if match["target"] != _digest(base, 8) \
                or not os.fsencode(base).startswith(os.fsencode(match["stem"])):
            return False
        if match["host"] == _host_tag() and not _pid_alive(int(match["pid"])):
            return True
    elif not ((old := _OLD_TEMP.match(name)) and old["base"] == base):
        return False
    try:
        return entry.is_file(follow_symlinks=False) and \
            now - entry.stat(follow_symlinks=False).st_mtime > STALE_AGE
    except OSError:
        return False


def remove_stale_temps(folder: str, base: str) -> list[str]:
    """Remove the temp files of target ``base`` whose writer is gone; return their paths."""
    removed: list[str] = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith(".tmp") \
                and _is_stale(entry, base, now):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(entry.path)
    return removed


def probe_writable(path, what: str = "file") -> None:
    """Raise ``ConfigError`` unless ``path`` can be written the way ``atomic_open`` will:
    its name is legal here, its folder exists, and a temp file can be created beside it."""
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    shown = f"cannot write the {what} to {target}"
    if not os.path.isdir(folder):
        raise ConfigError(f"{shown}: the folder {folder} does not exist")
    try:
        os.lstat(target)
    except FileNotFoundError:
        pass
    except OSError as exc:  # e.g. ENAMETOOLONG: the final rename would fail the same way
        raise ConfigError(f"{shown}: {exc.strerror or exc}") from None
    if os.path.isdir(target):
        raise ConfigError(f"{shown}: it is a folder; expected a file path")
    try:
        tmp, fd = _create_temp(folder, os.path.basename(target))
    except OSError as exc:
        reason = exc.strerror or describe_os_error(exc)
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            reason = f"{reason} (the folder {folder} is not writable)"
        raise ConfigError(f"{shown}: {reason}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


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
    base = os.path.basename(target)
    remove_stale_temps(folder, base)
    tmp, fd = _create_temp(folder, base)
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
