"""Models: ``Sequential`` (a stack) and, in ``zoo.graph``, ``Model`` (a graph of layers).

Both are ``Container``s: a Layer holding other layers in ``self.layers``, in the order they run
forward. The container names parameters and buffers by position (``"0.weight"``), saves and
loads them, trains and predicts (``zoo.trainable``) and prints a summary; subclasses say how
layers connect.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import CheckpointError, ConfigError, DataError, describe_array
from zoo.layers.base import Layer, Parameter
from zoo.trainable import Trainable


class Container(Trainable):
    """A Layer made of the layers in ``self.layers`` (in the order they run forward).

    Trains with ``fit(x, y)`` and predicts with ``predict`` / ``predict_proba`` (see
    ``zoo.trainable.Trainable``).

    Parameters and buffers of layer ``i`` are named ``"i.<name>"``; ``zoo.kit.conformance``,
    checkpoints and the trainer find the layers through ``self.layers``.
    """

    layers: list[Layer]

    # -- parameters and state ----------------------------------------------------------------
    def named_parameters(self, prefix=""):
        named = []
        for i, layer in enumerate(self.layers):
            named += layer.named_parameters(f"{prefix}{i}.")
        return named

    def named_buffers(self, prefix=""):
        named = []
        for i, layer in enumerate(self.layers):
            named += layer.named_buffers(f"{prefix}{i}.")
        return named

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, by dotted name (``"0.weight"``)."""
        state = {name: p.value.copy() for name, p in self.named_parameters()}
        state.update({name: b.copy() for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state: dict) -> None:
        """Copy arrays into the existing parameters and buffers; names and shapes must match."""
        targets = {name: p.value for name, p in self.named_parameters()}
        targets.update(dict(self.named_buffers()))
        missing = sorted(set(targets) - set(state))
        unexpected = sorted(set(state) - set(targets))
        if missing or unexpected:
            raise CheckpointError(
                f"model state does not fit: missing {missing or 'nothing'}, "
                f"unexpected {unexpected or 'nothing'}"
            )
        for name, target in targets.items():
            value = np.asarray(state[name])
            if value.shape != target.shape:
                raise CheckpointError(
                    f"model state {name}: expected shape {target.shape}; received {value.shape}"
                )
            target[...] = value

    # -- convenience -------------------------------------------------------------------------
    def check_input(self, x):
        if not self.built:
            raise ConfigError("the model is used before build(); build it with an input shape")
        if not isinstance(self.input_shape, tuple):
            raise ConfigError(f"the model takes {len(self.input_shape)} inputs; predict and the "
                              "trainer feed one")
        if not isinstance(x, np.ndarray) or x.ndim != len(self.input_shape) + 1 \
                or tuple(x.shape[1:]) != self.input_shape:
            raise DataError(
                f"the model expects input of shape (batch, "
                f"{', '.join(map(str, self.input_shape))}); received {describe_array(x)}"
            )

    def summary(self) -> str:
        """A table of layers, output shapes and parameter counts."""
        header, rows = self._summary_rows()
        rows = [header, *rows]
        widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
        lines = []
        for r in rows:
            cells = [f"{cell:>{w}}" if column == "params" else f"{cell:<{w}}"
                     for column, cell, w in zip(header, r, widths)]
            lines.append("  ".join(cells).rstrip())
        lines.insert(1, "-" * max(len(line) for line in lines))
        lines.append(f"total parameters: {self.num_params:,}")
        return "\n".join(lines)

    def _summary_rows(self) -> tuple[tuple, list[tuple]]:
        rows = [(f"{i} {layer!r}", shape_text(layer.output_shape), f"{layer.num_params:,}")
                for i, layer in enumerate(self.layers)]
        return ("layer", "output shape", "params"), rows


def shape_text(shape) -> str:
    """``(N, 10)`` for one output shape, ``(N, 4) (N, 6)`` for a list of them."""
    if isinstance(shape, list):
        return " ".join(shape_text(s) for s in shape)
    return "(N, " + ", ".join(map(str, shape or ())) + ")"


class Sequential(Container):
    """Layers applied one after another; itself a Layer, so containers nest.

    Example:
        >>> model = Sequential([Dense(64), ReLU(), Dense(10)])
        >>> model.build((40,), np.random.default_rng(0))
        (10,)
    """

    def __init__(self, layers, name: str | None = None):
        super().__init__(name)
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise ConfigError(
                    f"Sequential expects Layer instances; received {type(layer).__name__} at {i}"
                )

    def build(self, input_shape, rng, dtype=None):
        """Build every layer in turn. ``dtype`` (float32 by default) applies to all layers."""
        if dtype is not None:
            self.dtype = np.dtype(dtype).type
        shape = tuple(input_shape)
        self.input_shape = shape
        for layer in self.layers:
            shape = tuple(layer.build(shape, rng, dtype=self.dtype))
        self.output_shape = shape
        self.built = True
        return shape

    def forward(self, x, training=False):
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, grad_out):
        for layer in reversed(self.layers):
            grad_out = layer.backward(grad_out)
        return grad_out

    def get_config(self):
        return {"layers": [repr(layer) for layer in self.layers]}

    def __repr__(self):
        return f"Sequential({len(self.layers)} layers, {self.num_params} parameters)"
