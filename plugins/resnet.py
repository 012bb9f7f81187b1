"""The ``resnet`` architecture: a residual convolutional network (He et al., "Deep Residual
Learning for Image Recognition", 2016), Conv2D on images and Conv1D on sequences and vectors.

A stem convolution (batch norm, ReLU) lifts the input to ``channels[0]`` channels; then one
stage per entry of ``channels``, each ``blocks`` residual blocks (torchvision's ``BasicBlock``:
``zoo.layers.ResidualBlock2D`` / ``ResidualBlock1D``), every stage after the first starting
with a stride-2 block that halves the resolution; then global average (or max) pooling,
optional dropout and a ``Dense(output_size)`` of logits. A vector ``(F,)`` is read as a
length-F sequence of one feature.

Registered through the entry point ``resnet = zoo_plugins.resnet`` exactly as a third-party
plugin. Layer imports stay inside the builder so listing plugins never imports numerics.
"""

from zoo.architecture import Architecture, Option
from zoo.hookspecs import hookimpl

POOLINGS = ("avg", "max")


def _check_options(options):
    """What the options' own bounds cannot say: an even window has no centre."""
    from zoo.errors import ConfigError

    if options["kernel_size"] % 2 == 0 and options["kernel_size"] != 0:
        raise ConfigError(f"resnet: option kernel_size must be odd (or 0 for the default); "
                          f"received kernel_size={options['kernel_size']}")


def build(spec, options):
    from zoo.layers.activations import ReLU
    from zoo.layers.conv import Conv1D, Conv2D
    from zoo.layers.dense import Dense
    from zoo.layers.dropout import Dropout
    from zoo.layers.norm import BatchNorm
    from zoo.layers.pool import (
        GlobalAvgPool1D,
        GlobalAvgPool2D,
        GlobalMaxPool1D,
        GlobalMaxPool2D,
    )
    from zoo.layers.reshape import Reshape
    from zoo.layers.residual import ResidualBlock1D, ResidualBlock2D
    from zoo.model import Sequential

    _check_options(options)
    image = spec.kind == "image"
    kernel = options["kernel_size"] or (3 if image else 5)
    conv, block = (Conv2D, ResidualBlock2D) if image else (Conv1D, ResidualBlock1D)
    layers = []
    if spec.kind == "vector":
        layers.append(Reshape((spec.input_shape[0], 1)))
    # the spatial size the blocks see: a stride-2 block needs at least 2 to halve
    size = min(spec.input_shape[1:]) if image else spec.input_shape[0]
    channels = options["channels"]
    layers += [conv(channels[0], kernel, padding=kernel // 2, use_bias=False), BatchNorm(),
               ReLU()]
    for stage, width in enumerate(channels):
        for i in range(options["blocks"]):
            stride = 2 if stage > 0 and i == 0 and size >= 2 else 1
            size = -(-size // stride)
            layers.append(block(width, stride=stride, kernel_size=kernel))
    pools = {"avg": GlobalAvgPool2D if image else GlobalAvgPool1D,
             "max": GlobalMaxPool2D if image else GlobalMaxPool1D}
    layers.append(pools[options["pooling"]]())
    if options["dropout"] > 0:
        layers.append(Dropout(options["dropout"]))
    layers.append(Dense(spec.output_size))
    return Sequential(layers, name="resnet")


OPTIONS = (
    Option("channels", "ints", (16, 32), "channels of each stage, e.g. 16,32 (every stage "
           "after the first halves the resolution)", minimum=1, min_items=1, log=True,
           search=(8, 64), search_items=(1, 3)),
    Option("blocks", int, 1, "residual blocks per stage", minimum=1, search=(1, 2)),
    Option("kernel_size", int, 0, "convolution window, odd (0 = 5 on sequences and vectors, "
           "3 on images)", minimum=0),
    Option("pooling", str, "avg", "global pooling before the head", POOLINGS),
    Option("dropout", float, 0.0, "dropout rate before the head (0 = none)", minimum=0,
           maximum=1, exclusive_maximum=True, search=(0.0, 0.3)),
)

# Defaults measured with ``zoo.run.train`` (test accuracy, seeds 0-2): mnist1d 97.3 / 98.3 /
# 98.2% (mean 97.9; channels=32,64: 97.7% on seed 0 at ~3x the cost per step), digits 98.6%
# (seed 0). A whole mnist1d run costs about what cnn's does (CPU time, one thread: 13-18 s
# against 15 s).
RESNET = Architecture(
    name="resnet",
    summary="residual convolutional network (He et al. 2016): Conv2D on images, Conv1D on "
            "sequences and vectors",
    tasks=("classify", "regress"),
    build=build,
    options=OPTIONS,
    defaults={"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "epochs": 50,
              "patience": 10},
    # zoo compare --tune: width and number of stages, depth per stage, dropout (above), lr.
    search={"lr": (3e-4, 3e-3)},
)


@hookimpl
def register_architectures(register):
    register(RESNET)
