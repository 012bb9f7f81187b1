"""Multi-head self-attention (Vaswani et al., "Attention Is All You Need", 2017).

The four products (input projection, ``Q K^T``, ``P V``, output projection) and their
gradients run in numpy's BLAS; the masked softmax and its backward in numba
(``zoo.kernels.attention``).
"""

from __future__ import annotations

import numpy as np

from zoo import kernels
from zoo.checks import boolean, fraction, positive_int
from zoo.errors import ConfigError, DataError, describe_array
from zoo.initializers import glorot_uniform
from zoo.layers.activations import accept_grad
from zoo.layers.base import Layer


class Gemms:
    """``out = a @ b`` per shape as a ``kernels.blas.Gemm`` (made once, reused every step), so
    the large products may use the BLAS threads the trainer allows, with the same bits."""

    def __init__(self):
        self._made = {}

    def __call__(self, a, b, out):
        key = (a.shape, b.shape, a.dtype)
        gemm = self._made.get(key)
        if gemm is None:
            gemm = self._made[key] = (kernels.blas.gemm_or_none(
                a.shape[0], a.shape[1], b.shape[1], a.dtype) or np.matmul)
        return gemm(a, b, out)


class MultiHeadAttention(Layer):
    """Scaled dot-product self-attention with ``num_heads`` heads over a sequence.

    PyTorch's ``nn.MultiheadAttention(E, num_heads, dropout, bias, batch_first=True)`` called
    as ``attn(x, x, x, key_padding_mask=..., is_causal=...)``: the same parameters, names and
    layouts, so weights copy across unchanged. Queries, keys and values are
    ``x @ in_proj_weight.T + in_proj_bias`` split in three; each head attends with
    ``softmax(q k^T / sqrt(E / num_heads))``; the heads' outputs, concatenated, go through
    ``out_proj``. The embedding size E is the input's last axis.

    Args:
        num_heads: heads; must divide E.
        dropout: dropout rate on the attention weights while training (PyTorch's ``dropout``).
        bias: learn ``in_proj_bias`` and ``out_proj.bias``.
        causal: query i sees keys 0..i only (a decoder's mask; PyTorch's ``is_causal``).

    Parameters: ``in_proj_weight`` ``(3E, E)`` (Glorot-uniform, as PyTorch), ``in_proj_bias``
    ``(3E,)`` (zeros), ``out_proj.weight`` ``(E, E)`` (uniform in +-1/sqrt(E)),
    ``out_proj.bias`` ``(E,)`` (zeros).

    Input shape: ``(N, T, E)``. Output shape: ``(N, T, E)``.

    ``forward(x, training, key_padding_mask=None)`` takes an optional boolean ``(N, T)`` mask,
    True where a step is padding (PyTorch's convention): no query attends to those keys. A
    query that sees no key gets zero weights (PyTorch gives NaN).
    """

    def __init__(self, num_heads, dropout=0.0, bias=True, causal=False, name=None):
        super().__init__(name)
        self.num_heads = positive_int("MultiHeadAttention", "num_heads", num_heads)
        self.dropout = fraction("MultiHeadAttention", "dropout", dropout)
        self.use_bias = boolean("MultiHeadAttention", "bias", bias)
        self.causal = boolean("MultiHeadAttention", "causal", causal)
        self.rng = None
        self._shape = None

    def build(self, input_shape, rng):
        input_shape = tuple(input_shape)
        if len(input_shape) != 2:
            raise ConfigError(f"MultiHeadAttention expects sequences (steps, features) per "
                              f"example; received input shape {input_shape}")
        e = input_shape[1]
        if e % self.num_heads:
            raise ConfigError(f"MultiHeadAttention: num_heads must divide the embedding size; "
                              f"received num_heads={self.num_heads} for embedding size {e}")
        self.embed_dim, self.head_dim = e, e // self.num_heads
        self.in_proj_weight = self.add_parameter(
            "in_proj_weight", glorot_uniform((3 * e, e), e, 3 * e, rng, self.dtype))
        bound = 1.0 / np.sqrt(e)
        self.out_proj_weight = self.add_parameter("out_proj.weight",
                                                  rng.uniform(-bound, bound, (e, e)))
        if self.use_bias:
            self.in_proj_bias = self.add_parameter("in_proj_bias", np.zeros(3 * e))
            self.out_proj_bias = self.add_parameter("out_proj.bias", np.zeros(e))
        self.rng = np.random.default_rng(rng.integers(2**63))
        self._dt = np.dtype(self.dtype)
        self._gemm = Gemms()
        self._shape = None
        self.input_shape = self.output_shape = input_shape
        self.built = True
        return self.output_shape

    def _accept(self, x):
        """The slow path, when the batch shape or dtype changes: check, convert, new buffers."""
        self.check_input(x)
        x = np.ascontiguousarray(x, dtype=self._dt)
        n, t, e = x.shape
        h, d, dt = self.num_heads, self.head_dim, self._dt
        self._shape = x.shape
        self._qkv = np.empty((n * t, 3 * e), dt)
        self._heads = np.empty((3, n, h, t, d), dt)
        self._scores = np.empty((n, h, t, t), dt)
        self._attn = np.empty((n, h, t, d), dt)
        self._merged = np.empty((n, t, h, d), dt)
        self._y = np.empty((n * t, e), dt)
        self._grads = None  # backward buffers, made on first use
        return x

    def forward(self, x, training=False, key_padding_mask=None):
        if x.shape != self._shape or x.dtype is not self._dt or not x.flags.c_contiguous:
            x = self._accept(x)
        n, t, e = x.shape
        h, d = self.num_heads, self.head_dim
        self._mask = self._padding(key_padding_mask, n, t)
        x2 = x.reshape(n * t, e)
        self._gemm(x2, self.in_proj_weight.value.T, self._qkv)
        if self.use_bias:
            self._qkv += self.in_proj_bias.value
        # (N*T, 3E) -> (3, N, H, T, D): queries, keys and values head by head
        heads = self._heads
        heads[...] = self._qkv.reshape(n, t, 3, h, d).transpose(2, 0, 3, 1, 4)
        q, k, v = heads
        q *= self._dt.type(1.0 / np.sqrt(d))  # scaled queries: scores are q k^T
        np.matmul(q, k.transpose(0, 1, 3, 2), out=self._scores)
        p = kernels.attention.masked_softmax(self._scores, self.causal, self._mask,
                                             out=self._scores)
        self._drop = None
        if training and self.dropout > 0:
            keep = self.rng.random(p.shape, dtype=self._dt) >= self.dropout
            self._drop = keep * self._dt.type(1.0 / (1.0 - self.dropout))
            p = p * self._drop
        self._p = p
        np.matmul(p, v, out=self._attn)
        self._merged[...] = self._attn.transpose(0, 2, 1, 3)
        merged = self._merged.reshape(n * t, e)
        y = self._y if training else np.empty((n * t, e), self._dt)
        self._gemm(merged, self.out_proj_weight.value.T, y)
        if self.use_bias:
            y += self.out_proj_bias.value
        self._x2 = x2
        return y.reshape(n, t, e)

    def _padding(self, mask, n, t):
        if mask is None:
            return None
        mask = np.asarray(mask)
        if mask.shape != (n, t) or mask.dtype != np.bool_:
            raise DataError(f"MultiHeadAttention: key_padding_mask must be a boolean array of "
                            f"shape ({n}, {t}), True at padding; received {describe_array(mask)}")
        return mask

    def backward(self, grad_out):
        if grad_out.shape != self._shape or grad_out.dtype is not self._dt \
                or not grad_out.flags.c_contiguous:
            grad_out = accept_grad(self, grad_out, self._shape)
        n, t, e = self._shape
        h, d = self.num_heads, self.head_dim
        if self._grads is None:
            self._grads = (np.empty((n * t, e), self._dt), np.empty((n, h, t, t), self._dt),
                           np.empty((3, n, h, t, d), self._dt),
                           np.empty((n, t, 3, h, d), self._dt), np.empty((n * t, e), self._dt))
        d_merged, d_scores, d_heads, d_qkv, dx = self._grads
        g2 = grad_out.reshape(n * t, e)
        merged = self._merged.reshape(n * t, e)
        self._gemm(g2.T, merged, self.out_proj_weight.grad)
        if self.use_bias:
            np.sum(g2, axis=0, out=self.out_proj_bias.grad)
        self._gemm(g2, self.out_proj_weight.value, d_merged)
        d_attn = d_merged.reshape(n, t, h, d).transpose(0, 2, 1, 3)
        q, k, v = self._heads
        dq, dk, dv = d_heads
        np.matmul(self._p.transpose(0, 1, 3, 2), d_attn, out=dv)
        np.matmul(d_attn, v.transpose(0, 1, 3, 2), out=d_scores)
        if self._drop is not None:
            d_scores *= self._drop
        # the softmax output before dropout is the scores buffer itself
        kernels.attention.masked_softmax_backward(self._scores, d_scores, out=d_scores)
        np.matmul(d_scores, k, out=dq)
        dq *= self._dt.type(1.0 / np.sqrt(d))
        np.matmul(d_scores.transpose(0, 1, 3, 2), q, out=dk)  # q is scaled already
        d_qkv[...] = d_heads.transpose(1, 3, 0, 2, 4)
        dqkv2 = d_qkv.reshape(n * t, 3 * e)
        self._gemm(dqkv2.T, self._x2, self.in_proj_weight.grad)
        if self.use_bias:
            np.sum(dqkv2, axis=0, out=self.in_proj_bias.grad)
        self._gemm(dqkv2, self.in_proj_weight.value, dx)
        return dx.reshape(n, t, e)

    def get_config(self):
        return {"num_heads": self.num_heads, "dropout": self.dropout, "bias": self.use_bias,
                "causal": self.causal}
