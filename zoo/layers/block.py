"""``Block``: a layer made of named sub-layers that wires them itself (residual blocks,
transformer blocks).

A block's forward calls its sub-layers and its backward calls theirs in reverse; a residual
connection ``y = x + f(x)`` is ``dx = dy + f.backward(dy)``. Parameters, buffers and random
generators are the sub-layers' own, named ``<sub-layer>.<name>`` (``self_attn.in_proj_weight``),
so checkpoints, optimizers and the conformance kit see them as they see a ``Sequential``'s.
"""

from __future__ import annotations

import numpy as np

from zoo.layers.base import Layer


class Block(Layer):
    """Sub-layers are attributes listed in ``self.children`` (names in order) at ``__init__``."""

    children: tuple = ()

    def build_child(self, name: str, shape, rng) -> tuple:
        """Build one sub-layer in this block's dtype; returns its output shape."""
        child = getattr(self, name)
        child.dtype = self.dtype
        return tuple(child.build(tuple(shape), rng))

    def set_dtype(self, dtype) -> None:
        if dtype is not None:
            self.dtype = np.dtype(dtype).type

    def named_parameters(self, prefix=""):
        named = []
        for name in self.children:
            named += getattr(self, name).named_parameters(f"{prefix}{name}.")
        return named

    def named_buffers(self, prefix=""):
        named = []
        for name in self.children:
            named += getattr(self, name).named_buffers(f"{prefix}{name}.")
        return named

    def parameters(self):
        return [p for _, p in self.named_parameters()]
