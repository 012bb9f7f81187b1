"""zoo.testing: the conformance kit plugin authors run from their own test suite.

Every built-in architecture passes these checks in zoo's own tests; a plugin passes the same::

    from zoo.testing import check_architecture, check_plugin

    def test_mynet_conforms():
        check_architecture("mynet")        # every kind of data and task it claims

    def test_plugin_loads():
        check_plugin("mynet")              # the entry point loads; all it registered conforms

The finer checks (``check_output_shapes``, ``check_gradients``, ``check_determinism``,
``check_config``, ``check_checkpoint_round_trip``, ``check_training``, with ``tiny_spec`` and
``build_model`` to set them up) and ``check_layer`` (a float64 finite-difference check of one
layer, from ``zoo.kit.gradcheck``) are importable from here too; ``zoo.kit.conformance``
documents each. The other kinds a plugin registers have their checks in ``zoo.kit.components``,
importable from here: ``check_optimizer``, ``check_loss``, ``check_dataset``,
``check_criterion``, ``check_schedule`` and ``check_metric``; ``check_plugin`` runs the one of
each kind on everything a plugin registered.

This module is also a pytest plugin, registered with the entry point ``zoo = "zoo.testing"`` in
the group ``pytest11``, so any test suite in an environment with zoo installed gets the fixtures
``zoo_conformance`` (this module) and ``zoo_host`` (a freshly loaded plugin host). pytest
imports every such plugin at startup, for every project, so this module imports nothing but
the standard library until a check runs; ``-p no:zoo`` switches it off.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported on first use instead (see __getattr__), to keep startup light
    from zoo.kit.components import (
        check_criterion,
        check_dataset,
        check_loss,
        check_metric,
        check_optimizer,
        check_schedule,
    )
    from zoo.kit.conformance import (
        build_model,
        check_architecture,
        check_checkpoint_round_trip,
        check_config,
        check_determinism,
        check_gradients,
        check_output_shapes,
        check_plugin,
        check_registration,
        check_training,
        iter_layers,
        specs_for,
        tiny_dataset,
        tiny_spec,
    )
    from zoo.kit.gradcheck import check_layer

__all__ = [
    "build_model",
    "check_architecture",
    "check_checkpoint_round_trip",
    "check_config",
    "check_criterion",
    "check_dataset",
    "check_determinism",
    "check_gradients",
    "check_layer",
    "check_loss",
    "check_metric",
    "check_optimizer",
    "check_output_shapes",
    "check_plugin",
    "check_registration",
    "check_schedule",
    "check_training",
    "iter_layers",
    "specs_for",
    "tiny_dataset",
    "tiny_spec",
]

_FROM = {name: "zoo.kit.conformance" for name in __all__}
_FROM["check_layer"] = "zoo.kit.gradcheck"
for _name in ("check_optimizer", "check_loss", "check_dataset", "check_criterion",
              "check_schedule", "check_metric"):
    _FROM[_name] = "zoo.kit.components"


def __getattr__(name):
    if name in _FROM:
        value = getattr(importlib.import_module(_FROM[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zoo.testing' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])


try:
    import pytest
except ImportError:  # zoo.testing works without pytest; only the fixtures need it
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def zoo_conformance():
        """The conformance kit: ``zoo_conformance.check_architecture("mynet")``."""
        return sys.modules[__name__]

    @pytest.fixture
    def zoo_host():
        """A plugin host loaded from the installed entry points for this test, then forgotten.

        It is also the host ``zoo`` commands and checks use while the test runs.
        """
        from zoo import plugins

        plugins.reset_host()
        host = plugins.get_host()
        yield host
        plugins.reset_host()
