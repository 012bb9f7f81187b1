"""The ``autoencoder`` architecture: an encoder to a small code and a mirrored decoder back.

It reconstructs its input (the task ``reconstruct``; on labelled data the run reports the
accuracy of a linear probe on the codes too). Dense by default: flatten, hidden layers, the
code, the hidden layers in reverse, back to the input's shape (Hinton and Salakhutdinov,
"Reducing the Dimensionality of Data with Neural Networks", Science, 2006). ``variant=conv``
on images, sequences and vectors (seen as a length-F sequence of one feature): strided
convolutions down, a dense code, then nearest upsampling + convolution up, which avoids the
checkerboard artefacts of transposed convolutions (Odena et al., Distill, 2016).
``noise=0.2`` makes it a denoising autoencoder: Gaussian noise on the input while training,
scored on clean inputs (Vincent et al., ICML 2008).

Output and loss fit the data: inputs within [0, 1] get logits scored by binary cross-entropy
(its ``activate`` is the sigmoid that gives the reconstruction), other inputs a linear output
and mean squared error; ``loss=mse|bce`` overrides.

Registered through the entry point ``autoencoder = zoo_plugins.autoencoder`` exactly as a
third-party plugin. Layer imports stay inside the builder so listing plugins never imports
numerics.
"""

import math

from zoo.architecture import Architecture, Option
from zoo.hookspecs import hookimpl
from zoo.kernels import ACTIVATIONS

LOSSES = ("auto", "mse", "bce")


def choose_loss(spec, options) -> str:
    """``bce`` for inputs known to lie within [0, 1], else ``mse``, unless the user chose."""
    if options["loss"] != "auto":
        return options["loss"]
    low_high = spec.input_range
    return "bce" if low_high is not None and low_high[0] >= 0 and low_high[1] <= 1 else "mse"


def _check_fits(spec, options):
    """What the option declarations cannot say: an odd window, and bce only on [0, 1] data."""
    from zoo.errors import ConfigError

    kernel_size = options["kernel_size"]
    if kernel_size % 2 == 0 and kernel_size != 0:  # same-size convolutions need a centre tap
        raise ConfigError(f"autoencoder: option kernel_size must be an odd positive integer "
                          f"(or 0 for the default); received kernel_size={kernel_size}")
    if options["loss"] == "bce" and spec.input_range is not None \
            and not (spec.input_range[0] >= 0 and spec.input_range[1] <= 1):
        low, high = spec.input_range
        raise ConfigError(f"autoencoder: loss=bce needs inputs within [0, 1]; dataset "
                          f"{spec.name or '(given)'} ranges from {low:g} to {high:g} "
                          f"(use loss=mse)")


def build(spec, options):
    from zoo.layers.autoencoder import Autoencoder
    from zoo.layers.noise import GaussianNoise
    from zoo.model import Sequential

    _check_fits(spec, options)
    make = _conv if options["variant"] == "conv" else _dense
    encoder, decoder = make(spec, options)
    if options["noise"] > 0:
        encoder.insert(0, GaussianNoise(options["noise"]))
    return Autoencoder(Sequential(encoder, name="encoder"), Sequential(decoder, name="decoder"),
                       name=f"autoencoder-{options['variant']}")


def _dense(spec, options):
    """flatten -> hidden... -> code | hidden reversed... -> input size -> input shape."""
    from zoo.layers.dense import Dense
    from zoo.layers.reshape import Flatten, Reshape

    act, hidden = options["activation"], options["hidden"]
    shaped = len(spec.input_shape) > 1
    encoder = [Flatten()] if shaped else []
    encoder += [Dense(units, activation=act) for units in hidden]
    encoder.append(Dense(options["code_size"]))
    decoder = [Dense(units, activation=act) for units in reversed(hidden)]
    decoder.append(Dense(spec.input_size))
    if shaped:
        decoder.append(Reshape(spec.input_shape))
    return encoder, decoder


def _conv(spec, options):
    """Strided convolutions down, dense code, upsample + convolution up, mirrored.

    A level halves an axis only while it is even and at least 4 long, so upsampling restores
    the exact size without cropping; other levels keep the size (stride 1, no upsampling).
    """
    from zoo.layers.activations import get_activation
    from zoo.layers.conv import Conv1D, Conv2D
    from zoo.layers.dense import Dense
    from zoo.layers.resample import Upsample1D, Upsample2D
    from zoo.layers.reshape import Flatten, Reshape

    act, channels = options["activation"], options["channels"]
    image = spec.kind == "image"
    conv, upsample = (Conv2D, Upsample2D) if image else (Conv1D, Upsample1D)
    kernel_size = options["kernel_size"] or (3 if image else 5)
    if spec.kind == "vector":  # a vector (F,) is a length-F sequence of one feature
        shape = (spec.input_shape[0], 1)
        encoder, tail = [Reshape(shape)], [Reshape(spec.input_shape)]
    else:
        shape, encoder, tail = spec.input_shape, [], []
    sizes = list(shape[1:]) if image else [shape[0]]
    in_channels = shape[0] if image else shape[1]

    strides = []
    for ch in channels:
        stride = tuple(2 if s % 2 == 0 and s >= 4 else 1 for s in sizes)
        sizes = [s // f for s, f in zip(sizes, stride)]
        strides.append(stride)
        encoder += [conv(ch, kernel_size, stride=stride if image else stride[0], padding="same"),
                    get_activation(act)]
    flat_shape = (channels[-1], *sizes) if image else (sizes[0], channels[-1])
    encoder += [Flatten(), Dense(options["code_size"])]

    decoder = [Dense(math.prod(flat_shape), activation=act), Reshape(flat_shape)]
    outs = [*reversed(channels[:-1]), in_channels]
    for i, (stride, ch) in enumerate(zip(reversed(strides), outs)):
        if max(stride) > 1:
            decoder.append(upsample(stride if image else stride[0]))
        decoder.append(conv(ch, kernel_size, padding="same"))
        if i < len(outs) - 1:
            decoder.append(get_activation(act))
    return encoder, decoder + tail


OPTIONS = (
    Option("variant", str, "dense", "dense: flatten and dense layers; conv: strided "
           "convolutions down and upsampling + convolutions up (images, sequences, vectors)",
           ("dense", "conv")),
    Option("code_size", int, 32, "size of the code the encoder compresses each example to",
           minimum=1, log=True, search=(8, 128)),
    Option("hidden", "ints", (256,), "dense variant: units of the encoder's hidden layers, "
           "mirrored in the decoder, e.g. 256,64 (empty for none)", minimum=1, log=True,
           search=(64, 512), search_items=(1, 2)),
    Option("channels", "ints", (16, 32), "conv variant: channels of each level, mirrored in the "
           "decoder; a level halves the signal where its size allows", minimum=1, min_items=1,
           log=True),
    Option("kernel_size", int, 0, "conv variant: convolution window, odd (0 = 3 on images, 5 "
           "on sequences and vectors)", minimum=0),
    Option("activation", str, "relu", "activation after each hidden layer", ACTIVATIONS),
    Option("noise", float, 0.0, "denoising: standard deviation of the Gaussian noise added to "
           "the input while training (scored on clean inputs; 0 = none)", minimum=0,
           search=(0.0, 0.3)),
    Option("loss", str, "auto", "auto: binary cross-entropy on sigmoid outputs for inputs within "
           "[0, 1], else mean squared error on linear outputs", LOSSES),
)

AUTOENCODER = Architecture(
    name="autoencoder",
    summary="autoencoder: encoder to a small code and a mirrored decoder (dense or conv, "
            "denoising)",
    tasks=("reconstruct",),
    build=build,
    options=OPTIONS,
    loss=choose_loss,
    defaults={"optimizer": "adam", "lr": 2e-3, "batch_size": 64, "epochs": 100,
              "patience": 10},
    # zoo compare --tune: code size, hidden widths and depth, input noise (above), and lr.
    search={"lr": (5e-4, 1e-2)},
)


@hookimpl
def register_architectures(register):
    register(AUTOENCODER)
