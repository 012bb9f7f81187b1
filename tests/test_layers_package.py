"""``zoo.layers`` names every layer, lazily, without importing numba."""

import subprocess
import sys

import zoo.layers
from zoo.layers.base import Layer


def test_every_public_name_is_a_layer_class():
    for name in zoo.layers.__all__:
        obj = getattr(zoo.layers, name)
        assert isinstance(obj, type), name
        if name != "Parameter":
            assert issubclass(obj, Layer), name


def test_importing_all_layers_does_not_import_numba():
    code = ("import sys, zoo.layers as L\n[getattr(L, n) for n in L.__all__]\n"
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
