"""Patch embeddings: cut a signal or an image into non-overlapping pieces, map each to a vector.

The tokens a transformer reads when its input is not already a sequence of vectors (Dosovitskiy
et al., "An Image is Worth 16x16 Words", 2020). Each is PyTorch's convolution with
``kernel_size = stride = patch_size`` followed by ``flatten(2).transpose(1, 2)``: the same
weight layout, the same result. Cutting is a reshape and one copy; the map is one GEMM.
"""

from __future__ import annotations

import math

import numpy as np

from zoo.checks import int_tuple, positive_int
from zoo.errors import ConfigError
from zoo.layers.activations import accept_grad
from zoo.layers.attention import Gemms
from zoo.layers.base import Layer


class _Patches(Layer):
    """What both share: parameters, the GEMM and its gradients on cut-out patches."""

    def _add_parameters(self, shape, rng):
        fan_in = math.prod(shape[1:])
        bound = 1.0 / math.sqrt(fan_in)  # PyTorch's default for a convolution
        self.weight = self.add_parameter("weight", rng.uniform(-bound, bound, shape))
        self.bias = self.add_parameter("bias", rng.uniform(-bound, bound, shape[0]))
        self._gemm = Gemms()
        self._dt = np.dtype(self.dtype)

    def _project(self, patches, w2, training):
        """``patches (P, K) @ w2 (K, E) + bias``."""
        out = np.empty((len(patches), self.embed_dim), self._dt)
        self._gemm(patches, w2, out)
        out += self.bias.value
        self._patches = patches
        return out

    def _project_backward(self, g2, w2):
        """Gradients of ``_project``: returns ``(d patches, d w2)``; sets the bias gradient."""
        np.sum(g2, axis=0, out=self.bias.grad)
        dw2 = np.empty(w2.shape, self._dt)
        self._gemm(self._patches.T, g2, dw2)
        dp = np.empty(self._patches.shape, self._dt)
        self._gemm(g2, np.ascontiguousarray(w2.T), dp)
        return dp, dw2


class PatchEmbedding1D(_Patches):
    """Segments of ``patch_size`` steps, each mapped linearly to ``embed_dim`` features.

    A sequence ``(T, F)`` becomes ``ceil(T / patch_size)`` tokens; a vector ``(F,)`` is a
    sequence of F steps of one feature. A last, short segment is padded with zeros (PyTorch's
    convolution would drop it; padding first gives the same as here).

    PyTorch: ``nn.Conv1d(F, embed_dim, patch_size, stride=patch_size)`` on ``x.transpose(1, 2)``
    then ``.transpose(1, 2)``.

    Parameters: ``weight`` ``(embed_dim, F, patch_size)`` (Conv1d's layout), ``bias``
    ``(embed_dim,)``, both uniform in +-1/sqrt(F * patch_size) as in PyTorch.

    Input shape: ``(N, T, F)`` or ``(N, F)``. Output shape: ``(N, ceil(T / patch_size),
    embed_dim)``.
    """

    def __init__(self, patch_size, embed_dim, name=None):
        super().__init__(name)
        self.patch_size = positive_int("PatchEmbedding1D", "patch_size", patch_size)
        self.embed_dim = positive_int("PatchEmbedding1D", "embed_dim", embed_dim)

    def build(self, input_shape, rng):
        input_shape = tuple(input_shape)
        if len(input_shape) not in (1, 2):
            raise ConfigError(f"PatchEmbedding1D expects vectors (features,) or sequences "
                              f"(steps, features) per example; received input shape "
                              f"{input_shape}")
        steps, features = (input_shape[0], 1) if len(input_shape) == 1 else input_shape
        self.tokens = -(-steps // self.patch_size)
        self._steps, self._features = steps, features
        self._add_parameters((self.embed_dim, features, self.patch_size), rng)
        self.input_shape = input_shape
        self.output_shape = (self.tokens, self.embed_dim)
        self.built = True
        return self.output_shape

    def _w2(self):
        # (E, F, p) -> (p * F, E): rows in the order a segment of (p, F) values is laid out
        return self.weight.value.transpose(2, 1, 0).reshape(-1, self.embed_dim)

    def forward(self, x, training=False):
        self.check_input(x)
        n, p, f = len(x), self.patch_size, self._features
        seq = np.asarray(x, self._dt).reshape(n, self._steps, f)
        pad = self.tokens * p - self._steps
        if pad:
            seq = np.concatenate([seq, np.zeros((n, pad, f), self._dt)], axis=1)
        patches = np.ascontiguousarray(seq).reshape(n * self.tokens, p * f)
        self._n = n
        out = self._project(patches, self._w2(), training)
        return out.reshape(n, self.tokens, self.embed_dim)

    def backward(self, grad_out):
        grad_out = accept_grad(self, grad_out, (self._n, *self.output_shape))
        g2 = grad_out.reshape(-1, self.embed_dim)
        dp, dw2 = self._project_backward(g2, self._w2())
        self.weight.grad[...] = dw2.reshape(self.patch_size, self._features,
                                            self.embed_dim).transpose(2, 1, 0)
        dx = dp.reshape(self._n, self.tokens * self.patch_size, self._features)[:, :self._steps]
        return np.ascontiguousarray(dx).reshape(self._n, *self.input_shape)

    def get_config(self):
        return {"patch_size": self.patch_size, "embed_dim": self.embed_dim}


class PatchEmbedding2D(_Patches):
    """Image patches of ``patch_size`` pixels, each mapped linearly to ``embed_dim`` features
    (ViT's patch embedding). Patches are read row by row; an image whose sides are not
    multiples of the patch is padded with zeros at the bottom and right.

    PyTorch: ``nn.Conv2d(C, embed_dim, patch_size, stride=patch_size)`` then
    ``.flatten(2).transpose(1, 2)``.

    Parameters: ``weight`` ``(embed_dim, C, ph, pw)`` (Conv2d's layout), ``bias``
    ``(embed_dim,)``, both uniform in +-1/sqrt(C * ph * pw) as in PyTorch.

    Input shape: ``(N, C, H, W)``. Output shape: ``(N, ceil(H / ph) * ceil(W / pw),
    embed_dim)``.
    """

    def __init__(self, patch_size, embed_dim, name=None):
        super().__init__(name)
        self.patch_size = int_tuple("PatchEmbedding2D", "patch_size", patch_size, 2)
        self.embed_dim = positive_int("PatchEmbedding2D", "embed_dim", embed_dim)

    def build(self, input_shape, rng):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ConfigError(f"PatchEmbedding2D expects images (channels, height, width) per "
                              f"example; received input shape {input_shape}")
        c, h, w = input_shape
        ph, pw = self.patch_size
        self.grid = (-(-h // ph), -(-w // pw))
        self._add_parameters((self.embed_dim, c, ph, pw), rng)
        self.input_shape = input_shape
        self.output_shape = (self.grid[0] * self.grid[1], self.embed_dim)
        self.built = True
        return self.output_shape

    def forward(self, x, training=False):
        self.check_input(x)
        n, (c, h, w), (ph, pw), (gh, gw) = len(x), self.input_shape, self.patch_size, self.grid
        img = np.asarray(x, self._dt)
        if (gh * ph, gw * pw) != (h, w):
            padded = np.zeros((n, c, gh * ph, gw * pw), self._dt)
            padded[:, :, :h, :w] = img
            img = padded
        # (N, C, gh, ph, gw, pw) -> (N, gh, gw, C, ph, pw): one patch per row
        patches = np.ascontiguousarray(
            img.reshape(n, c, gh, ph, gw, pw).transpose(0, 2, 4, 1, 3, 5)).reshape(
            n * gh * gw, c * ph * pw)
        self._n = n
        out = self._project(patches, self.weight.value.reshape(self.embed_dim, -1).T, training)
        return out.reshape(n, gh * gw, self.embed_dim)

    def backward(self, grad_out):
        grad_out = accept_grad(self, grad_out, (self._n, *self.output_shape))
        n, (c, h, w), (ph, pw), (gh, gw) = self._n, self.input_shape, self.patch_size, self.grid
        g2 = grad_out.reshape(-1, self.embed_dim)
        dp, dw2 = self._project_backward(g2, self.weight.value.reshape(self.embed_dim, -1).T)
        self.weight.grad[...] = dw2.T.reshape(self.weight.grad.shape)
        img = dp.reshape(n, gh, gw, c, ph, pw).transpose(0, 3, 1, 4, 2, 5).reshape(
            n, c, gh * ph, gw * pw)
        return np.ascontiguousarray(img[:, :, :h, :w])

    def get_config(self):
        ph, pw = self.patch_size
        return {"patch_size": ph if ph == pw else self.patch_size, "embed_dim": self.embed_dim}
