"""The pre-norm transformer encoder block (Vaswani et al., 2017; pre-norm as in Xiong et al.,
"On Layer Normalization in the Transformer Architecture", 2020, and ViT)."""

from __future__ import annotations

import numpy as np

from zoo.checks import boolean, fraction, positive_int
from zoo.errors import ConfigError
from zoo.layers.activations import check_activation
from zoo.layers.attention import MultiHeadAttention
from zoo.layers.block import Block
from zoo.layers.dense import Dense
from zoo.layers.dropout import Dropout
from zoo.layers.layernorm import LayerNorm


class TransformerEncoderBlock(Block):
    """Self-attention and an MLP, each behind a LayerNorm and around a residual connection::

        y = x + dropout1(self_attn(norm1(x)))
        z = y + dropout2(linear2(dropout(activation(linear1(norm2(y))))))

    PyTorch's ``nn.TransformerEncoderLayer(E, num_heads, mlp_dim, dropout, activation="gelu",
    layer_norm_eps, batch_first=True, norm_first=True)``, with its sub-layer names
    (``self_attn``, ``linear1``, ``linear2``, ``norm1``, ``norm2``) and dropout in the same four
    places (the attention weights, after attention, after the activation, after ``linear2``).
    One difference of layout: ``linear1`` and ``linear2`` are zoo ``Dense`` layers, whose
    ``weight`` is ``(in, out)``, the transpose of ``nn.Linear``'s. The embedding size E is the
    input's last axis.

    Args:
        num_heads: attention heads; must divide E.
        mlp_dim: hidden units of the MLP (PyTorch's ``dim_feedforward``); default 4 * E.
        dropout: the rate of all four dropouts.
        activation: the MLP's activation; ``"gelu_erf"`` (exact GELU, PyTorch's "gelu") by
            default, any of ``zoo.layers.activations.ACTIVATIONS``.
        norm_eps: LayerNorm's eps (1e-5, as PyTorch).
        causal: attend to earlier steps only.

    Input shape: ``(N, T, E)``. Output shape: the same. ``forward`` takes
    ``key_padding_mask`` as ``MultiHeadAttention`` does.
    """

    children = ("norm1", "self_attn", "dropout1", "norm2", "linear1", "dropout", "linear2",
                "dropout2")

    def __init__(self, num_heads, mlp_dim=None, dropout=0.1, activation="gelu_erf",
                 norm_eps=1e-5, causal=False, name=None):
        super().__init__(name)
        cls = "TransformerEncoderBlock"
        self.num_heads = positive_int(cls, "num_heads", num_heads)
        self.mlp_dim = None if mlp_dim is None else positive_int(cls, "mlp_dim", mlp_dim)
        self.rate = fraction(cls, "dropout", dropout)
        self.activation = check_activation(cls, activation)
        self.norm_eps = norm_eps
        self.causal = boolean(cls, "causal", causal)
        self.norm1 = LayerNorm(eps=norm_eps)
        self.self_attn = MultiHeadAttention(num_heads, dropout=self.rate, causal=self.causal)
        self.dropout1 = Dropout(self.rate)
        self.norm2 = LayerNorm(eps=norm_eps)
        self.dropout = Dropout(self.rate)
        self.dropout2 = Dropout(self.rate)
        self.linear1 = self.linear2 = None  # their sizes come from the input

    def build(self, input_shape, rng, dtype=None):
        self.set_dtype(dtype)
        input_shape = tuple(input_shape)
        if len(input_shape) != 2:
            raise ConfigError(f"TransformerEncoderBlock expects sequences (steps, features) "
                              f"per example; received input shape {input_shape}")
        e = input_shape[1]
        hidden = self.mlp_dim or 4 * e
        self.linear1 = Dense(hidden, activation=self.activation)
        self.linear2 = Dense(e)
        inner = (input_shape[0], hidden)
        for name in self.children:
            self.build_child(name, inner if name in ("dropout", "linear2") else input_shape,
                             rng)
        self.input_shape = self.output_shape = input_shape
        self.built = True
        return self.output_shape

    def forward(self, x, training=False, key_padding_mask=None):
        self.check_input(x)
        x = np.asarray(x, self.dtype)
        a = self.norm1.forward(x, training)
        a = self.self_attn.forward(a, training, key_padding_mask=key_padding_mask)
        y = x + self.dropout1.forward(a, training)
        f = self.norm2.forward(y, training)
        for layer in (self.linear1, self.dropout, self.linear2, self.dropout2):
            f = layer.forward(f, training)
        return y + f

    def backward(self, grad_out):
        g = grad_out
        for layer in (self.dropout2, self.linear2, self.dropout, self.linear1, self.norm2):
            g = layer.backward(g)
        dy = grad_out + g
        g = dy
        for layer in (self.dropout1, self.self_attn, self.norm1):
            g = layer.backward(g)
        return dy + g

    def get_config(self):
        return {"num_heads": self.num_heads, "mlp_dim": self.mlp_dim, "dropout": self.rate,
                "activation": self.activation, "norm_eps": self.norm_eps,
                "causal": self.causal}
