"""Load a dataset by registered name or by path, and export one as arrays for other tools."""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from zoo.atomic import atomic_open
from zoo.data.dataset import Dataset
from zoo.data.files import EXTENSIONS, load_file
from zoo.errors import ConfigError, DataError
from zoo.plugins.host import resolve_host
from zoo.spec import CALL_START, DATASET, parse_spec

_FILE_OPTIONS = ("label_column", "task", "kind", "test_fraction")
# "adding-200" means the registered dataset "adding" with length=200 (any loader taking length).
_LENGTH_SHORTHAND = re.compile(r"(?P<base>.+)-(?P<length>[0-9]+)")


def load_dataset(name_or_path: str, *, seed: int = 42, host=None, **options) -> Dataset:
    """A registered dataset, or user data from a file or folder.

    Args:
        name_or_path: a registered name (``zoo list datasets``), a spec with the loader's
            options (``spirals(arms=3)``, ``adding(length=200)``), the older length suffix for
            sequence sets (``adding-200``, the same as ``adding(length=200)``), or a path to
            a ``.npz`` / ``.csv`` file or a folder of MNIST-format IDX files. Registered names
            win over same-named paths.
        seed: passed to the dataset's ``load``; for files it drives the held-out test split.
        host: the plugin host whose registry to use (default: the process-wide one).
        **options: options of the dataset's loader (``length=200`` for ``adding``;
            ``label_column=``, ``task=``, ``kind=``, ``test_fraction=`` for files).
    """
    host = resolve_host(host)
    registry = host.datasets
    name = os.fspath(name_or_path)
    if name in registry:
        return _call(name, registry.get(name), seed, options)
    if CALL_START.match(name) and not os.path.exists(name):  # spirals(arms=3)
        parsed = parse_spec(name, _Loaders(registry), DATASET)
        return _call(name, registry.get(parsed.name), seed, {**parsed.kwargs, **options})
    match = _LENGTH_SHORTHAND.fullmatch(name)
    if match and match["base"] in registry and "length" not in options:
        info = registry.get(match["base"])
        if _accepts(info.load, "length"):
            return _call(name, info, seed, {**options, "length": int(match["length"])})
    if _looks_like_path(name):
        unknown = sorted(set(options) - set(_FILE_OPTIONS))
        if unknown:
            raise ConfigError(f"unknown option {', '.join(unknown)} for a data file; "
                              f"accepted: {', '.join(_FILE_OPTIONS)}")
        return load_file(name, seed=seed, **options)
    installed = ", ".join(registry.names()) or "none"
    raise ConfigError(f"unknown dataset {name!r}; installed: {installed}; or give a path to a "
                      f".npz, .csv or IDX folder")


def is_data_file(name_or_path, *, host=None) -> bool:
    """Whether ``load_dataset`` reads ``name_or_path`` as a data file (not a registered name,
    a spec such as ``spirals(arms=3)`` or a length suffix): its options ``label_column`` and
    ``task`` apply, and what it guesses about labels is worth stating."""
    registry = resolve_host(host).datasets
    name = os.fspath(name_or_path)
    if name in registry or CALL_START.match(name) and not os.path.exists(name):
        return False
    match = _LENGTH_SHORTHAND.fullmatch(name)
    if match and match["base"] in registry:
        return False
    return _looks_like_path(name)


class _Loaders:
    """A dataset registry seen through its loaders, so a spec binds to ``load``'s options."""

    def __init__(self, registry):
        self.registry = registry

    def __contains__(self, name):
        return name in self.registry

    def get(self, name):
        return self.registry.get(name).load

    def names(self):
        return self.registry.names()

    def canonical(self, name):
        return self.registry.canonical(name)


def _looks_like_path(name: str) -> bool:
    return (os.path.exists(name) or os.sep in name or "/" in name
            or name.lower().endswith(EXTENSIONS))


def _accepts(function, option: str) -> bool:
    try:
        params = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return True
    return option in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _call(name: str, info, seed: int, options: dict) -> Dataset:
    for option in options:
        if not _accepts(info.load, option):
            takes = ", ".join(_option_names(info.load)) or "no options"
            raise ConfigError(f"dataset {name}: unknown option {option!r}; it takes: {takes}")
    dataset = info.load(seed, **options)
    if not isinstance(dataset, Dataset):
        raise DataError(f"dataset {name}: its loader returned {type(dataset).__name__}; "
                        f"expected a zoo Dataset")
    return dataset


def _option_names(function) -> list[str]:
    params = list(inspect.signature(function).parameters.values())[1:]  # after seed
    return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def export_dataset(dataset: Dataset, path) -> Path:
    """Write the splits as one ``.npz`` (``x_train, y_train, x_test, y_test``), atomically.

    Also stores ``classes`` (strings) and ``kind``, so ``load_dataset(path)`` gives the same
    dataset back. Unlabelled data has no ``y_*`` arrays. ``.npz`` is appended to a path
    without it. The file appears complete or not at all (temp file, fsync, ``os.replace``).
    Returns the path written.
    """
    path = Path(path)
    if path.suffix.lower() != ".npz":
        path = path.with_name(path.name + ".npz")
    if not path.parent.is_dir():
        raise ConfigError(f"cannot export to {path}: folder {path.parent} does not exist")
    arrays: dict[str, Any] = {"x_train": dataset.x_train, "x_test": dataset.x_test,
              "kind": np.array(dataset.kind)}
    if dataset.y_train is not None:
        arrays["y_train"], arrays["y_test"] = dataset.y_train, dataset.y_test
    if dataset.classes:
        arrays["classes"] = np.array([str(c) for c in dataset.classes])
    with atomic_open(path) as f:
        np.savez_compressed(f, **arrays)
    return path
