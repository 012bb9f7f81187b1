"""The ``gru`` architecture: gated recurrent units (Cho et al. 2014), reset-after variant.

Reads sequences natively, images row by row and vectors one value per step; see
``zoo_plugins._recurrent``. Registered through the entry point ``gru = zoo_plugins.gru``
exactly as a third-party plugin.
"""

from zoo_plugins._recurrent import architecture

from zoo.hookspecs import hookimpl

GRU = architecture(
    "gru", "GRU",
    "gated recurrent unit network (Cho et al. 2014): LSTM-like gating with fewer parameters",
    defaults={"optimizer": "adam", "lr": 5e-3, "batch_size": 64, "epochs": 40, "patience": 8,
              "clip_norm": 1.0},
)


@hookimpl
def register_architectures(register):
    register(GRU)
