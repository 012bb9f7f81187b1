"""Convolution layers: ``Conv2D`` on images (N, C, H, W) and ``Conv1D`` on sequences (N, T, F).

Float32 stride-1 Conv2D layers run as products on zoo's register tile that read the padded
images in place, with no im2col copy, on zoo's threads with the same bits on any count
(``zoo.kernels.conv_tiles``; their weight gradient with few weights per filter, as in LeNet's
first layer, is the direct kernel's). The others (float64, strided, and Conv1D) are im2col
(numba) + one GEMM (``zoo.kernels.blas``) + col2im (numba), except float64 stride-1 Conv2D
layers with few weights per filter, which run a direct kernel; see ``zoo.kernels.conv``.
The geometry helpers here (``conv_geometry`` and the argument checks) are shared with pooling.

LeCun et al., "Gradient-Based Learning Applied to Document Recognition", 1998.
"""

from __future__ import annotations

import numpy as np

from zoo import checks, kernels
from zoo.checks import int_tuple, positive_int
from zoo.errors import ConfigError
from zoo.initializers import get_initializer, name_of
from zoo.layers.base import Layer

PADDING_MODES = ("valid", "same")
# A float64 Conv2D runs the direct kernel for stride 1 and at most this many weights per
# filter (C * KH * KW), im2col + GEMM otherwise; a float32 one, its weight gradient. Measured
# before the float32 tile path (CPU ms for forward + backward, batch 64, float32, one thread;
# direct vs im2col): 1x28x28 k5 to 6 / 16 / 32 filters 1.2 vs 1.7,
# 3.1 vs 3.7, 6.0 vs 6.6; 1x28x28 k3 to 64 filters 5.2 vs 7.5; but 3x32x32 k3 to 32 filters
# (27 taps) 12.6 vs 11.1, 2x28x28 k5 (50 taps) 8.8 vs 8.6, 6x14x14 k5 (150 taps) 4.8 vs 2.9.
DIRECT_MAX_TAPS = 25
# Conv2D's input gradient is computed this many column entries at a time (512 KB in float32).
CHUNK_ELEMENTS = 1 << 17
AXES = {1: ("length",), 2: ("height", "width")}


# -- argument checks and geometry (shared with pooling) --------------------------------------
def padding_arg(layer: str, value, rank: int, modes=PADDING_MODES):
    """``"valid"``, ``"same"`` (if in ``modes``) or non-negative ints per axis."""
    if isinstance(value, str):
        if value.lower() in modes:
            return value.lower()
        expected = " or ".join(f'"{m}"' for m in modes)
        raise ConfigError(f"{layer}: padding must be {expected} or a non-negative integer; "
                          f"received padding={value!r}")
    return int_tuple(layer, "padding", value, rank, minimum=0)


def conv_geometry(layer: str, axis: str, size: int, kernel: int, stride: int, dilation: int,
                  padding) -> tuple:
    """``(pad_before, output_size)`` along one axis; one ConfigError if the kernel does not fit.

    ``padding`` is ``"valid"``, ``"same"`` (output ``ceil(size / stride)``, the extra zero,
    if any, after the input as in TensorFlow) or an int of zeros on both sides.
    """
    span = (kernel - 1) * dilation + 1
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + span - size, 0)
        return total // 2, out
    pad = 0 if padding == "valid" else int(padding)
    if size + 2 * pad < span:
        what = f"kernel span {span}" if dilation > 1 else f"kernel size {kernel}"
        raise ConfigError(
            f"{layer}: the {what} along {axis} is larger than the padded input "
            f"({size} + 2 x {pad} padding = {size + 2 * pad}); expected an input {axis} of at "
            f"least {span - 2 * pad}; received {size}")
    return pad, (size + 2 * pad - span) // stride + 1


class _Conv(Layer):
    """What Conv1D and Conv2D share: argument checks, config, parameters."""

    rank = 0

    def __init__(self, filters, kernel_size, stride=1, padding="valid", dilation=1,
                 use_bias=True, kernel_initializer=None, name=None):
        super().__init__(name)
        cls = type(self).__name__
        n = self.rank
        self.filters = positive_int(cls, "filters", filters)
        self.kernel_size = int_tuple(cls, "kernel_size", kernel_size, n)
        self.stride = int_tuple(cls, "stride", stride, n)
        self.padding = padding_arg(cls, padding, n)
        self.dilation = int_tuple(cls, "dilation", dilation, n)
        self.use_bias = checks.boolean(cls, "use_bias", use_bias)
        try:
            self.kernel_initializer = get_initializer(kernel_initializer or "he_uniform")
        except ConfigError as exc:
            raise ConfigError(f"{cls}: kernel_initializer: {exc}") from None
        self.needs_input_grad = True
        self._scratch = {}

    def _geometry(self, spatial: tuple) -> tuple:
        cls = type(self).__name__
        pads, outs = [], []
        for ax, size in enumerate(spatial):
            padding = self.padding if isinstance(self.padding, str) else self.padding[ax]
            pad, out = conv_geometry(cls, AXES[self.rank][ax], size, self.kernel_size[ax],
                                     self.stride[ax], self.dilation[ax], padding)
            pads.append(pad)
            outs.append(out)
        return tuple(pads), tuple(outs)

    def _check_shape(self, input_shape):
        cls = type(self).__name__
        layout = "(channels, height, width)" if self.rank == 2 else "(steps, features)"
        if len(input_shape) != self.rank + 1 or min(input_shape) < 1:
            raise ConfigError(f"{cls} expects inputs of shape {layout} per example; "
                              f"received input shape {tuple(input_shape)}")

    def _buffer(self, key, shape):
        """A scratch array reused while the batch shape stays the same."""
        buf = self._scratch.get(key)
        if buf is None or buf.shape != shape or buf.dtype != self.dtype:
            buf = self._scratch[key] = np.empty(shape, self.dtype)
        return buf

    def _gemm(self, a, b, out):
        """``out = a @ b`` as a ``kernels.blas.Gemm`` (made once per shape): the large products
        may use the BLAS threads the trainer's governor allows, with the same bits."""
        key = ("gemm", a.shape, b.shape, self.dtype)
        gemm = self._scratch.get(key)
        if gemm is None:
            gemm = self._scratch[key] = (kernels.blas.gemm_or_none(
                a.shape[0], a.shape[1], b.shape[1], self.dtype) or np.matmul)
        return gemm(a, b, out)

    def _add_parameters(self, shape, fan_in, fan_out, rng):
        w = self.kernel_initializer(shape, fan_in, fan_out, rng, self.dtype)
        self.weight = self.add_parameter("weight", w)
        self.bias = self.add_parameter("bias", np.zeros(self.filters)) if self.use_bias else None

    def get_config(self):
        def short(v):  # (5, 5) -> 5: the same layer, a shorter config
            return v if isinstance(v, str) or len(set(v)) > 1 else v[0]

        config = {"filters": self.filters, "kernel_size": short(self.kernel_size),
                  "stride": short(self.stride), "padding": short(self.padding),
                  "dilation": short(self.dilation), "use_bias": self.use_bias}
        if name_of(self.kernel_initializer) != "he_uniform":
            config["kernel_initializer"] = name_of(self.kernel_initializer)
        return config

    def __repr__(self):
        defaults = {"stride": 1, "padding": "valid", "dilation": 1, "use_bias": True}
        args = [f"{k}={v!r}" for k, v in self.get_config().items()
                if k in ("filters", "kernel_size") or defaults.get(k) != v]
        return f"{type(self).__name__}({', '.join(args)})"


class Conv2D(_Conv):
    """2-D convolution (cross-correlation, as in every framework) over images.

    Args:
        filters: output channels.
        kernel_size: an int or ``(kh, kw)``.
        stride: an int or ``(sh, sw)``.
        padding: ``"valid"`` (none), ``"same"`` (output ``ceil(input / stride)``), or zeros on
            both sides of each axis as an int or ``(ph, pw)``.
        dilation: spacing between kernel taps, an int or ``(dh, dw)``.
        use_bias: add a learned bias per filter.
        kernel_initializer: a name from ``zoo.initializers`` (default ``"he_uniform"``) or a
            function ``init(shape, fan_in, fan_out, rng, dtype)``.

    Parameters:
        weight: ``(filters, in_channels, kh, kw)`` (PyTorch's layout); bias: ``(filters,)``.

    Input shape: ``(N, C, H, W)``. Output shape: ``(N, filters, OH, OW)``.

    ``needs_input_grad = False`` (for a model's first layer) skips the input gradient;
    backward then returns None. float32 stride-1 layers run on zoo's register tile with no
    im2col copy (``zoo.kernels.conv_tiles``); other stride-1 layers with at most
    ``DIRECT_MAX_TAPS`` weights per filter run a direct kernel, the rest im2col + GEMM
    (``zoo.kernels.conv``).
    """

    rank = 2

    def build(self, input_shape, rng):
        self._check_shape(input_shape)
        c, h, w = input_shape
        self.pads, (oh, ow) = self._geometry((h, w))
        self.out_hw = (oh, ow)
        kh, kw = self.kernel_size
        self._add_parameters((self.filters, c, kh, kw), c * kh * kw, self.filters * kh * kw, rng)
        # float32 stride-1 layers: implicit products on zoo's register tile (no im2col copy)
        self.tiles = self.stride == (1, 1) and np.dtype(self.dtype) == np.float32
        few_taps = self.stride == (1, 1) and c * kh * kw <= DIRECT_MAX_TAPS
        self.direct = not self.tiles and few_taps
        self.direct_grad = self.tiles and few_taps  # the direct kernel's backward, threaded
        self.wide = self.stride == (1, 1)  # contiguous im2col copies (zoo.kernels.conv)
        self.input_shape = tuple(input_shape)
        self.output_shape = (self.filters, oh, ow)
        self.built = True
        return self.output_shape

    def _pad(self, x):
        """``x`` in a zero-bordered buffer (reused, border zeroed once), or ``x`` if no border."""
        shape = kernels.conv.padded_shape2d(x.shape, self.kernel_size, self.stride, self.pads,
                                            self.dilation, self.out_hw)
        if shape == x.shape:
            return x
        xp = self._scratch.get("xp")
        if xp is None or xp.shape != shape or xp.dtype != x.dtype:
            xp = self._scratch["xp"] = np.zeros(shape, x.dtype)
        return kernels.conv.pad2d(x, self.pads, xp)

    def _source(self, x):
        """``x`` padded and flattened with the zeroed tail ``zoo.kernels.conv_tiles`` reads
        (a reused buffer: border and tail zeroed once); sets ``_xp_shape``."""
        shape = kernels.conv.padded_shape2d(x.shape, self.kernel_size, self.stride, self.pads,
                                            self.dilation, self.out_hw)
        size = int(np.prod(shape))
        reach = kernels.conv_tiles.forward_reach(shape, self.kernel_size, self.dilation,
                                                 self.out_hw)
        xf = self._scratch.get("xf")
        if xf is None or xf.size != size + reach or getattr(self, "_xp_shape", None) != shape:
            xf = self._scratch["xf"] = np.zeros(size + reach, np.float32)
        self._xp_shape = shape
        (ph, pw), (h, w) = self.pads, x.shape[2:]
        xf[:size].reshape(shape)[:, :, ph:ph + h, pw:pw + w] = x
        return xf

    def _zeros(self, key, shape):
        """A float32 buffer of zeros made once per shape and reused: the kernels that take
        one write only its interior."""
        buf = self._scratch.get(key)
        if buf is None or buf.shape != shape:
            buf = self._scratch[key] = np.zeros(shape, np.float32)
        return buf

    def forward(self, x, training=False):
        self.check_input(x)
        bias = self.bias.value if self.use_bias else None
        if self.tiles:
            self._xf = self._source(x)
            return kernels.conv_tiles.conv2d_forward(self._xf, self._xp_shape,
                                                     self.weight.value, bias, self.dilation,
                                                     self.out_hw)
        xp = self._pad(np.ascontiguousarray(x))
        self._xp_shape = xp.shape
        if self.direct:
            self._xp = xp
            return kernels.conv.conv2d_direct(xp, self.weight.value, bias, self.dilation,
                                              self.out_hw)
        n, f = x.shape[0], self.filters
        cols = kernels.conv.im2col2d(xp, self.kernel_size, self.stride, self.dilation,
                                     self.out_hw, out=self._cols_buffer(xp.shape), wide=self.wide)
        y = self._gemm(self.weight.value.reshape(f, -1), cols,
                       self._buffer("y", (f, cols.shape[1])))
        out = np.empty((n, *self.output_shape), self.dtype)
        self._cols = cols
        return kernels.conv.fnp_to_nfp(y, bias, out, pitch=self._pitch(xp.shape))

    def _pitch(self, xp_shape):
        return xp_shape[3] if self.wide else self.out_hw[1]

    def _cols_buffer(self, xp_shape):
        oh, ow = self.out_hw
        per_example = kernels.conv.wide_length(self.out_hw, xp_shape[3]) if self.wide \
            else oh * ow
        rows = self.input_shape[0] * self.kernel_size[0] * self.kernel_size[1]
        return self._buffer("cols", (rows, xp_shape[0] * per_example))

    def backward(self, grad_out):
        grad_out = np.ascontiguousarray(grad_out)
        n, f = grad_out.shape[0], self.filters
        dbias = self.bias.grad if self.use_bias else None
        if self.direct_grad:
            dxp = kernels.conv_tiles.direct_backward(
                grad_out, self._xf, self._xp_shape, self.weight.value, self.dilation,
                self.weight.grad, dbias, self.needs_input_grad)
        elif self.tiles:
            wide, transposed = kernels.conv_tiles.gradient_shapes(self._xp_shape, f,
                                                                  self.out_hw)
            dx = gw = None
            if self.needs_input_grad:
                dx = np.empty((n, *self.input_shape), np.float32)
                gw = self._zeros("gw", wide)
            return kernels.conv_tiles.conv2d_backward(
                grad_out, self._xf, self._xp_shape, self.weight.value, self.dilation,
                self.pads, gw, self._zeros("gt", transposed), self.weight.grad, dbias, dx)
        elif self.direct:
            dxp = kernels.conv.conv2d_direct_backward(grad_out, self._xp, self.weight.value,
                                                      self.dilation, self.weight.grad, dbias,
                                                      input_grad=self.needs_input_grad)
        else:
            g = kernels.conv.nfp_to_fnp(grad_out, self._buffer("g", (f, self._cols.shape[1])),
                                        dbias, pitch=self._pitch(self._xp_shape))
            # cols @ g.T is the same product transposed, and runs ~1.7x faster in OpenBLAS
            # than g @ cols.T for these shapes (a long inner dimension)
            dwt = self._gemm(self._cols, g.T, self._buffer("dwt", (self._cols.shape[0], f)))
            self.weight.grad.reshape(f, -1)[...] = dwt.T
            dxp = self._col2im(g) if self.needs_input_grad else None
        if dxp is None or dxp.shape[1:] == self.input_shape:
            return dxp
        return kernels.conv.crop2d(dxp, self.pads, (n, *self.input_shape))

    def _col2im(self, g):
        """Input gradient: ``weight.T @ g`` then col2im, a few examples at a time so the
        column block stays in L2 (measured 22% faster than one big GEMM for LeNet's conv2)."""
        f, xp_shape, n = self.filters, self._xp_shape, self._xp_shape[0]
        per = g.shape[1] // n
        rows = self._cols.shape[0]
        chunk = max(1, min(n, CHUNK_ELEMENTS // (rows * per)))
        w_t = self.weight.value.reshape(f, -1).T
        # a padded gradient goes to a scratch buffer and is cropped into a new array
        dxp = np.empty(xp_shape, self.dtype) if xp_shape[1:] == self.input_shape \
            else self._buffer("dxp", xp_shape)
        flat = self._buffer("dcols", (rows * chunk * per,))
        for i in range(0, n, chunk):
            j = min(n, i + chunk)
            dcols = self._gemm(w_t, g[:, i * per:j * per],
                               flat[:rows * (j - i) * per].reshape(rows, (j - i) * per))
            kernels.conv.col2im2d(dcols, (j - i, *xp_shape[1:]), self.kernel_size, self.stride,
                                  self.dilation, self.out_hw, out=dxp[i:j], wide=self.wide)
        return dxp


class Conv1D(_Conv):
    """1-D convolution over sequences, channels last (time steps x features).

    Args: as ``Conv2D`` with ints for ``kernel_size``, ``stride``, ``padding``, ``dilation``.

    Parameters:
        weight: ``(kernel_size, in_features, filters)`` (Keras' layout, so that the window of K
            steps x F features, contiguous in the input, meets ``weight.reshape(K * F, filters)``
            in one GEMM); bias: ``(filters,)``.

    Input shape: ``(N, T, F)``. Output shape: ``(N, OT, filters)``.

    ``needs_input_grad = False`` (for a model's first layer) skips the input gradient;
    backward then returns None.
    """

    rank = 1

    def build(self, input_shape, rng):
        self._check_shape(input_shape)
        t, feat = input_shape
        (self.pad,), (self.out_t,) = self._geometry((t,))
        k = self.kernel_size[0]
        self._add_parameters((k, feat, self.filters), k * feat, k * self.filters, rng)
        self.input_shape = tuple(input_shape)
        self.output_shape = (self.out_t, self.filters)
        self.built = True
        return self.output_shape

    def forward(self, x, training=False):
        self.check_input(x)
        n = x.shape[0]
        k, feat = self.kernel_size[0], self.input_shape[1]
        cols = kernels.conv.im2col1d(np.ascontiguousarray(x), k, self.stride[0], self.pad,
                                     self.dilation[0], self.out_t,
                                     out=self._buffer("cols", (n * self.out_t, k * feat)))
        out = self._gemm(cols, self.weight.value.reshape(k * feat, self.filters),
                         np.empty((n * self.out_t, self.filters), self.dtype))
        if self.use_bias:
            out += self.bias.value
        self._cols = cols
        return out.reshape(n, self.out_t, self.filters)

    def backward(self, grad_out):
        n = grad_out.shape[0]
        k, feat = self.kernel_size[0], self.input_shape[1]
        g = np.ascontiguousarray(grad_out).reshape(n * self.out_t, self.filters)
        self._gemm(self._cols.T, g, self.weight.grad.reshape(k * feat, self.filters))
        if self.use_bias:
            np.sum(g, axis=0, out=self.bias.grad)
        if not self.needs_input_grad:
            return None
        dcols = self._gemm(g, self.weight.value.reshape(k * feat, self.filters).T,
                           self._buffer("dcols", self._cols.shape))
        return kernels.conv.col2im1d(dcols, (n, *self.input_shape), k, self.stride[0],
                                     self.pad, self.dilation[0], self.out_t)
