"""Recurrent layers: ``SimpleRNN``, ``LSTM``, ``GRU`` with full backprop through time, and
``Bidirectional``.

All the arithmetic is in ``zoo.kernels.recurrent``: the input projection of every step (one
GEMM, or inside the cells for inputs of at most 16 features), the time loop (one GEMM, for
float32 against the recurrent weights packed once per pass, and one fused numba cell per step,
on row blocks in parallel threads), and in backward the recurrent weights' gradient as one GEMM
over all steps (the input weights' too, or for narrow inputs summed in the time loop). The
layers keep time-major buffers, reused while the batch shape stays the same, and return fresh
arrays.

Parameters (G = 1, 4, 3 gate blocks): ``input_weight`` (F, G*units), ``recurrent_weight``
(units, G*units), ``bias`` (G*units); the GRU adds ``recurrent_bias`` (units,). Gate order:
LSTM i, f, g, o; GRU r, z, n (PyTorch's order; its ``weight_ih_l0`` is our
``input_weight.T``). The GRU is the "reset after" variant of cuDNN and PyTorch, see
``zoo.kernels.recurrent``.

Initial state: ``None`` (zeros) by default. Pass ``initial_state=`` to ``forward`` or set the
layer's ``initial_state`` attribute (used by every later forward while set): an ``(N, units)``
array, or a pair ``(h0, c0)`` for the LSTM. After ``backward`` the attribute
``initial_state_grad`` holds its gradient in the same structure (``None`` without one).

``needs_input_grad = False`` (for a model's first layer) skips the input-gradient GEMM;
backward then returns None.

Elman, "Finding Structure in Time", 1990; Hochreiter and Schmidhuber, "Long Short-Term
Memory", 1997; Cho et al., "Learning Phrase Representations using RNN Encoder-Decoder", 2014
(https://arxiv.org/abs/1406.1078); Jozefowicz, Zaremba and Sutskever, "An Empirical
Exploration of Recurrent Network Architectures", 2015 (forget-gate bias 1); Saxe, McClelland
and Ganguli 2014 (https://arxiv.org/abs/1312.6120, orthogonal recurrent weights).
"""

from __future__ import annotations

import numpy as np

from zoo import checks, kernels
from zoo.checks import positive_int
from zoo.errors import ConfigError, DataError, describe_array
from zoo.kernels import aligned
from zoo.layers.base import Layer


def orthogonal(shape: tuple, rng: np.random.Generator) -> np.ndarray:
    """``(units, G*units)``: each ``(units, units)`` gate block a random orthogonal matrix."""
    units, width = shape
    blocks = []
    with kernels.threads.single_threaded_blas():
        for _ in range(width // units):
            q, r = np.linalg.qr(rng.standard_normal((units, units)))
            blocks.append(q * np.sign(np.diag(r)))  # the sign fix makes q uniform (Haar)
    return np.concatenate(blocks, axis=1)


class _Recurrent(Layer):
    """What the three cells share: checks, buffers, projections and weight gradients."""

    GATES = 1
    STATES = 1  # arrays in the state: h (1) or h and c (2)

    def __init__(self, units: int, return_sequences: bool = False, reverse: bool = False,
                 name: str | None = None):
        super().__init__(name)
        kind = type(self).__name__
        self.units = positive_int(kind, "units", units)
        self.return_sequences = checks.boolean(kind, "return_sequences", return_sequences)
        self.reverse = checks.boolean(kind, "reverse", reverse)
        self.initial_state = None
        self.initial_state_grad = None
        self.needs_input_grad = True
        self._key: tuple | None = None

    def build(self, input_shape, rng):
        kind = type(self).__name__
        if len(input_shape) != 2:
            raise ConfigError(f"{kind} expects sequences (batch, steps, features); received "
                              f"an input shape of rank {len(input_shape) + 1}: "
                              f"(batch, {', '.join(map(str, input_shape))})")
        steps, features = (int(d) for d in input_shape)
        units, width = self.units, self.GATES * self.units
        limit = np.sqrt(6.0 / (features + width))  # Glorot and Bengio 2010
        self.input_weight = self.add_parameter(
            "input_weight", rng.uniform(-limit, limit, (features, width)))
        self.recurrent_weight = self.add_parameter(
            "recurrent_weight", orthogonal((units, width), rng))
        self.bias = self.add_parameter("bias", self.initial_bias())
        self.input_shape = (steps, features)
        self.output_shape = (steps, units) if self.return_sequences else (units,)
        self.built = True
        return self.output_shape

    def initial_bias(self) -> np.ndarray:
        return np.zeros(self.GATES * self.units)

    def get_config(self):
        config = {"units": self.units, "return_sequences": self.return_sequences}
        if self.reverse:
            config["reverse"] = True
        return config

    # -- shared steps ------------------------------------------------------------------------
    def _work(self, n: int, t: int) -> dict:
        """Time-major work arrays, reallocated only when the batch shape or dtype changes."""
        key = (n, t, self.dtype)
        if self._key != key:
            u, w, f = self.units, self.GATES * self.units, self.input_weight.value.shape[0]
            dt = self.dtype
            # On cache lines (zoo.kernels.aligned): the kernels' 64-byte vectors then never
            # straddle two.
            self._buf = {"x": aligned.empty((t, n, f), dt), "gates": aligned.empty((t, n, w), dt),
                         "h": aligned.empty((t + 1, n, u), dt), "dz": aligned.empty((t, n, w), dt),
                         "dx": aligned.empty((t, n, f), dt)}
            self._buf.update(self.extra_buffers(n, t))
            self._key = key
        return self._buf

    def extra_buffers(self, n: int, t: int) -> dict:
        return {}

    def _prepare(self, x, initial_state) -> dict:
        """Check ``x``, copy it time-major and place the initial state."""
        kind = type(self).__name__
        if not self.built:
            raise ConfigError(f"{self!r} is used before build(); build it with an input shape")
        features = self.input_shape[1]
        if not isinstance(x, np.ndarray) or x.ndim != 3 or x.shape[2] != features \
                or x.shape[1] == 0:
            raise DataError(f"{kind} expects input of shape (batch, steps, {features}); "
                            f"received {describe_array(x)}")
        n, t, _ = x.shape
        buf = self._work(n, t)
        buf["x"][...] = (x[:, ::-1] if self.reverse else x).transpose(1, 0, 2)
        state = self.initial_state if initial_state is None else initial_state
        self._zero_init = state is None
        arrays = (state,) if self.STATES == 1 and state is not None else state
        if state is not None and (not isinstance(arrays, (tuple, list))
                                  or len(arrays) != self.STATES):
            what = "an (h0, c0) pair" if self.STATES == 2 else "one array"
            raise DataError(f"{kind}: initial_state must be {what} of shape ({n}, "
                            f"{self.units}); received {type(state).__name__}")
        for i, name in enumerate(self.state_names()):
            if state is None:
                buf[name][0] = 0
                continue
            assert arrays is not None  # a state was given
            s = arrays[i]
            if not isinstance(s, np.ndarray) or s.shape != (n, self.units):
                raise DataError(f"{kind}: initial_state must have shape ({n}, {self.units}); "
                                f"received {describe_array(s)}")
            buf[name][0] = s
        return buf

    def _cache(self) -> dict:
        if self._key is None:
            raise ConfigError(f"{self!r}: backward called before forward")
        return self._buf

    def state_names(self) -> tuple:
        return ("h",)

    def _output(self, h) -> np.ndarray:
        """A fresh (N, T, U) or (N, U) array: returned buffers would change under the caller."""
        t = h.shape[0] - 1
        if not self.return_sequences:
            return h[t].copy()
        seq = h[1:]
        return np.ascontiguousarray((seq[::-1] if self.reverse else seq).transpose(1, 0, 2))

    def _grad_out(self, grad_out, buf) -> np.ndarray:
        """dL/dh time-major (T, N, U), or (N, U) for the last step only."""
        t, n = buf["gates"].shape[:2]
        shape = (n, t, self.units) if self.return_sequences else (n, self.units)
        if not isinstance(grad_out, np.ndarray) or grad_out.shape != shape:
            raise DataError(f"{type(self).__name__}: backward expects a gradient of shape "
                            f"{shape} like its last output; received {describe_array(grad_out)}")
        if not self.return_sequences:
            return np.ascontiguousarray(grad_out, dtype=self.dtype)
        dh = buf.setdefault("dh", aligned.empty((t, n, self.units), self.dtype))
        dh[...] = (grad_out[:, ::-1] if self.reverse else grad_out).transpose(1, 0, 2)
        return dh

    def _dx(self, buf):
        return buf["dx"] if self.needs_input_grad else None

    def _grad_in(self, buf) -> np.ndarray | None:
        """dL/dx batch-major (N, T, F), a fresh array (None if not needed)."""
        if not self.needs_input_grad:
            return None
        dx = buf["dx"].transpose(1, 0, 2)
        return np.ascontiguousarray(dx[:, ::-1] if self.reverse else dx)

    def _grads(self) -> tuple:
        return (self.input_weight.grad, self.recurrent_weight.grad, self.bias.grad)


class SimpleRNN(_Recurrent):
    """Fully connected tanh recurrence, ``h_t = tanh(x_t W + h_{t-1} R + b)`` (Elman 1990).

    Args:
        units: size of the state and of the output.
        return_sequences: return every step's state ``(N, T, units)``, not only the last.
        reverse: read the sequence from its last step to its first (outputs stay aligned
            with the input steps); ``Bidirectional`` uses it.

    Input shape: ``(N, T, F)``. Output shape: ``(N, units)`` or ``(N, T, units)``.
    """

    GATES = 1

    def forward(self, x, training=False, initial_state=None):
        buf = self._prepare(x, initial_state)
        kernels.recurrent.rnn_forward(buf["x"], self.input_weight.value,
                                      self.recurrent_weight.value, self.bias.value, buf["h"],
                                      buf["gates"], self._zero_init)
        return self._output(buf["h"])

    def backward(self, grad_out):
        buf = self._cache()
        self.initial_state_grad = kernels.recurrent.rnn_backward(
            buf["x"], self.input_weight.value, self.recurrent_weight.value, buf["h"],
            self._grad_out(grad_out, buf), buf["dz"], self._dx(buf), *self._grads(),
            self._zero_init)
        return self._grad_in(buf)


class LSTM(_Recurrent):
    """Long short-term memory (Hochreiter and Schmidhuber 1997; forget gate, Gers et al. 2000).

    ``i, f, o = sigmoid(.)``, ``g = tanh(.)`` of ``x_t W + h_{t-1} R + b`` (gate order i, f,
    g, o); ``c_t = f c_{t-1} + i g``, ``h_t = o tanh(c_t)``. The forget-gate bias starts at 1
    (Jozefowicz et al. 2015) so that early in training the cell keeps its memory.

    Args:
        units: size of the hidden and cell states and of the output.
        return_sequences: return every step's ``h`` ``(N, T, units)``, not only the last.
        reverse: read the sequence from its last step to its first (outputs stay aligned).
        unit_forget_bias: start the forget-gate bias at 1 (else 0).

    Input shape: ``(N, T, F)``. Output shape: ``(N, units)`` or ``(N, T, units)``.
    The initial state is a pair ``(h0, c0)``.
    """

    GATES = 4
    STATES = 2

    def __init__(self, units: int, return_sequences: bool = False, reverse: bool = False,
                 unit_forget_bias: bool = True, name: str | None = None):
        super().__init__(units, return_sequences, reverse, name)
        self.unit_forget_bias = bool(unit_forget_bias)

    def initial_bias(self):
        bias = np.zeros(4 * self.units)
        if self.unit_forget_bias:
            bias[self.units:2 * self.units] = 1.0
        return bias

    def get_config(self):
        config = super().get_config()
        if not self.unit_forget_bias:
            config["unit_forget_bias"] = False
        return config

    def state_names(self):
        return ("h", "c")

    def extra_buffers(self, n, t):
        return {"c": aligned.empty((t + 1, n, self.units), self.dtype),
                "tanh_c": aligned.empty((t, n, self.units), self.dtype)}

    def forward(self, x, training=False, initial_state=None):
        buf = self._prepare(x, initial_state)
        kernels.recurrent.lstm_forward(buf["x"], self.input_weight.value,
                                       self.recurrent_weight.value, self.bias.value, buf["h"],
                                       buf["c"], buf["tanh_c"], buf["gates"], self._zero_init)
        return self._output(buf["h"])

    def backward(self, grad_out):
        buf = self._cache()
        dh0, dc0 = kernels.recurrent.lstm_backward(
            buf["x"], self.input_weight.value, self.recurrent_weight.value, buf["h"], buf["c"],
            buf["tanh_c"], buf["gates"], self._grad_out(grad_out, buf), buf["dz"],
            self._dx(buf), *self._grads(), self._zero_init)
        self.initial_state_grad = None if self._zero_init else (dh0, dc0)
        return self._grad_in(buf)


class GRU(_Recurrent):
    """Gated recurrent unit (Cho et al. 2014), "reset after" as in cuDNN and PyTorch.

    ``r, z = sigmoid(x_t W + h_{t-1} R + b)`` (blocks r, z),
    ``n = tanh(x_t W_n + b_n + r * (h_{t-1} R_n + b_hn))``, ``h_t = (1 - z) n + z h_{t-1}``.
    Resetting after the recurrent product lets one GEMM per step serve all three gates; it
    needs the extra bias ``recurrent_bias`` (b_hn, shape ``(units,)``) inside the reset.

    Args:
        units: size of the state and of the output.
        return_sequences: return every step's state ``(N, T, units)``, not only the last.
        reverse: read the sequence from its last step to its first (outputs stay aligned).

    Input shape: ``(N, T, F)``. Output shape: ``(N, units)`` or ``(N, T, units)``.
    """

    GATES = 3

    def build(self, input_shape, rng):
        shape = super().build(input_shape, rng)
        self.recurrent_bias = self.add_parameter("recurrent_bias", np.zeros(self.units))
        return shape

    def extra_buffers(self, n, t):
        return {"hn": aligned.empty((t, n, self.units), self.dtype),
                "dzh": aligned.empty((t, n, 3 * self.units), self.dtype)}

    def forward(self, x, training=False, initial_state=None):
        buf = self._prepare(x, initial_state)
        kernels.recurrent.gru_forward(buf["x"], self.input_weight.value,
                                      self.recurrent_weight.value, self.bias.value,
                                      self.recurrent_bias.value, buf["h"], buf["hn"],
                                      buf["gates"], self._zero_init)
        return self._output(buf["h"])

    def backward(self, grad_out):
        buf = self._cache()
        self.initial_state_grad = kernels.recurrent.gru_backward(
            buf["x"], self.input_weight.value, self.recurrent_weight.value, buf["h"], buf["hn"],
            buf["gates"], self._grad_out(grad_out, buf), buf["dz"], buf["dzh"], self._dx(buf),
            *self._grads(), self.recurrent_bias.grad, self._zero_init)
        return self._grad_in(buf)


class Bidirectional(Layer):
    """Run a recurrent layer forwards and a copy of it backwards; concatenate their outputs.

    The copy has the same configuration with ``reverse`` flipped and its own weights. Outputs
    are ``[forward, backward]`` along the feature axis: ``(N, 2*units)`` (the forward layer's
    last step and the backward layer's, which has read the whole sequence from the end) or
    ``(N, T, 2*units)`` aligned step by step. Parameters are named ``forward.<name>`` and
    ``backward.<name>``. Initial states are set on ``forward_layer`` and ``backward_layer``.

    Schuster and Paliwal, "Bidirectional Recurrent Neural Networks", 1997.
    """

    def __init__(self, layer, name: str | None = None):
        super().__init__(name)
        if not isinstance(layer, _Recurrent):
            raise ConfigError(f"Bidirectional wraps a SimpleRNN, LSTM or GRU; received "
                              f"{type(layer).__name__}")
        if layer.built:
            raise ConfigError("Bidirectional expects an unbuilt layer; it builds both copies")
        self.forward_layer = layer
        config = dict(layer.get_config(), reverse=not layer.reverse)
        self.backward_layer = type(layer)(**config)
        self.layers = [self.forward_layer, self.backward_layer]
        self.needs_input_grad = True

    def build(self, input_shape, rng, dtype=None):
        if dtype is not None:
            self.dtype = np.dtype(dtype).type
        for layer in self.layers:
            shape = layer.build(input_shape, rng, dtype=self.dtype)
        self.input_shape = tuple(input_shape)
        self.output_shape = (*shape[:-1], 2 * shape[-1])
        self.built = True
        return self.output_shape

    def forward(self, x, training=False):
        return np.concatenate([layer.forward(x, training) for layer in self.layers], axis=-1)

    def backward(self, grad_out):
        units = self.forward_layer.units
        for layer in self.layers:
            layer.needs_input_grad = self.needs_input_grad
        dx = self.forward_layer.backward(grad_out[..., :units])
        dx_back = self.backward_layer.backward(grad_out[..., units:])
        if dx is not None:
            dx += dx_back
        return dx

    def get_config(self):
        return {"layer": repr(self.forward_layer)}

    def named_parameters(self, prefix=""):
        return (self.forward_layer.named_parameters(prefix + "forward.")
                + self.backward_layer.named_parameters(prefix + "backward."))

    def named_buffers(self, prefix=""):
        return (self.forward_layer.named_buffers(prefix + "forward.")
                + self.backward_layer.named_buffers(prefix + "backward."))

    def parameters(self):
        return [p for _, p in self.named_parameters()]
