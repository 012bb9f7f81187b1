"""``zoo new-plugin NAME --kind KIND``: write a working plugin package to start from.

The package has a ``pyproject.toml`` with the entry point in the group ``zoo``, a module that
registers one thing of the chosen kind (an architecture built from zoo's layers, an optimizer,
a loss, a dataset, a stopping criterion or a learning-rate schedule), a test that runs
``zoo.testing`` on it and a README. It passes its own tests as soon as it is installed
(``pip install -e ".[test]"``).
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
description = "The $name $kind for zoo"
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

KIND_MODULES = {}
KIND_TESTS = {}

KIND_MODULES["optimizer"] = '''\
"""The $name optimizer: a zoo plugin.

Heavy-ball momentum, written in numpy: ``v = momentum * v - lr * g``; ``p += v``. Replace
``_update`` with your own rule. The base class (``zoo.optimizers.Optimizer``) checks the arrays,
keeps one slot per name in ``slot_names()``, counts steps in ``self.iterations`` and saves and
restores everything for exact resumes; weight decay is yours to apply (here: L2, added to the
gradient, skipped for biases and norm parameters when ``decay_bias_norm=false``).

Registered through the entry point ``$name = "$module"`` in the group ``zoo``:
``zoo train --arch mlp --optimizer "$name(momentum=0.8)"`` trains with it.
"""

from zoo.errors import ConfigError
from zoo.hookspecs import hookimpl
from zoo.optimizers import Optimizer

# The zoo plugin API this module is written for; another major version refuses to load it.
ZOO_API = "1"


class $cls(Optimizer):
    """Heavy-ball momentum (Polyak, 1964)."""

    name = "$name"

    def __init__(self, lr, momentum=0.9, weight_decay=0.0, decay_bias_norm=True):
        super().__init__(lr, weight_decay, decay_bias_norm)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) \\
                or not 0 <= momentum < 1:
            raise ConfigError(f"$name: momentum must be in [0, 1); received "
                              f"momentum={momentum!r}")
        self.momentum = float(momentum)

    def slot_names(self):
        return ("velocity",)

    def _update(self, param, grad, velocity):
        step = grad + self.weight_decay * param if self.weight_decay else grad
        velocity *= self.momentum
        velocity -= self.lr * step
        param += velocity

    def get_config(self):
        # Every __init__ argument: load_state_dict rebuilds the optimizer from these.
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "decay_bias_norm": self.decay_bias_norm}


@hookimpl
def register_optimizers(register):
    register("$name", $cls)
'''

KIND_TESTS["optimizer"] = '''\
"""Tests for the $name plugin: zoo's conformance kit with a plain reference update."""

import numpy as np

from zoo.testing import check_optimizer, check_plugin


def reference(param, grads, lr, momentum=0.9, weight_decay=0.0, decay_bias_norm=True):
    velocity = np.zeros_like(param)
    for g in grads:
        velocity = momentum * velocity - lr * (g + weight_decay * param)
        param = param + velocity
    return param


def test_plugin_loads_and_conforms():
    assert list(check_plugin("$name")) == ["$name"]


def test_update_matches_the_reference():
    done = check_optimizer("$name", options={"momentum": 0.5, "weight_decay": 0.01},
                           reference=reference)
    assert "matches the reference update" in done
'''

KIND_MODULES["loss"] = '''\
"""The $name loss: a zoo plugin.

The log-cosh loss, ``mean(log(cosh(pred - target)))``: quadratic for small errors, linear for
large ones, smooth everywhere. Replace ``_compute`` with your own loss.

Registered through the entry point ``$name = "$module"`` in the group ``zoo``:
``zoo train --arch mlp --dataset sine --loss "$name(scale=2)"`` trains with it.
"""

import numpy as np

from zoo.errors import ConfigError, DataError, describe_array
from zoo.hookspecs import hookimpl
from zoo.losses import Loss

# The zoo plugin API this module is written for; another major version refuses to load it.
ZOO_API = "1"


class $cls(Loss):
    """Mean of ``scale * log(cosh(r / scale))`` over every output, ``r = pred - target``."""

    name = "$name"

    def __init__(self, scale=1.0):
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ConfigError(f"$name: scale must be a positive number; received "
                              f"scale={scale!r}")
        self.scale = float(scale)

    def _check(self, pred, target):
        if target.shape != pred.shape:
            raise DataError(f"$name: targets must have the predictions' shape {pred.shape}; "
                            f"received {describe_array(target)}")
        return target

    def _compute(self, pred, target, grad):
        r = (pred - target) / self.scale
        np.tanh(r, out=grad)
        grad /= r.size
        a = np.abs(r)  # log(cosh(r)) = |r| + log1p(exp(-2|r|)) - log(2), stable for large |r|
        return float(self.scale * np.mean(a + np.log1p(np.exp(-2 * a)) - np.log(2.0)))

    def get_config(self):
        return {"scale": self.scale}


@hookimpl
def register_losses(register):
    register("$name", $cls)
'''

KIND_TESTS["loss"] = '''\
"""Tests for the $name plugin: zoo's conformance kit, then the value against numpy."""

import numpy as np

import $module
from zoo.testing import check_loss, check_plugin


def test_plugin_loads_and_conforms():
    assert list(check_plugin("$name")) == ["$name"]


def test_value_against_numpy():
    rng = np.random.default_rng(0)
    pred, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    loss = $module.$cls(scale=2.0)
    expected = np.mean(2.0 * np.log(np.cosh((pred - target) / 2.0)))
    assert np.isclose(loss.forward(pred, target), expected)
    assert "gradient matches float64 central differences" in check_loss("$name")
'''

KIND_MODULES["dataset"] = '''\
"""The $name dataset: a zoo plugin.

Gaussian blobs in the plane, one class each, generated from the seed. Replace ``load`` with
your own data; its keyword options are the dataset's options.

Registered through the entry point ``$name = "$module"`` in the group ``zoo``:
``zoo train --arch mlp --dataset "$name(classes=4)"`` trains on it.
"""

from zoo.data.dataset import Dataset, DatasetInfo
from zoo.errors import ConfigError
from zoo.hookspecs import hookimpl

# The zoo plugin API this module is written for; another major version refuses to load it.
ZOO_API = "1"


def load(seed, *, classes=3, n=600, spread=0.5):
    """``n`` points around ``classes`` centres on the unit circle, shuffled; 80% train."""
    import numpy as np

    if isinstance(classes, bool) or not isinstance(classes, int) or not 2 <= classes <= 20:
        raise ConfigError(f"dataset $name: classes must be an integer from 2 to 20; received "
                          f"classes={classes!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 10 * classes:
        raise ConfigError(f"dataset $name: n must be an integer >= {10 * classes}; received "
                          f"n={n!r}")
    if isinstance(spread, bool) or not isinstance(spread, (int, float)) or not spread > 0:
        raise ConfigError(f"dataset $name: spread must be a positive number; received "
                          f"spread={spread!r}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % classes)
    angle = 2 * np.pi * labels / classes
    centres = np.stack([np.cos(angle), np.sin(angle)], axis=1) * 2.0
    x = (centres + spread * rng.standard_normal((n, 2))).astype(np.float32)
    cut = int(0.8 * n)
    return Dataset("$name", "vector", "classify", x[:cut], labels[:cut], x[cut:], labels[cut:],
                   classes=[f"blob {i}" for i in range(classes)],
                   info={"source": "generated", "licence": "CC0"})


@hookimpl
def register_datasets(register):
    register(DatasetInfo("$name", "Gaussian blobs in the plane, one class each", "classify",
                         "vector", load))
'''

KIND_TESTS["dataset"] = '''\
"""Tests for the $name plugin: zoo's conformance kit, then the options."""

import $module
from zoo.testing import check_plugin


def test_plugin_loads_and_conforms():
    assert list(check_plugin("$name")) == ["$name"]


def test_classes_sets_the_number_of_labels():
    data = $module.load(0, classes=5, n=100)
    assert set(data.y_train.tolist()) | set(data.y_test.tolist()) == set(range(5))
    assert data.x_train.shape == (80, 2)
'''

KIND_MODULES["criterion"] = '''\
"""The $name stopping criterion: a zoo plugin.

Stop when the epoch's training loss rises above a ceiling: a guard against divergence.
Replace ``update`` with your own rule.

Registered through the entry point ``$name = "$module"`` in the group ``zoo``:
``zoo train --arch mlp --stop "$name(ceiling=5)"`` stops with it.
"""

import math

from zoo.errors import ConfigError
from zoo.hookspecs import hookimpl
from zoo.training.stopping import Criterion

# The zoo plugin API this module is written for; another major version refuses to load it.
ZOO_API = "1"


class $cls(Criterion):
    """Stop when the epoch's mean training loss exceeds ``ceiling``."""

    name = "$name"
    every = "epoch"

    def __init__(self, ceiling=10.0):
        super().__init__()
        if isinstance(ceiling, bool) or not isinstance(ceiling, (int, float)) \\
                or not math.isfinite(ceiling):
            raise ConfigError(f"$name: ceiling must be a finite number; received "
                              f"ceiling={ceiling!r}")
        self.ceiling = float(ceiling)

    def update(self, state):
        if state.loss > self.ceiling:
            self._fire(f"the training loss {state.loss:.4g} rose above {self.ceiling:g} at "
                       f"epoch {state.epoch}")
        else:
            self._clear()


@hookimpl
def register_stopping_criteria(register):
    register("$name", $cls)
'''

KIND_TESTS["criterion"] = '''\
"""Tests for the $name plugin: zoo's conformance kit, then the rule."""

import $module
from zoo.testing import check_criterion, check_plugin
from zoo.training.state import TrainState


def test_plugin_loads_and_conforms():
    assert list(check_plugin("$name", criteria={"$name": "$name(ceiling=0.9)"})) == ["$name"]
    assert "repr is a spec that parses back" in check_criterion("$name=2")


def test_fires_above_the_ceiling():
    criterion = $module.$cls(ceiling=1.0)
    criterion.update(TrainState("epoch", 1, 10, 0.1, 0.5))
    assert not criterion.stop
    criterion.update(TrainState("epoch", 2, 20, 0.2, 1.5))
    assert criterion.stop and "rose above 1" in criterion.reason
'''

KIND_MODULES["schedule"] = '''\
"""The $name learning-rate schedule: a zoo plugin.

Linear decay from the base rate to ``end_factor`` times it over the run, step by step.
Replace ``lr`` with your own schedule.

Registered through the entry point ``$name = "$module"`` in the group ``zoo``:
``zoo train --arch mlp --schedule "$name(end_factor=0.1)"`` trains with it.
"""

from zoo.errors import ConfigError
from zoo.hookspecs import hookimpl
from zoo.schedules import Schedule

# The zoo plugin API this module is written for; another major version refuses to load it.
ZOO_API = "1"


class $cls(Schedule):
    """``base * (1 - (1 - end_factor) * (step - 1) / (total - 1))``, then ``end_factor``."""

    name = "$name"
    per = "step"

    def __init__(self, end_factor=0.0):
        if isinstance(end_factor, bool) or not isinstance(end_factor, (int, float)) \\
                or not 0 <= end_factor <= 1:
            raise ConfigError(f"$name: end_factor must be in [0, 1]; received "
                              f"end_factor={end_factor!r}")
        self.end_factor = float(end_factor)

    def lr(self, base, step, epoch):
        # start() gave the run's length: steps_per_epoch and epochs (the epoch budget)
        total = self.steps_per_epoch * self.epochs
        done = min((step - 1) / max(total - 1, 1), 1.0)
        return base * (1.0 - (1.0 - self.end_factor) * done)

    def get_config(self):
        return {"end_factor": self.end_factor}


@hookimpl
def register_schedules(register):
    register("$name", $cls)
'''

KIND_TESTS["schedule"] = '''\
"""Tests for the $name plugin: zoo's conformance kit, then the rates."""

import $module
from zoo.testing import check_plugin, check_schedule


def test_plugin_loads_and_conforms():
    assert list(check_plugin("$name")) == ["$name"]
    assert "finite rates, changing only as it declares" in check_schedule("$name(0.5)")


def test_decays_linearly_to_the_end_factor():
    schedule = $module.$cls(end_factor=0.5)
    schedule.start(steps_per_epoch=5, epochs=2)
    rates = [schedule.lr(1.0, step, (step - 1) // 5) for step in range(1, 11)]
    assert rates[0] == 1.0 and rates[-1] == 0.5
    assert all(a > b for a, b in zip(rates, rates[1:]))
'''


README = '''\
# $dist

The `$name` $kind for [zoo](https://pypi.org/project/archzoo/), as a plugin.

```bash
pip install -e ".[test]"     # installs the plugin; zoo finds it through its entry point
zoo plugins                  # lists $name, its version, hooks and what it registered
$usage
pytest                       # zoo's conformance kit and this plugin's own tests
```

Edit `$module.py` to make it your own; `pytest` tells you whether it still conforms. See
zoo's docs/writing-plugins.md and docs/plugin-hooks.md.
'''

USAGE = {
    "architecture": "zoo info $name               # its options (-o NAME=VALUE) and defaults\n"
                    "zoo train --arch $name --dataset xor",
    "optimizer": "zoo train --arch mlp --optimizer \"$name(momentum=0.8)\"",
    "loss": "zoo train --arch mlp --dataset sine --loss \"$name(scale=2)\"",
    "dataset": "zoo train --arch mlp --dataset \"$name(classes=4)\"",
    "criterion": "zoo train --arch mlp --stop \"$name(ceiling=5)\"",
    "schedule": "zoo train --arch mlp --schedule \"$name(end_factor=0.1)\"",
}
KINDS = tuple(USAGE)
# Where a name is looked up to refuse one that is already installed.
REGISTRIES = {"architecture": "architectures", "optimizer": "optimizers", "loss": "losses",
              "dataset": "datasets", "criterion": "criteria", "schedule": "schedules"}

KIND_MODULES["architecture"], KIND_TESTS["architecture"] = MODULE, TEST


def files_for(kind: str) -> dict:
    """The package's files for ``kind``: relative path template -> content template."""
    return {"pyproject.toml": PYPROJECT, "$module.py": KIND_MODULES[kind],
            "tests/test_$module.py": KIND_TESTS[kind], "README.md": README}


FILES = files_for("architecture")


def check_name(name: str) -> str:
    """Validate a plugin NAME: what users type after ``--arch``."""
    if not NAME_RE.match(name or ""):
        raise ConfigError(
            "new-plugin: NAME must start with a lowercase letter, use only lowercase letters, "
            f"digits, '_' and '-', not end with '_' or '-', and be at most 40 characters; "
            f"received {name!r}"
        )
    return name


def write_plugin(name: str, folder, kind: str = "architecture") -> list[Path]:
    """Write the plugin package for ``name`` of ``kind`` into the new folder ``folder``;
    returns the files.

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
    if kind not in KINDS:
        raise ConfigError(f"new-plugin: --kind must be one of {', '.join(KINDS)}; received "
                          f"{kind!r}")
    if kind != "architecture" and "-" in name:
        raise ConfigError(f"new-plugin: a {kind} name is used in specs such as "
                          f"--optimizer \"{name}(...)\", which take letters, digits and '_'; "
                          f"received {name!r}")
    cls = "".join(part.capitalize() for part in re.split(r"[-_]", name)) or "Plugin"
    values = {"name": name, "module": "zoo_" + name.replace("-", "_"), "dist": "zoo-" + name,
              "kind": kind, "cls": cls}
    values["usage"] = Template(USAGE[kind]).substitute(values)
    staging = parent / f".{folder.name}.{secrets.token_hex(4)}.tmp"
    staging.mkdir()  # unlike mkdtemp's 0700, a plain mkdir honours the umask
    try:
        written = []
        for rel, template in files_for(kind).items():
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
@click.option("--kind", type=click.Choice(list(KINDS)), default="architecture",
              show_default=True, help="What the plugin registers.")
def new_plugin_command(name, folder, kind):
    """Write a working plugin package named NAME to start from: an architecture, optimizer,
    loss, dataset, stopping criterion or learning-rate schedule."""
    check_name(name)
    from zoo.plugins import get_host

    registry = get_host().registries[REGISTRIES[kind]]
    if name in registry:
        raise ConfigError(f"new-plugin: {'an' if kind[0] in 'aeiou' else 'a'} {kind} named "
                          f"{name!r} is already installed (plugin {registry.owner(name)}); "
                          f"choose another NAME")
    folder = folder or f"zoo-{name}"
    written = write_plugin(name, folder, kind)
    click.echo(f"created {folder}: the zoo plugin {name} ({kind})")
    for path in written:
        click.echo(f"  {path}")
    click.echo(f"\nnext:\n  cd {folder}\n  pip install -e \".[test]\"\n  pytest\n  "
               + Template(USAGE[kind]).substitute(name=name).splitlines()[-1])


COMMANDS = [new_plugin_command]
