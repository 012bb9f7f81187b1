"""The ``transformer`` architecture: a pre-norm transformer encoder over tokens, then a head.

It adapts to the data: a sequence ``(T, F)`` is cut into segments of ``patch_size`` steps,
a vector ``(F,)`` into segments of ``patch_size`` values (a sequence of one feature), an image
``(C, H, W)`` into ``patch_size`` x ``patch_size`` patches (ViT: Dosovitskiy et al., "An Image is
Worth 16x16 Words", 2020); each piece becomes a token of ``d_model`` features by one linear map.
By default a convolution stem (``stem`` channels, batch norm, ReLU) runs before the cut, so
that each token carries local features (early convolutions: Xiao et al. 2021, the hybrid ViT):
on mnist1d it is the difference between ~87% (``stem=0``, a pure transformer) and ~96%.
Positions are added (learned, or Vaswani's sinusoids), ``layers`` encoder blocks follow
(``zoo.layers.TransformerEncoderBlock``: pre-norm self-attention and a GELU MLP, each around a
residual connection), then a final LayerNorm, the mean (or max) over tokens, and a
``Dense(output_size)`` of logits.

Registered through the entry point ``transformer = zoo_plugins.transformer`` exactly as a
third-party plugin. Layer imports stay inside the builder so listing plugins never imports
numerics.
"""

from zoo.architecture import Architecture, Option
from zoo.hookspecs import hookimpl

POSITIONS = ("learned", "sinusoidal")
POOLINGS = ("mean", "max")
ACTIVATIONS = ("gelu_erf", "gelu", "relu", "leaky_relu", "tanh", "sigmoid")


def auto_patch(spec) -> int:
    """The default patch: about 10 tokens for vectors, 16 patches for images, every step its
    own token for sequences."""
    if spec.kind == "sequence":
        return 1
    if spec.kind == "vector":
        return max(1, spec.input_shape[0] // 10)
    side = min(spec.input_shape[1:])
    return max(1, side // 4)


def _check_options(options):
    """What the options' own bounds cannot say: the heads must split d_model evenly."""
    from zoo.errors import ConfigError

    if options["d_model"] % options["heads"]:
        raise ConfigError(f"transformer: option heads must be a divisor of "
                          f"d_model={options['d_model']}; received heads={options['heads']}")


def build(spec, options):
    from zoo.layers.dense import Dense
    from zoo.layers.embedding import PositionalEmbedding, SinusoidalPositionalEncoding
    from zoo.layers.layernorm import LayerNorm
    from zoo.layers.patch import PatchEmbedding1D, PatchEmbedding2D
    from zoo.layers.pool import GlobalMaxPool1D
    from zoo.layers.sequence import TimeMean
    from zoo.layers.transformer import TransformerEncoderBlock
    from zoo.model import Sequential

    _check_options(options)
    d = options["d_model"]
    patch = options["patch_size"] or auto_patch(spec)
    embed = PatchEmbedding2D if spec.kind == "image" else PatchEmbedding1D
    layers = _stem(spec, options["stem"]) + [embed(patch, d)]
    layers.append(PositionalEmbedding() if options["position"] == "learned"
                  else SinusoidalPositionalEncoding())
    for _ in range(options["layers"]):
        layers.append(TransformerEncoderBlock(options["heads"], options["mlp_dim"] or 2 * d,
                                              dropout=options["dropout"],
                                              activation=options["activation"]))
    layers.append(LayerNorm())
    layers.append(TimeMean() if options["pooling"] == "mean" else GlobalMaxPool1D())
    layers.append(Dense(spec.output_size))
    return Sequential(layers, name="transformer")


def _stem(spec, channels):
    """Early convolutions (Xiao et al., "Early Convolutions Help Transformers See Better",
    2021; the hybrid ViT of Dosovitskiy et al.): a 'same' convolution, batch norm and ReLU
    before the patches are cut, so each token carries local features of its neighbourhood."""
    if not channels:
        return []
    from zoo.layers.activations import ReLU
    from zoo.layers.conv import Conv1D, Conv2D
    from zoo.layers.norm import BatchNorm
    from zoo.layers.reshape import Reshape

    if spec.kind == "image":
        return [Conv2D(channels, 3, padding="same", use_bias=False), BatchNorm(), ReLU()]
    layers = [Reshape((spec.input_shape[0], 1))] if spec.kind == "vector" else []
    return layers + [Conv1D(channels, 5, padding="same", use_bias=False), BatchNorm(), ReLU()]


OPTIONS = (
    Option("d_model", int, 32, "features per token (the model width)", minimum=1, log=True),
    Option("heads", int, 4, "attention heads per block (must divide d_model)", minimum=1),
    Option("layers", int, 2, "encoder blocks", minimum=1, search=(1, 3)),
    Option("mlp_dim", int, 0, "hidden units of each block's MLP (0 = 2 * d_model)",
           minimum=0, search=(32, 256)),
    Option("patch_size", int, 0, "steps (sequences), values (vectors) or pixels per side "
           "(images) per token; 0 = 1 step for sequences, F // 10 values for vectors, side // 4 "
           "pixels for images", minimum=0),
    Option("stem", int, 32, "channels of a convolution (with batch norm and ReLU) before the "
           "patches are cut; 0 = none, a pure transformer", minimum=0),
    Option("position", str, "learned", "position information added to the tokens", POSITIONS),
    Option("pooling", str, "mean", "how the tokens become one vector for the head", POOLINGS),
    Option("activation", str, "gelu_erf", "the MLPs' activation (gelu_erf is the exact GELU)",
           ACTIVATIONS),
    Option("dropout", float, 0.1, "dropout rate in every block (attention weights, after "
           "attention, in the MLP)", minimum=0, maximum=1, exclusive_maximum=True,
           search=(0.0, 0.3)),
)

# Defaults measured with ``zoo.run.train`` (test accuracy, seeds 0-2): mnist1d 96.5 / 95.5 / 95.0%
# (mean 95.7; stem=0, the pure transformer, 86-87%), digits 96.4% (seed 0); sine r2 0.98.
# One step costs ~1.3x cnn's (CPU time of a whole mnist1d run, one thread: 19 s against 15 s).
TRANSFORMER = Architecture(
    name="transformer",
    summary="transformer encoder (Vaswani et al. 2017) over time steps, segments or patches",
    tasks=("classify", "regress"),
    build=build,
    options=OPTIONS,
    defaults={"optimizer": "adamw", "lr": 1e-3, "batch_size": 64, "epochs": 50,
              "patience": 10, "clip_norm": 1.0},
    # zoo compare --tune: depth, MLP width, dropout (above) and the learning rate. The width
    # d_model is not searched: every drawn value would have to divide by the head count.
    search={"lr": (1e-4, 3e-3)},
)


@hookimpl
def register_architectures(register):
    register(TRANSFORMER)
