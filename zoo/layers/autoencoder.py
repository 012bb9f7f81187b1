"""Autoencoder: an encoder to a code and a decoder back, as one model with ``encode``.

Hinton and Salakhutdinov, "Reducing the Dimensionality of Data with Neural Networks",
Science, 2006.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import ConfigError, DataError, describe_array
from zoo.model import Sequential


class Autoencoder(Sequential):
    """``decoder(encoder(x))``: a ``Sequential`` of two ``Sequential`` parts.

    The model's output has the input's shape (raw outputs: logits when trained with binary
    cross-entropy, whose ``activate`` gives the reconstruction); ``encode`` gives the codes.

    Args:
        encoder: maps an example to a code vector ``(code_size,)``.
        decoder: maps a code back to the input's shape.

    Input shape: ``(N, ...)``. Output shape: the same.

    Example:
        >>> model = Autoencoder(Sequential([Dense(8, activation="relu"), Dense(2)]),
        ...                     Sequential([Dense(8, activation="relu"), Dense(16)]))
        >>> model.build((16,), np.random.default_rng(0))
        (16,)
        >>> model.encode(np.ones((5, 16), np.float32)).shape
        (5, 2)
    """

    def __init__(self, encoder: Sequential, decoder: Sequential, name: str | None = None):
        for part, layer in (("encoder", encoder), ("decoder", decoder)):
            if not isinstance(layer, Sequential):
                raise ConfigError(f"Autoencoder: {part} must be a Sequential; received "
                                  f"{type(layer).__name__}")
        super().__init__([encoder, decoder], name=name or "autoencoder")
        self.encoder, self.decoder = encoder, decoder

    def build(self, input_shape, rng, dtype=None):
        shape = super().build(input_shape, rng, dtype)
        if len(self.encoder.output_shape) != 1:
            raise ConfigError(f"Autoencoder: the encoder must end in a code vector; its output "
                              f"shape is {self.encoder.output_shape}")
        if shape != self.input_shape:
            raise ConfigError(f"Autoencoder: the decoder must give back the input's shape "
                              f"{self.input_shape}; it gives {shape}")
        return shape

    @property
    def code_size(self) -> int:
        return self.encoder.output_shape[0]

    def encode(self, x, batch_size: int = 256) -> np.ndarray:
        """Codes ``(N, code_size)`` of inputs ``(N, ...)``, in inference mode, in batches."""
        x = np.asarray(x)
        self.check_input(x)
        return _batched(self.encoder, x.astype(self.dtype, copy=False), batch_size,
                        self.encoder.output_shape)

    def decode(self, codes, batch_size: int = 256) -> np.ndarray:
        """Raw decoder outputs for codes ``(N, code_size)`` (logits under BCE), in batches."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.code_size:
            raise DataError(f"Autoencoder.decode expects codes of shape (batch, "
                            f"{self.code_size}); received {describe_array(codes)}")
        return _batched(self.decoder, codes.astype(self.dtype, copy=False), batch_size,
                        self.output_shape)

    def summary(self) -> str:
        """The layer table of ``Sequential.summary`` with the encoder's and decoder's layers."""
        flat = Sequential([*self.encoder.layers, *self.decoder.layers])
        flat.built = True
        lines = flat.summary().splitlines()
        lines[-1] += f"  (code size {self.code_size})"
        return "\n".join(lines)

    def __repr__(self):
        size = self.code_size if self.built else "?"
        return f"Autoencoder(code_size={size}, {self.num_params} parameters)"


def _batched(part, x, batch_size, out_shape):
    outs = [part.forward(np.ascontiguousarray(x[i:i + batch_size]), training=False)
            for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, *out_shape), part.dtype)
