"""The errors zoo raises on purpose.

``ZooError`` and its subclasses mean "the input or the configuration is wrong": the CLI
prints their message on one line and exits with code 2 (``NumericError``, a computation that
gave NaN or Inf, exits with code 1). Anything else escaping a run is a failure during the run
(exit code 1).
"""


class ZooError(Exception):
    """Bad input or configuration, reported to the user in one line.

    The message is one line by construction: text quoted from elsewhere (a file name, a
    library's own error such as SQLite's, which may span lines) has its control characters
    escaped when the error is shown.
    """

    exit_code = 2

    def __str__(self) -> str:
        return printable(super().__str__())


class ConfigError(ZooError, ValueError):
    """An option, name or value the user gave is not acceptable."""


class DataError(ZooError, ValueError):
    """A dataset or input array does not have the expected shape, dtype or values."""


class CheckpointError(ZooError):
    """A checkpoint file is missing, malformed, hostile or does not fit."""


class PluginError(ZooError):
    """A plugin failed to load or registered something invalid."""


class NumericError(ZooError):
    """A computation gave NaN or Inf where a number was due (a model that overflows on an
    input). Not the input's fault as such, so the CLI exits with code 1."""

    exit_code = 1


def describe_array(x) -> str:
    """A short description of an array for error messages: 'float32 array of shape (3, 4)'."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None:
        return type(x).__name__
    return f"{dtype} array of shape {tuple(shape)}"


# Control characters (C0, DEL, C1) and Unicode line/paragraph separators: anything that would
# break a one-line message or drive a terminal. A file name may contain any of them.
_UNPRINTABLE = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}
_UNPRINTABLE.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def printable(text) -> str:
    """``text`` on one line: newlines and other control characters escaped as in Python."""
    return str(text).translate(_UNPRINTABLE)


def describe_os_error(exc: OSError) -> str:
    """'PATH: Permission denied' for an ``OSError`` about a file, else its message."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return reason
    where = f"{exc.filename}" if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
    return f"{where}: {reason}"
