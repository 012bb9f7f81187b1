"""``zoo new-plugin NAME``: write a working architecture plugin package to start from.

The package has a ``pyproject.toml`` with the entry point in the group ``zoo``, a module that
registers one architecture built from zoo's layers, a test that runs ``zoo.testing`` on it and
a README. It passes its own tests as soon as it is installed (``pip install -e ".[test]"``).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path
from string import Template

import click

from zoo.errors import ConfigError

NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,38}[a-z0-9]\Z|[a-z]\Z")

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "The $name architecture for zoo"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["archzoo"]

[project.optional-dependencies]
test = ["pytest>=7"]

# This makes the package a zoo plugin: zoo loads every entry point of the group "zoo".
[project.entry-points.zoo]
$name = "$module"

[tool.setuptools]
py-modules = ["$module"]
'''

MODULE = '''\
"""The $name architecture: a zoo plugin.

Hidden dense layers with a non-linear activation, then a linear output layer; images and
sequences are flattened first. Replace ``build`` with your own architecture.

Registered through the entry point ``$name = "$module"`` in the group ``zoo``
(see pyproject.toml): ``zoo plugins`` lists it, ``zoo train --arch $name`` trains it.
"""

from zoo.architecture import Architecture, Option
from zoo.hookspecs import hookimpl

# The zoo plugin API this module is written for; another major version refuses to load it.
ZOO_API = "1"


def build(spec, options):
    """An unbuilt model for the data ``spec`` describes (a ``zoo.data.spec.DataSpec``)."""
    # Layers are imported here rather than at the top: every zoo command imports each plugin
    # module, and ``zoo list`` must not pay for numerical code.
    from zoo.layers.dense import Dense
    from zoo.layers.reshape import Flatten
    from zoo.model import Sequential

    layers = [Flatten()] if len(spec.input_shape) > 1 else []
    for _ in range(options["depth"]):
        layers.append(Dense(options["width"], activation=options["activation"]))
    layers.append(Dense(spec.output_size))
    return Sequential(layers, name="$name")


ARCHITECTURE = Architecture(
    name="$name",
    summary="$name: dense layers with a non-linear activation (edit me)",
    tasks=("classify", "regress"),
    build=build,
    options=(
        # Declared ranges: zoo refuses -o depth=-1 with one line before build is called.
        Option("width", int, 64, "units of each hidden layer", minimum=1, log=True),
        Option("depth", int, 2, "number of hidden layers", minimum=0),
        Option("activation", str, "relu", "activation after each hidden layer",
               ("relu", "tanh", "gelu")),
    ),
    defaults={"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "epochs": 50},
)


@hookimpl
def register_architectures(register):
    register(ARCHITECTURE)
'''

TEST = '''\
"""Tests for the $name plugin: zoo's conformance kit, then this architecture's own behaviour."""

import $module
from zoo.testing import build_model, check_plugin, tiny_spec


def test_plugin_loads_and_conforms():
    # The installed entry point loads without problems, and every architecture it registers
    # passes zoo's checks: shapes, float64 gradients, determinism, configs, checkpoints, training.
    checked = check_plugin("$name")
    assert list(checked) == ["$name"]


def test_depth_sets_the_number_of_hidden_layers():
    spec = tiny_spec("vector")
    for depth in (0, 1, 3):
        model = build_model($module.ARCHITECTURE, spec, {"depth": depth})
        assert len(model.layers) == depth + 1
        assert model.output_shape == (spec.output_size,)
'''

README = '''\
# $dist

The `$name` architecture for [zoo](https://pypi.org/project/archzoo/), as a plugin.

```bash
pip install -e ".[test]"     # installs the plugin; zoo finds it through its entry point
zoo plugins                  # lists $name, its version, hooks and what it registered
zoo info $name               # its options and defaults
zoo train --arch $name --dataset xor
pytest                       # zoo's conformance kit and this plugin's own tests
```

Options (`-o NAME=VALUE`): `width` (units of each hidden layer, 64), `depth` (hidden layers, 2),
`activation` (relu, tanh or gelu).

Edit `build()` in `$module.py` to make it your own architecture; `pytest` tells you whether it
still conforms. See zoo's docs/writing-plugins.md and docs/plugin-hooks.md.
'''

FILES = {
    "pyproject.toml": PYPROJECT,
    "$module.py": MODULE,
    "tests/test_$module.py": TEST,
    "README.md": README,
}


def check_name(name: str) -> str:
    """Validate a plugin NAME: what users type after ``--arch``."""
    if not NAME_RE.match(name or ""):
        raise ConfigError(
            "new-plugin: NAME must start with a lowercase letter, use only lowercase letters, "
            f"digits, '_' and '-', not end with '_' or '-', and be at most 40 characters; "
            f"received {name!r}"
        )
    return name


def write_plugin(name: str, folder) -> list[Path]:
    """Write the plugin package for ``name`` into the new folder ``folder``; returns the files.

    The files are written to a temporary folder beside ``folder`` and moved into place at the
    end, so a failure leaves nothing behind.
    """
    check_name(name)
    folder = Path(folder)
    if folder.exists() or folder.is_symlink():
        raise ConfigError(f"new-plugin: {folder} already exists; choose another --dir "
                          "(it is never overwritten)")
    parent = folder.parent if str(folder.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"new-plugin: the folder {parent} does not exist")
    values = {"name": name, "module": "zoo_" + name.replace("-", "_"), "dist": "zoo-" + name}
    staging = parent / f".{folder.name}.{secrets.token_hex(4)}.tmp"
    staging.mkdir()  # unlike mkdtemp's 0700, a plain mkdir honours the umask
    try:
        written = []
        for rel, template in FILES.items():
            path = staging / Template(rel).substitute(values)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(Template(template).substitute(values), encoding="utf-8")
            written.append(folder / path.relative_to(staging))
        os.rename(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return written


@click.command("new-plugin")
@click.argument("name")
@click.option("--dir", "folder", type=click.Path(file_okay=True, dir_okay=True),
              help="Folder to create for the package (default: ./zoo-NAME). Never overwritten.")
def new_plugin_command(name, folder):
    """Write a working architecture plugin package named NAME to start from."""
    check_name(name)
    from zoo.plugins import get_host

    architectures = get_host().architectures
    if name in architectures:
        raise ConfigError(f"new-plugin: an architecture named {name!r} is already installed "
                          f"(plugin {architectures.owner(name)}); choose another NAME")
    folder = folder or f"zoo-{name}"
    written = write_plugin(name, folder)
    click.echo(f"created {folder}: the zoo plugin {name}")
    for path in written:
        click.echo(f"  {path}")
    click.echo(f"\nnext:\n  cd {folder}\n  pip install -e \".[test]\"\n  pytest\n"
               f"  zoo train --arch {name} --dataset xor")


COMMANDS = [new_plugin_command]
