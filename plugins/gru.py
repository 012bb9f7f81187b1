"""The ``gru`` architecture: gated recurrent units (Cho et al. 2014), reset-after variant.

Reads sequences natively, images row by row and vectors one value per step; see
``zoo_plugins._recurrent``. ``preset=mnist1d`` builds the MNIST-1D paper's ``GRUBase``
(bidirectional, 6 units, all steps flattened into the output layer; 5,134 parameters on
MNIST-1D) and trains it as the paper did (``zoo_plugins._mnist1d``). Registered through the
entry point ``gru = zoo_plugins.gru`` exactly as a third-party plugin.
"""

from zoo_plugins import _mnist1d
from zoo_plugins._recurrent import architecture

from zoo.hookspecs import hookimpl

GRU = architecture(
    "gru", "GRU",
    "gated recurrent unit network (Cho et al. 2014): LSTM-like gating with fewer parameters",
    defaults={"optimizer": "adam", "lr": 5e-3, "batch_size": 64, "epochs": 40, "patience": 8,
              "clip_norm": 1.0},
    presets={_mnist1d.PRESET: _mnist1d.TRAINING},
)


@hookimpl
def register_architectures(register):
    register(GRU)
