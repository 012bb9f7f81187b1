"""Layers that join paths of a graph (``Add``, ``Multiply``, ``Concatenate``) or split one
(``Split``).

They follow the graph protocol of ``zoo.layers.base``: a merge layer has ``multi_input =
True``, so it is called on a list of tensors (``Add()([x, h])``), its ``forward`` takes a list
of arrays and its ``backward`` returns one gradient per input; ``Split`` has ``num_outputs``
outputs. None has parameters. Axes count the batch axis, as in ``torch.cat`` and
``torch.split``: ``axis=1`` is the first axis of an example (channels of an image), ``-1`` the
last; the batch axis itself cannot be joined or split.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import ConfigError, DataError, describe_array
from zoo.layers.base import Layer, positive_int


def _axis(layer: str, axis) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ConfigError(f"{layer}: axis must be an integer; received axis={axis!r}")
    if axis == 0:
        raise ConfigError(f"{layer}: axis 0 is the batch axis; received axis=0 (use 1 for the "
                          "first axis of an example, -1 for the last)")
    return int(axis)


def _example_axis(layer: str, axis: int, shape: tuple) -> int:
    """``axis`` (counting the batch axis) as an index into an example's ``shape``."""
    rank = len(shape) + 1
    if not -rank < axis < rank:
        raise ConfigError(f"{layer}: axis={axis} is out of range for inputs of shape "
                          f"{shape_of(shape)}")
    return (axis if axis > 0 else axis + rank) - 1


def shape_of(shape) -> str:
    return "(N, " + ", ".join(map(str, shape)) + ")"


class Merge(Layer):
    """Base of the layers that combine a list of inputs into one output."""

    multi_input = True

    def build(self, input_shapes, rng, dtype=None):
        if dtype is not None:
            self.dtype = np.dtype(dtype).type
        cls = type(self).__name__
        if not isinstance(input_shapes, (list, tuple)) or len(input_shapes) < 2 \
                or not all(isinstance(s, (list, tuple)) for s in input_shapes):
            raise ConfigError(f"{cls} joins a list of at least 2 inputs; received "
                              f"{input_shapes!r}")
        shapes = [tuple(s) for s in input_shapes]
        self.output_shape = self._output_shape(shapes)
        self.input_shape = shapes
        self.built = True
        return self.output_shape

    def _output_shape(self, shapes: list[tuple]) -> tuple:
        if any(s != shapes[0] for s in shapes):
            raise ConfigError(f"{type(self).__name__} expects inputs of one shape; received "
                              f"{', '.join(shape_of(s) for s in shapes)}")
        return shapes[0]

    def _check_inputs(self, xs) -> list[np.ndarray]:
        cls = type(self).__name__
        if not self.built:
            raise ConfigError(f"{cls} is used before build(); build it with a list of shapes")
        if not isinstance(xs, (list, tuple)) or len(xs) != len(self.input_shape):
            raise DataError(f"{cls} expects a list of {len(self.input_shape)} arrays; received "
                            f"{type(xs).__name__}")
        batch = None
        for i, (x, shape) in enumerate(zip(xs, self.input_shape)):
            if not isinstance(x, np.ndarray) or tuple(x.shape[1:]) != shape \
                    or (batch is not None and len(x) != batch):
                raise DataError(f"{cls} expects input {i} of shape "
                                f"{shape_of(shape).replace('N', str(batch or 'batch'))}; "
                                f"received {describe_array(x)}")
            batch = len(x)
        return list(xs)


class Add(Merge):
    """The elementwise sum of its inputs, all of one shape: ``Add()([x, h])``.

    The gradient reaching each input is the output's gradient, the same array for every
    input (layers never write into the gradient they receive).
    """

    def forward(self, xs, training=False):
        xs = self._check_inputs(xs)
        out = np.add(xs[0], xs[1])  # a new array: callers may keep the output
        for x in xs[2:]:
            np.add(out, x, out=out)
        return out

    def backward(self, grad_out):
        return [grad_out] * len(self.input_shape)


class Multiply(Merge):
    """The elementwise product of its inputs, all of one shape (a gate: ``Multiply()([x, g])``).
    """

    def forward(self, xs, training=False):
        xs = self._check_inputs(xs)
        self._inputs = xs
        out = np.multiply(xs[0], xs[1])
        for x in xs[2:]:
            np.multiply(out, x, out=out)
        return out

    def backward(self, grad_out):
        grads = []
        for i in range(len(self._inputs)):
            g = grad_out.copy()
            for j, x in enumerate(self._inputs):
                if j != i:
                    np.multiply(g, x, out=g)
            grads.append(g)
        return grads


class Concatenate(Merge):
    """Its inputs joined along ``axis`` (``torch.cat``); the other axes must agree.

    Args:
        axis: counting the batch axis (``1`` is the first axis of an example, the default
            ``-1`` the last): ``Concatenate(axis=1)`` joins the channels of images.
    """

    def __init__(self, axis: int = -1, name: str | None = None):
        super().__init__(name)
        self.axis = _axis("Concatenate", axis)

    def _output_shape(self, shapes):
        ax = _example_axis("Concatenate", self.axis, shapes[0])
        rest = [s[:ax] + s[ax + 1:] for s in shapes]
        if any(len(s) != len(shapes[0]) for s in shapes) or any(r != rest[0] for r in rest):
            raise ConfigError(f"Concatenate(axis={self.axis}) expects inputs that differ only "
                              f"on axis {self.axis}; received "
                              f"{', '.join(shape_of(s) for s in shapes)}")
        self._sizes = [s[ax] for s in shapes]
        self._ax = ax + 1  # the array axis, with the batch axis
        return shapes[0][:ax] + (sum(self._sizes),) + shapes[0][ax + 1:]

    def forward(self, xs, training=False):
        return np.concatenate(self._check_inputs(xs), axis=self._ax)

    def backward(self, grad_out):
        cuts = np.cumsum(self._sizes)[:-1]
        return [np.ascontiguousarray(g) for g in np.split(grad_out, cuts, axis=self._ax)]

    def get_config(self):
        return {"axis": self.axis}


class Split(Layer):
    """Its input cut along ``axis`` into pieces of the given ``sizes`` (``torch.split``).

    Called on a tensor it returns ``len(sizes)`` tensors: ``a, b = Split([4, 4])(x)``.

    Args:
        sizes: the size of each piece along ``axis``; they must add up to the input's size.
        axis: counting the batch axis, as in ``Concatenate``.
    """

    def __init__(self, sizes, axis: int = -1, name: str | None = None):
        super().__init__(name)
        if not isinstance(sizes, (list, tuple)) or len(sizes) < 2:
            raise ConfigError(f"Split: sizes must list at least 2 piece sizes; received "
                              f"sizes={sizes!r}")
        self.sizes = tuple(positive_int("Split", "sizes", s) for s in sizes)
        self.axis = _axis("Split", axis)
        self.num_outputs = len(self.sizes)

    def build(self, input_shape, rng, dtype=None):
        if dtype is not None:
            self.dtype = np.dtype(dtype).type
        shape = tuple(input_shape)
        ax = _example_axis("Split", self.axis, shape)
        if shape[ax] != sum(self.sizes):
            raise ConfigError(f"Split(sizes={list(self.sizes)}) expects {sum(self.sizes)} "
                              f"entries on axis {self.axis}; received input shape "
                              f"{shape_of(shape)}")
        self._ax = ax + 1
        self.input_shape = shape
        self.output_shape = [shape[:ax] + (n,) + shape[ax + 1:] for n in self.sizes]
        self.built = True
        return self.output_shape

    def forward(self, x, training=False):
        self.check_input(x)
        cuts = np.cumsum(self.sizes)[:-1]
        return [np.ascontiguousarray(piece) for piece in np.split(x, cuts, axis=self._ax)]

    def backward(self, grad_out):
        return np.concatenate(grad_out, axis=self._ax)

    def get_config(self):
        return {"sizes": list(self.sizes), "axis": self.axis}
