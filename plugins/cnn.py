"""The ``cnn`` architecture: convolution blocks, then a dense head.

It adapts to the data: ``Conv1D`` over time on sequences ``(T, F)`` and on vectors ``(F,)``
(seen as a length-F sequence of one feature), ``Conv2D`` on images ``(C, H, W)``. Each block is
``depth`` convolutions (``same`` padding, optional batch norm, activation) and a 2x pooling
while the signal is at least 2 long; the head flattens (or global-average-pools) into dense
layers and a ``Dense(output_size)`` of logits. ``preset=lenet5`` builds LeNet-5 (LeCun et al.,
"Gradient-Based Learning Applied to Document Recognition", 1998), the benchmarks' ``cnn``
workload (docs/benchmarks.md).
``preset=mnist1d`` builds the MNIST-1D paper's ``ConvBase`` (Greydanus 2020): three
convolutions of 25 channels (kernels 5, 3, 3; stride 2; padding 1; relu), flattened into the
output layer, 5,210 parameters on MNIST-1D, trained as the paper did (``zoo_plugins._mnist1d``).

Registered through the entry point ``cnn = zoo_plugins.cnn`` exactly as a third-party plugin.
Layer imports stay inside the builder so listing plugins never imports numerics.
"""

from zoo_plugins import _mnist1d

from zoo.architecture import Architecture, Option
from zoo.hookspecs import hookimpl
from zoo.kernels import ACTIVATIONS

PRESETS = ("none", "lenet5", _mnist1d.PRESET)


def _layers_for(spec):
    """The layer classes for the data's kind and the spatial sizes the convolutions see."""
    from zoo.layers.conv import Conv1D, Conv2D
    from zoo.layers.pool import (
        AvgPool1D,
        AvgPool2D,
        GlobalAvgPool1D,
        GlobalAvgPool2D,
        MaxPool1D,
        MaxPool2D,
    )
    from zoo.layers.reshape import Reshape

    if spec.kind == "image":
        return (Conv2D, {"max": MaxPool2D, "avg": AvgPool2D}, GlobalAvgPool2D,
                list(spec.input_shape[1:]), [])
    pools = {"max": MaxPool1D, "avg": AvgPool1D}
    if spec.kind == "vector":
        # a vector (F,) is a length-F sequence of one feature
        return Conv1D, pools, GlobalAvgPool1D, [spec.input_shape[0]], [
            Reshape((spec.input_shape[0], 1))]
    return Conv1D, pools, GlobalAvgPool1D, [spec.input_shape[0]], []


def _activation(name):
    from zoo.layers.activations import get_activation

    return get_activation(name)


def build(spec, options):
    from zoo.layers.dense import Dense
    from zoo.layers.dropout import Dropout
    from zoo.layers.norm import BatchNorm
    from zoo.layers.reshape import Flatten
    from zoo.model import Sequential

    conv, pools, global_pool, sizes, layers = _layers_for(spec)
    if options["preset"] == "lenet5":
        return Sequential(layers + _lenet5(spec, conv, pools["max"], sizes), name="cnn-lenet5")
    if options["preset"] == _mnist1d.PRESET:
        return Sequential(layers + _mnist1d_convbase(spec, conv), name="cnn-mnist1d")
    kernel_size = options["kernel_size"] or (3 if spec.kind == "image" else 5)
    act, bn = options["activation"], options["batch_norm"]
    for channels in options["channels"]:
        for _ in range(options["depth"]):
            layers.append(conv(channels, kernel_size, padding="same", use_bias=not bn))
            if bn:
                layers.append(BatchNorm())
            layers.append(_activation(act))
        if options["pooling"] != "none" and min(sizes) >= 2:
            layers.append(pools[options["pooling"]](2))
            _pool_first(layers, options["pooling"])
            sizes = [s // 2 for s in sizes]
    layers.append(global_pool() if options["global_pool"] else Flatten())
    for units in options["hidden"]:
        if options["dropout"] > 0:
            layers.append(Dropout(options["dropout"]))
        layers.append(Dense(units, activation=act))
    if options["dropout"] > 0:
        layers.append(Dropout(options["dropout"]))
    layers.append(Dense(spec.output_size))
    return Sequential(layers, name="cnn")


MONOTONIC = ("relu", "leaky_relu", "tanh", "sigmoid")


def _pool_first(layers, pooling):
    """Swap a trailing ``activation, max-pool`` into ``max-pool, activation``.

    For a non-decreasing activation the two orders compute the same function (the max of the
    activated values is the activated max), and pooling first runs the activation on a quarter
    of the values (LeNet-5's step: ~5% faster).
    """
    act = layers[-2]
    if pooling == "max" and getattr(act, "activation", None) in MONOTONIC:
        layers[-2], layers[-1] = layers[-1], act


def _lenet5(spec, conv, pool, sizes):
    """conv5x5(6, pad 2)-relu-maxpool2-conv5x5(16)-relu-maxpool2-fc120-fc84-fc(out)
    (each relu-maxpool run as the equivalent maxpool-relu, see ``_pool_first``).

    On inputs too small for the second convolution's valid window it pads ("same"), and it
    skips a pooling once a side is down to 1, so the preset builds for any data.
    """
    from zoo.layers.dense import Dense
    from zoo.layers.reshape import Flatten

    layers = [conv(6, 5, padding=2), _activation("relu")]
    if min(sizes) >= 2:
        layers.append(pool(2))
        _pool_first(layers, "max")
        sizes = [s // 2 for s in sizes]
    layers += [conv(16, 5, padding="valid" if min(sizes) >= 5 else "same"), _activation("relu")]
    sizes = [s - 4 if min(sizes) >= 5 else s for s in sizes]
    if min(sizes) >= 2:
        layers.append(pool(2))
        _pool_first(layers, "max")
    return layers + [Flatten(), Dense(120, activation="relu"), Dense(84, activation="relu"),
                     Dense(spec.output_size)]


def _mnist1d_convbase(spec, conv):
    """conv(25, k5, s2, p1)-relu-conv(25, k3, s2, p1)-relu-conv(25, k3, s2, p1)-relu-flatten-fc:
    40 points become 19, 10, then 5 positions of 25 channels (125 features)."""
    from zoo.layers.dense import Dense
    from zoo.layers.reshape import Flatten

    layers = []
    for kernel in (5, 3, 3):
        layers += [conv(25, kernel, stride=2, padding=1, kernel_initializer=_mnist1d.CONV_INIT),
                   _activation("relu")]
    return layers + [Flatten(), Dense(spec.output_size, **_mnist1d.DENSE_INIT)]


OPTIONS = (
    Option("preset", str, "none", "a fixed classic network instead of the options below: "
           "lenet5 (LeNet-5, the benchmarks' cnn workload) or mnist1d (the MNIST-1D paper's "
           "ConvBase and its training)", PRESETS),
    Option("channels", "ints", (32, 64), "output channels of the convolutions of each block, "
           "e.g. 32,64 (each block ends with a 2x pooling)", minimum=1, min_items=1, log=True,
           search=(8, 64), search_items=(1, 3)),
    Option("kernel_size", int, 0, "convolution window (0 = 5 on sequences and vectors, "
           "3 on images)", minimum=0),
    Option("depth", int, 1, "convolutions per block", minimum=1, search=(1, 2)),
    Option("pooling", str, "max", "pooling at the end of each block", ("max", "avg", "none")),
    Option("batch_norm", bool, True, "batch normalisation after each convolution"),
    Option("global_pool", bool, False, "global average pooling instead of flattening before "
           "the head"),
    Option("hidden", "ints", (256,), "units of the dense layers of the head, e.g. 256 "
           "(empty for none)", minimum=1, log=True, search=(32, 512)),
    Option("activation", str, "relu", "activation after each convolution and hidden layer",
           ACTIVATIONS),
    Option("dropout", float, 0.25, "dropout rate before each dense layer (0 = none)",
           minimum=0, maximum=1, exclusive_maximum=True, search=(0.0, 0.5)),
)

# Defaults measured with ``zoo train --arch cnn --json`` over seeds 0-3 (test accuracy):
# mnist1d 95.1-96.3% (mean 95.7; with hidden=128 and no dropout 93.4-94.1%), digits
# 98.1-98.6% (mean 98.5; with hidden=128 and no dropout 97.5-99.4%).
CNN = Architecture(
    name="cnn",
    summary="convolutional network: Conv1D on sequences and vectors, Conv2D on images",
    tasks=("classify", "regress"),
    build=build,
    options=OPTIONS,
    defaults={"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "epochs": 50,
              "patience": 10},
    presets={_mnist1d.PRESET: _mnist1d.TRAINING},
    # zoo compare --tune: channels and blocks, convolutions per block, head width, dropout
    # (above), and Adam's learning rate.
    search={"lr": (3e-4, 1e-2)},
)


@hookimpl
def register_architectures(register):
    register(CNN)
