"""Layer graphs: layers joined as a directed acyclic graph, as in Keras' functional API.

Calling a layer on a graph ``Tensor`` (a placeholder, not an array) records a node and returns
the node's output tensor(s); ``Model(inputs, outputs)`` collects every node between them::

    x = Input()
    h = Dense(64, activation="relu")(x)
    y = Add()([h, Dense(64)(h)])               # h feeds two layers: fan-out
    model = Model(x, Dense(10)(y))
    model.build((40,), rng)                    # shapes flow through the graph only now

Nothing is computed while the graph is described: zoo builds every model for the data's input
shape and dtype after the architecture returns it, so a ``Model`` is built like ``Sequential``
(``build(input_shape, rng, dtype=)``) and is the same kind of object to the trainer,
checkpoints and ``zoo.testing``. Its layers run forward in the order they were called and
backward in reverse; the gradient of a tensor that feeds several layers is the sum of what
each of them returns. ``Sequential([a, b, c])`` is the graph ``c(b(a(x)))`` with the same
parameter names, the same initial values from the same generator and the same outputs.

Layers with several inputs or outputs follow the protocol in ``zoo.layers.base``: a layer with
``multi_input = True`` is called on a list of tensors and its ``backward`` returns a list; a
layer with ``num_outputs = k > 1`` returns a list of k tensors when called on tensors. A
``Model`` with several inputs or outputs is such a layer itself, so graphs nest.

Every layer is called once: a layer keeps what its ``backward`` needs from its last
``forward``, so a second call would overwrite the first one's cache. Share a block by writing a
function that makes its layers, not by calling the same layer twice.
"""

from __future__ import annotations

import itertools

import numpy as np

from zoo.errors import ConfigError, ZooError
from zoo.layers.base import Layer
from zoo.model import Container, shape_text

_ORDER = itertools.count()  # creation order of nodes: a topological order by construction


class Tensor:
    """A placeholder for an array in a graph: the input of a model or an output of a node.

    Shapes are known only once the model is built (``model.build``); the batch axis is
    never part of them.
    """

    __slots__ = ("node", "index")

    def __init__(self, node: _Node, index: int):
        self.node = node
        self.index = index

    def __repr__(self) -> str:
        if self.node.layer is None:
            return f"Tensor(Input{'' if self.node.name is None else ' ' + repr(self.node.name)})"
        return f"Tensor(output {self.index} of {self.node.layer!r})"


class _Node:
    """One layer applied to its input tensors (or, with ``layer`` None, a model input)."""

    __slots__ = ("layer", "inputs", "outputs", "order", "shape", "name")

    def __init__(self, layer, inputs, num_outputs, shape=None, name=None):
        self.layer = layer
        self.inputs = inputs
        self.order = next(_ORDER)
        self.outputs = [Tensor(self, i) for i in range(num_outputs)]
        self.shape = shape
        self.name = name


def Input(shape=None, name: str | None = None) -> Tensor:
    """A model input. ``shape`` (one example, no batch axis) is optional: when given, the model
    refuses to be built for another shape."""
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"Input: name must be a string; received name={name!r}")
    if shape is not None:
        if not isinstance(shape, (list, tuple)):
            raise ConfigError(f"Input: shape must be a tuple of positive integers; received "
                              f"shape={shape!r}")
        shape = tuple(shape)
        if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0
                   for d in shape):
            raise ConfigError(f"Input: shape must be positive integers; received shape={shape!r}")
        shape = tuple(int(d) for d in shape)
    return _Node(None, [], 1, shape, name).outputs[0]


def is_symbolic(x) -> bool:
    """Whether ``x`` is a graph tensor or a list of them (what a layer call builds a node from)."""
    if isinstance(x, Tensor):
        return True
    return isinstance(x, (list, tuple)) and any(isinstance(t, Tensor) for t in x)


def _label(layer) -> str:
    return layer.name if layer.name else type(layer).__name__


def apply_layer(layer: Layer, x):
    """Record ``layer`` applied to tensor(s) ``x``; return its output tensor(s)."""
    label = _label(layer)
    if isinstance(x, Tensor):
        if layer.multi_input:
            raise ConfigError(f"{label} joins several inputs: call it on a list of tensors; "
                              "received one tensor")
        inputs = [x]
    else:
        if not all(isinstance(t, Tensor) for t in x):
            kinds = ", ".join(type(t).__name__ for t in x)
            raise ConfigError(f"{label}: a list of graph inputs must hold only tensors; "
                              f"received {kinds}")
        if not layer.multi_input:
            raise ConfigError(f"{label} takes one input; received a list of {len(x)} tensors "
                              "(join them first with Add, Concatenate or Multiply)")
        inputs = list(x)
    num_outputs = _num_outputs(layer)
    node = _Node(layer, inputs, num_outputs)
    return node.outputs if num_outputs > 1 else node.outputs[0]


def _num_outputs(layer) -> int:
    n = layer.num_outputs
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"{_label(layer)}: num_outputs must be a positive integer; "
                          f"received {n!r}")
    return int(n)


def _as_tensors(what: str, value) -> list[Tensor]:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ConfigError(f"Model: {what} must be one tensor or a list of them; received none")
    for t in items:
        if not isinstance(t, Tensor):
            raise ConfigError(f"Model: {what} must be graph tensors (from Input() or a layer "
                              f"called on one); received {type(t).__name__}")
    return items


class Model(Container):
    """A graph of layers from ``inputs`` (``Input()`` tensors) to ``outputs``.

    Args:
        inputs: one ``Input()`` tensor, or a list of them for a model with several inputs.
        outputs: the tensor(s) the model returns, made by calling layers on the inputs.
        name: an optional name.

    ``self.layers`` holds the layers in the order they run forward (the order they were
    called); parameters of ``self.layers[i]`` are named ``"i.<name>"`` as in ``Sequential``.
    A model with one input and one output maps an array to an array; with several inputs it
    is a ``multi_input`` layer (forward takes a list), with several outputs its forward
    returns a list.

    Raises:
        ConfigError: when a layer is called twice or the graph has a cycle, when an input
            reaches no output or an output depends on a tensor that is not among ``inputs``.
    """

    def __init__(self, inputs, outputs, name: str | None = None):
        super().__init__(name)
        self.inputs = _as_tensors("inputs", inputs)
        self.outputs = _as_tensors("outputs", outputs)
        self.multi_input = len(self.inputs) > 1
        self.num_outputs = len(self.outputs)
        nodes = self._collect()
        self._nodes = sorted(nodes, key=lambda n: n.order)
        self.layers = [node.layer for node in self._nodes]
        # Each tensor gets a slot in the list of values forward fills: inputs first.
        slots: dict[int, int] = {}
        for t in self.inputs:
            slots[id(t)] = len(slots)
        for node in self._nodes:
            for t in node.outputs:
                slots[id(t)] = len(slots)
        self._num_slots = len(slots)
        self._input_slots = [slots[id(t)] for t in self.inputs]
        self._output_slots = [slots[id(t)] for t in self.outputs]
        # (layer, input slots, output slots) per node, in forward order.
        self._plan = [(n.layer, [slots[id(t)] for t in n.inputs],
                       [slots[id(t)] for t in n.outputs]) for n in self._nodes]
        self._tensor_names, self._sources = self._describe_sources()

    # -- construction ----------------------------------------------------------------------
    def _collect(self) -> list[_Node]:
        """Every layer node between the inputs and the outputs, checked for a usable graph."""
        input_nodes = {}
        for i, t in enumerate(self.inputs):
            if t.node.layer is not None:
                raise ConfigError(f"Model: inputs must be Input() tensors; input {i} is the "
                                  f"output of {t.node.layer!r}")
            if id(t.node) in input_nodes:
                raise ConfigError(f"Model: input {i} is listed twice")
            input_nodes[id(t.node)] = i
        seen, nodes, reached = set(), [], set()
        stack = [t.node for t in self.outputs]
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.layer is None:
                if id(node) not in input_nodes:
                    raise ConfigError("Model: an output depends on an Input() that is not among "
                                      f"the model's inputs ({self._input_names()}); "
                                      "pass every Input the outputs use")
                reached.add(id(node))
                continue
            nodes.append(node)
            stack += [t.node for t in node.inputs]
        for i, t in enumerate(self.inputs):
            if id(t.node) not in reached:
                raise ConfigError(f"Model: input {i} is not connected to any output; every "
                                  "input must reach an output")
        self._check_each_layer_called_once(nodes)
        return nodes

    def _input_names(self) -> str:
        return ", ".join(t.node.name or f"input {i}" for i, t in enumerate(self.inputs))

    @staticmethod
    def _check_each_layer_called_once(nodes) -> None:
        by_layer: dict[int, list[_Node]] = {}
        for node in nodes:
            by_layer.setdefault(id(node.layer), []).append(node)
        repeated = [group for group in by_layer.values() if len(group) > 1]
        if not repeated:
            return
        cycle = _find_cycle(nodes)
        if cycle:
            path = " -> ".join(_label(layer) for layer in cycle)
            raise ConfigError(f"Model: the graph has a cycle: {path}; a layer cannot take an "
                              "input computed from its own output")
        layer = repeated[0][0].layer
        raise ConfigError(f"Model: layer {layer!r} is called {len(repeated[0])} times; a layer "
                          "keeps what backward needs from its one forward call, so give each "
                          "call its own layer (make the block in a function)")

    def _describe_sources(self) -> tuple[dict, list[list[str]]]:
        """For the summary and config: a name per tensor, and each node's inputs by name."""
        names = {}
        for i, t in enumerate(self.inputs):
            names[id(t)] = "input" if len(self.inputs) == 1 else f"input:{i}"
        for k, node in enumerate(self._nodes):
            for t in node.outputs:
                names[id(t)] = str(k) if len(node.outputs) == 1 else f"{k}:{t.index}"
        return names, [[names[id(t)] for t in node.inputs] for node in self._nodes]

    # -- the Layer interface ---------------------------------------------------------------
    def build(self, input_shape, rng, dtype=None):
        """Build every layer in forward order for ``input_shape`` (a list of shapes for a
        model with several inputs); ``dtype`` (float32 by default) applies to all layers."""
        if dtype is not None:
            self.dtype = np.dtype(dtype).type
        shapes = self._input_shapes(input_shape)
        values = [None] * self._num_slots
        for slot, shape in zip(self._input_slots, shapes):
            values[slot] = shape
        for k, (layer, ins, outs) in enumerate(self._plan):
            arg = [values[s] for s in ins] if layer.multi_input else values[ins[0]]
            try:
                out = layer.build(arg, rng, dtype=self.dtype)
            except ZooError as exc:
                raise type(exc)(f"{self._where(k)} on input {shape_text(arg)}: {exc}") from None
            out = self._check_built_shape(k, layer, out, len(outs))
            for slot, shape in zip(outs, out):
                values[slot] = shape
        self._shapes = values
        self.input_shape = shapes if self.multi_input else shapes[0]
        out_shapes = [values[s] for s in self._output_slots]
        self.output_shape = out_shapes if self.num_outputs > 1 else out_shapes[0]
        self.built = True
        return self.output_shape

    def _input_shapes(self, input_shape) -> list[tuple]:
        if self.multi_input:
            if not isinstance(input_shape, (list, tuple)) or len(input_shape) != len(self.inputs) \
                    or not all(isinstance(s, (list, tuple)) for s in input_shape):
                raise ConfigError(f"Model: takes {len(self.inputs)} inputs; build it with a list "
                                  f"of {len(self.inputs)} shapes; received {input_shape!r}")
            shapes = [tuple(s) for s in input_shape]
        else:
            shapes = [tuple(input_shape)]
        for i, (t, shape) in enumerate(zip(self.inputs, shapes)):
            declared = t.node.shape
            if declared is not None and declared != shape:
                name = t.node.name or f"input {i}"
                raise ConfigError(f"Model: {name} was declared with shape {declared}; "
                                  f"built for {shape}")
        return shapes

    def _check_built_shape(self, k, layer, out, count) -> list[tuple]:
        if count == 1:
            return [tuple(out)]
        if not isinstance(out, (list, tuple)) or len(out) != count \
                or not all(isinstance(s, (list, tuple)) for s in out):
            raise ConfigError(f"{self._where(k)}: num_outputs is {count}, so build must return "
                              f"a list of {count} shapes; received {out!r}")
        return [tuple(s) for s in out]

    def _where(self, k: int) -> str:
        return f"graph layer {k} {_label(self.layers[k])}"

    def forward(self, x, training=False):
        values = [None] * self._num_slots
        if self.multi_input:
            if not isinstance(x, (list, tuple)) or len(x) != len(self._input_slots):
                raise ConfigError(f"Model: takes a list of {len(self._input_slots)} input "
                                  f"arrays; received {type(x).__name__}")
            for slot, xi in zip(self._input_slots, x):
                values[slot] = xi
        else:
            values[self._input_slots[0]] = x
        for k, (layer, ins, outs) in enumerate(self._plan):
            arg = [values[s] for s in ins] if layer.multi_input else values[ins[0]]
            try:
                out = layer.forward(arg, training)
            except ZooError as exc:  # say which layer of the graph refused its input
                raise type(exc)(f"{self._where(k)}: {exc}") from exc
            if len(outs) == 1:
                values[outs[0]] = out
            else:
                for slot, value in zip(outs, out):
                    values[slot] = value
        self._batch = len(values[self._input_slots[0]])
        result = [values[s] for s in self._output_slots]
        return result if self.num_outputs > 1 else result[0]

    def backward(self, grad_out):
        grads = [None] * self._num_slots
        owned = [False] * self._num_slots  # arrays this pass allocated, safe to add into

        def accumulate(slot, grad):
            if grad is None:  # a first layer told not to compute its input gradient
                return
            if grads[slot] is None:
                grads[slot] = grad
            elif owned[slot]:
                np.add(grads[slot], grad, out=grads[slot])
            else:  # never write into an array a layer returned: it may be the layer's buffer
                grads[slot] = np.add(grads[slot], grad)
                owned[slot] = True

        if self.num_outputs > 1:
            for slot, g in zip(self._output_slots, grad_out):
                accumulate(slot, g)
        else:
            accumulate(self._output_slots[0], grad_out)
        for k in range(len(self._plan) - 1, -1, -1):
            layer, ins, outs = self._plan[k]
            if len(outs) == 1:
                g = grads[outs[0]]
                if g is None:
                    raise ConfigError(f"{self._where(k)} received no gradient: a layer after "
                                      "it returned None from backward")
            else:  # an output nothing used gets a zero gradient
                g = [grads[s] if grads[s] is not None
                     else np.zeros((self._batch, *self._shapes[s]), self.dtype)
                     for s in outs]
            grad_in = layer.backward(g)
            if layer.multi_input:
                for slot, gi in zip(ins, grad_in):
                    accumulate(slot, gi)
            else:
                accumulate(ins[0], grad_in)
        result = [grads[s] for s in self._input_slots]
        return result if self.multi_input else result[0]

    def get_config(self):
        """The graph: each layer, where its inputs come from, and the outputs."""
        return {"inputs": [None if t.node.shape is None else list(t.node.shape)
                           for t in self.inputs],
                "layers": [repr(layer) for layer in self.layers],
                "connections": self._sources,
                "outputs": [self._tensor_names[id(t)] for t in self.outputs]}

    def __repr__(self):
        return f"Model({len(self.layers)} layers, {self.num_params} parameters)"

    def _summary_rows(self):
        rows = []
        for i, t in enumerate(self.inputs):
            shape = self.input_shape[i] if self.multi_input else self.input_shape
            rows.append((self._tensor_names[id(t)], shape_text(shape), "0", ""))
        for k, layer in enumerate(self.layers):
            rows.append((f"{k} {layer!r}", shape_text(layer.output_shape),
                         f"{layer.num_params:,}", ", ".join(self._sources[k])))
        outputs = ", ".join(self._tensor_names[id(t)] for t in self.outputs)
        rows.append(("output", "", "", outputs))
        return ("layer", "output shape", "params", "inputs"), rows


def _find_cycle(nodes) -> list | None:
    """A cycle among layers (nodes of one layer merged), as a list of layers, or None."""
    edges: dict[int, list[int]] = {}
    layers: dict[int, Layer] = {}
    for node in nodes:
        layers[id(node.layer)] = node.layer
        edges.setdefault(id(node.layer), [])
        for t in node.inputs:
            if t.node.layer is not None:  # an edge from the layer that made the input
                edges.setdefault(id(t.node.layer), []).append(id(node.layer))
    state = {}  # absent: unvisited; 1: on the current path; 2: done

    def visit(start):
        path, stack = [], [(start, iter(edges.get(start, ())))]
        state[start] = 1
        path.append(start)
        while stack:
            current, children = stack[-1]
            for child in children:
                if state.get(child) == 1:
                    cycle = path[path.index(child):] + [child]
                    return [layers[c] for c in cycle]
                if child not in state:
                    state[child] = 1
                    path.append(child)
                    stack.append((child, iter(edges.get(child, ()))))
                    break
            else:
                state[current] = 2
                path.pop()
                stack.pop()
        return None

    for key in edges:
        if key not in state:
            found = visit(key)
            if found:
                return found
    return None
