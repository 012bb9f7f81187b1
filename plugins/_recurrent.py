"""What the ``rnn``, ``lstm`` and ``gru`` architectures share: options and the builder.

The model adapts to the data: sequences ``(T, F)`` are read natively, images ``(C, H, W)``
row by row (H steps of C*W features) and vectors ``(F,)`` one value per step (F steps of one
feature). Then ``layers`` recurrent layers (optionally bidirectional, with dropout between
them), a readout of the last step or of the mean over time, and a ``Dense(output_size)`` head
(logits for classify).

Not a plugin itself (no entry point): ``zoo_plugins.rnn``, ``.lstm`` and ``.gru`` each call
``architecture`` with their cell. Layer imports stay inside the builder so listing plugins
never imports numerics.
"""

from zoo_plugins import _mnist1d

from zoo.architecture import Architecture, Option

READOUTS = ("last", "mean")

OPTIONS = (
    Option("hidden", int, 128, "units of each recurrent layer (per direction)", minimum=1,
           log=True, search=(16, 256)),
    Option("layers", int, 1, "stacked recurrent layers", minimum=1, search=(1, 2)),
    Option("bidirectional", bool, False, "read each sequence both ways and concatenate",
           search=(False, True)),
    Option("dropout", float, 0.0, "dropout rate after each recurrent layer (0 = none)",
           minimum=0, maximum=1, exclusive_maximum=True, search=(0.0, 0.5)),
    Option("readout", str, "last", "what feeds the head: the last step's state or the mean "
           "of all steps' states", READOUTS),
)


PRESET_OPTION = Option(
    "preset", str, "none", "mnist1d: the MNIST-1D paper's GRU (bidirectional, 6 units, every "
    "step's state flattened into the output layer) and its training; the options below are "
    "then unused", ("none", _mnist1d.PRESET))


def _mnist1d_grubase(spec, cell):
    """The MNIST-1D paper's ``GRUBase`` (Greydanus 2020): a bidirectional layer of 6 units
    returning every step, flattened (T * 12 features) into the output layer, which starts
    from PyTorch's default initialisation as the reference's ``nn.Linear`` does."""
    from zoo.layers import recurrent
    from zoo.layers.dense import Dense
    from zoo.layers.reshape import Flatten

    return [recurrent.Bidirectional(cell(6, return_sequences=True)), Flatten(),
            Dense(spec.output_size, **_mnist1d.DENSE_INIT)]


def builder(name, cell_name):
    """A ``build(spec, options)`` for recurrent layers of class ``zoo.layers.recurrent.<cell>``."""

    def build(spec, options):
        from zoo.layers import recurrent
        from zoo.layers.dense import Dense
        from zoo.layers.dropout import Dropout
        from zoo.layers.sequence import ImageToSequence, TimeMean, VectorToSequence
        from zoo.model import Sequential

        cell = getattr(recurrent, cell_name)
        layers = []
        if spec.kind == "image":
            layers.append(ImageToSequence())
        elif spec.kind == "vector":
            layers.append(VectorToSequence())
        if options.get("preset") == _mnist1d.PRESET:
            return Sequential(layers + _mnist1d_grubase(spec, cell), name=f"{name}-mnist1d")
        depth, mean = options["layers"], options["readout"] == "mean"
        for i in range(depth):
            layer = cell(options["hidden"], return_sequences=mean or i < depth - 1)
            layers.append(recurrent.Bidirectional(layer) if options["bidirectional"] else layer)
            if options["dropout"] > 0:
                layers.append(Dropout(options["dropout"]))
        if mean:
            layers.append(TimeMean())
        layers.append(Dense(spec.output_size))
        return Sequential(layers, name=name)

    return build


def architecture(name, cell_name, summary, defaults, presets=None) -> Architecture:
    """The architecture of one cell; ``presets`` (training defaults by preset name) adds the
    ``preset`` option (only ``mnist1d`` is built, for the GRU of the MNIST-1D paper)."""
    options = OPTIONS + ((PRESET_OPTION,) if presets else ())
    return Architecture(name=name, summary=summary, tasks=("classify", "regress"),
                        build=builder(name, cell_name), options=options, defaults=defaults,
                        presets=dict(presets or {}),
                        # zoo compare --tune: Adam's learning rate (gradients clipped) around
                        # the cells' defaults, besides the options' ranges above.
                        search={"lr": (5e-4, 2e-2)})
