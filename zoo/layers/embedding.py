"""Embeddings: token lookup (``Embedding``) and positions, learned or sinusoidal.

Kernels: ``zoo.kernels.embedding`` (the lookup's gather and its scatter-add backward).
"""

from __future__ import annotations

import numpy as np

from zoo import kernels
from zoo.checks import positive_int
from zoo.errors import ConfigError, DataError, describe_array
from zoo.layers.activations import accept_grad
from zoo.layers.base import Layer


class Embedding(Layer):
    """A table of ``num_embeddings`` vectors looked up by integer index. PyTorch's
    ``nn.Embedding``.

    Args:
        num_embeddings: size of the vocabulary; indices lie in ``[0, num_embeddings)``.
        embedding_dim: size of each vector.
        padding_idx: an index whose vector starts at zero and never gets a gradient (or None).

    Parameters: ``weight`` ``(num_embeddings, embedding_dim)`` (PyTorch's layout), initialised
    from N(0, 1) as in PyTorch.

    Input shape: ``(N, ...)`` of integers; integer arrays or floats holding whole numbers (zoo's
    datasets arrive as floats). Output shape: ``(N, ..., embedding_dim)``.

    The input is a set of indices, not a differentiable value: backward returns zeros for it.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, name=None):
        super().__init__(name)
        self.num_embeddings = positive_int("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = positive_int("Embedding", "embedding_dim", embedding_dim)
        if padding_idx is not None:
            ok = isinstance(padding_idx, (int, np.integer)) and not isinstance(padding_idx, bool)
            if not ok or not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ConfigError(f"Embedding: padding_idx must be an index in "
                                  f"[-{self.num_embeddings}, {self.num_embeddings}) or None; "
                                  f"received padding_idx={padding_idx!r}")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx

    def build(self, input_shape, rng):
        self.input_shape = tuple(input_shape)
        weight = rng.standard_normal((self.num_embeddings, self.embedding_dim))
        if self.padding_idx is not None:
            weight[self.padding_idx] = 0
        self.weight = self.add_parameter("weight", weight)
        self.output_shape = (*self.input_shape, self.embedding_dim)
        self.built = True
        return self.output_shape

    def _indices(self, x):
        x = np.asarray(x)
        self.check_input(x)
        if x.dtype.kind in "iu":
            indices = x.astype(np.int64, copy=False)
        elif x.dtype.kind == "f" and np.array_equal(x, np.floor(x)):
            indices = x.astype(np.int64)
        else:
            raise DataError(f"Embedding expects integer indices (or floats holding whole "
                            f"numbers); received {describe_array(x)}")
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_embeddings):
            raise DataError(f"Embedding expects indices in [0, {self.num_embeddings}); "
                            f"received values from {indices.min()} to {indices.max()}")
        return indices

    def forward(self, x, training=False):
        self._idx = self._indices(x)
        self._in = (x.shape, x.dtype if np.asarray(x).dtype.kind == "f" else self.dtype)
        return kernels.embedding.lookup(self.weight.value, self._idx)

    def backward(self, grad_out):
        grad_out = accept_grad(self, grad_out, (*self._idx.shape, self.embedding_dim))
        kernels.embedding.lookup_backward(
            grad_out, self._idx, self.num_embeddings,
            -1 if self.padding_idx is None else self.padding_idx, out=self.weight.grad)
        return np.zeros(*self._in)

    def get_config(self):
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim,
                "padding_idx": self.padding_idx}


class _Additive(Layer):
    """``x + table`` with a ``(T, E)`` table broadcast over the batch."""

    def _check_sequence(self, input_shape):
        if len(input_shape) != 2:
            raise ConfigError(f"{type(self).__name__} expects sequences (steps, features) per "
                              f"example; received input shape {tuple(input_shape)}")

    def _table(self):
        raise NotImplementedError

    def forward(self, x, training=False):
        self.check_input(x)
        self._shape = x.shape
        return np.add(x, self._table(), dtype=self.dtype)


class PositionalEmbedding(_Additive):
    """A learned vector per position added to a sequence: ``x + weight`` (BERT, ViT).

    PyTorch has no module for it; it is ``x + nn.Parameter(torch.empty(T, E))``.

    Parameters: ``weight`` ``(T, E)``, initialised from N(0, 0.02^2) (as BERT and ViT).

    Input shape: ``(N, T, E)``. Output shape: the same.
    """

    def build(self, input_shape, rng):
        self._check_sequence(input_shape)
        self.weight = self.add_parameter("weight", rng.standard_normal(input_shape) * 0.02)
        return super().build(input_shape, rng)

    def _table(self):
        return self.weight.value

    def backward(self, grad_out):
        grad_out = accept_grad(self, grad_out, self._shape)
        np.sum(grad_out, axis=0, out=self.weight.grad)
        return grad_out


def sinusoids(steps: int, features: int) -> np.ndarray:
    """Vaswani et al.'s table: ``sin(pos / 10000^(2i/E))`` in feature 2i, ``cos`` in 2i+1."""
    pos = np.arange(steps, dtype=np.float64)[:, None]
    freq = np.exp(-np.log(10000.0) * np.arange(0, features, 2) / features)
    table = np.zeros((steps, features))
    table[:, 0::2] = np.sin(pos * freq)
    table[:, 1::2] = np.cos(pos * freq[:features // 2])
    return table


class SinusoidalPositionalEncoding(_Additive):
    """Fixed sinusoids added to a sequence (Vaswani et al., "Attention Is All You Need",
    2017): feature 2i of step t gets ``sin(t / 10000^(2i/E))``, feature 2i+1 the cosine.

    The table PyTorch's transformer tutorial builds (its ``PositionalEncoding`` without the
    dropout: compose a ``Dropout`` if wanted). No parameters; nothing to save.

    Input shape: ``(N, T, E)``. Output shape: the same.
    """

    def build(self, input_shape, rng):
        self._check_sequence(input_shape)
        self._values = np.asarray(sinusoids(*input_shape), dtype=self.dtype)
        return super().build(input_shape, rng)

    def _table(self):
        return self._values

    def backward(self, grad_out):
        return accept_grad(self, grad_out, self._shape)
