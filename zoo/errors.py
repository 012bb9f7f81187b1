"""The errors zoo raises on purpose.

``ZooError`` and its subclasses mean "the input or the configuration is wrong": the CLI
prints their message on one line and exits with code 2. Anything else escaping a run is a
failure during the run (exit code 1).
"""


class ZooError(Exception):
    """Bad input or configuration, reported to the user in one line."""


class ConfigError(ZooError, ValueError):
    """An option, name or value the user gave is not acceptable."""


class DataError(ZooError, ValueError):
    """A dataset or input array does not have the expected shape, dtype or values."""


class CheckpointError(ZooError):
    """A checkpoint file is missing, malformed, hostile or does not fit."""


class PluginError(ZooError):
    """A plugin failed to load or registered something invalid."""


def describe_array(x) -> str:
    """A short description of an array for error messages: 'float32 array of shape (3, 4)'."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None:
        return type(x).__name__
    return f"{dtype} array of shape {tuple(shape)}"
