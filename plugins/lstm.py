"""The ``lstm`` architecture: long short-term memory (Hochreiter and Schmidhuber 1997).

Reads sequences natively, images row by row and vectors one value per step; see
``zoo_plugins._recurrent``. Registered through the entry point ``lstm = zoo_plugins.lstm``
exactly as a third-party plugin.
"""

from zoo_plugins._recurrent import architecture

from zoo.hookspecs import hookimpl

# Adam 5e-3 with clipping trains digits and mnist1d well within 40 epochs. The patience is
# long because on the adding problem the validation loss sits on the plateau of predicting the
# mean (MSE 1/6) for a dozen epochs before the LSTM finds the marked values.
LSTM = architecture(
    "lstm", "LSTM",
    "long short-term memory network (Hochreiter & Schmidhuber 1997): gated cells that keep "
    "information over long lags",
    defaults={"optimizer": "adam", "lr": 5e-3, "batch_size": 64, "epochs": 40, "patience": 20,
              "clip_norm": 1.0},
)


@hookimpl
def register_architectures(register):
    register(LSTM)
