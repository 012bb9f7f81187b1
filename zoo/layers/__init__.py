"""Layers: the building blocks every architecture is made of.

``from zoo.layers import Dense, Conv2D, LSTM`` works; each name is imported from its module on
first use, so importing this package stays cheap (and never imports numba).
"""

import importlib

_WHERE = {
    "Layer": "base", "Parameter": "base",
    "Dense": "dense", "Dropout": "dropout", "GaussianNoise": "noise",
    "Activation": "activations", "ReLU": "activations", "LeakyReLU": "activations",
    "Tanh": "activations", "Sigmoid": "activations", "GELU": "activations",
    "Flatten": "reshape", "Reshape": "reshape",
    "Conv1D": "conv", "Conv2D": "conv", "BatchNorm": "norm",
    "MaxPool1D": "pool", "MaxPool2D": "pool", "AvgPool1D": "pool", "AvgPool2D": "pool",
    "GlobalAvgPool1D": "pool", "GlobalAvgPool2D": "pool",
    "GlobalMaxPool1D": "pool", "GlobalMaxPool2D": "pool",
    "Upsample1D": "resample", "Upsample2D": "resample",
    "SimpleRNN": "recurrent", "LSTM": "recurrent", "GRU": "recurrent",
    "Bidirectional": "recurrent",
    "ImageToSequence": "sequence", "VectorToSequence": "sequence", "TimeMean": "sequence",
    "Autoencoder": "autoencoder", "Standardize": "standardize", "Residual": "residual",
    "Add": "merge", "Multiply": "merge", "Concatenate": "merge", "Split": "merge",
    "LayerNorm": "layernorm", "RMSNorm": "layernorm", "MultiHeadAttention": "attention",
    "Embedding": "embedding", "PositionalEmbedding": "embedding",
    "SinusoidalPositionalEncoding": "embedding",
    "PatchEmbedding1D": "patch", "PatchEmbedding2D": "patch",
    "TransformerEncoderBlock": "transformer",
    "ResidualBlock1D": "residual", "ResidualBlock2D": "residual",
}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"zoo.layers.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zoo.layers' has no attribute {name!r}")


def __dir__():
    return __all__
