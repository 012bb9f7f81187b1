"""The ``rnn`` architecture: a fully connected tanh recurrent network (Elman 1990).

Reads sequences natively, images row by row and vectors one value per step; see
``zoo_plugins._recurrent``. Registered through the entry point ``rnn = zoo_plugins.rnn``
exactly as a third-party plugin.
"""

from zoo_plugins._recurrent import architecture

from zoo.hookspecs import hookimpl

RNN = architecture(
    "rnn", "SimpleRNN",
    "recurrent network with tanh units (Elman 1990), trained by backprop through time",
    defaults={"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "epochs": 80, "patience": 10,
              "clip_norm": 1.0},
)


@hookimpl
def register_architectures(register):
    register(RNN)
