"""Activation kernels: forward and backward of relu, leaky_relu, tanh, sigmoid, gelu, gelu_erf.

Every function works elementwise on C-contiguous float32 or float64 arrays of any shape and
writes into ``out`` when given (``out`` may be the input itself). The backward of relu,
leaky_relu, tanh and sigmoid reads the cached *output* ``y`` (so a layer keeps one array), gelu's
and gelu_erf's read the input ``x``. ``gelu`` is the tanh approximation, ``gelu_erf`` the exact
form ``x * Phi(x)`` that PyTorch's ``nn.GELU()`` computes by default.

float32 tanh, sigmoid and gelu use a rational minimax approximation of tanh (odd degree-13 over
degree-6 polynomial, the one Eigen and XLA use, accurate to a few float32 ulps) because numba
calls libm's scalar ``tanhf`` per element, ~50x slower than this vectorised form; sigmoid is
``0.5 + 0.5 * tanh(x / 2)``, as XLA computes it. float64 (used by gradient checks) calls libm.

float32 erf (for gelu_erf) is likewise a rational odd degree-13 over even degree-8 form on
[-4, 4] (Eigen's ``generic_fast_erf_float``; beyond 4, erf is +-1 in float32); float64 calls libm.

``scalar_tanh``, ``scalar_sigmoid`` and ``scalar_erf`` are the same per-element functions for
other kernels' ``@njit`` code (recurrent cells): they pick the fast or exact form from the
argument's type. ``scalar_exp`` is exp for them (softmax cross-entropy): for float32, float64
arithmetic that loops vectorise, rounded once (correctly rounded but a hair from ties);
libm's for float64.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from zoo.errors import DataError, describe_array
from zoo.kernels._jit import njit
from zoo.kernels.sgemm import FUSED

# (relu, leaky_relu, tanh, sigmoid): backward from the output; gelu: from the input.
BACKWARD_FROM = {"relu": "output", "leaky_relu": "output", "tanh": "output",
                 "sigmoid": "output", "gelu": "input", "gelu_erf": "input"}

_GELU_K = 0.7978845608028654  # sqrt(2 / pi)
_GELU_C = 0.044715
_SQRT_HALF = 0.7071067811865476  # 1 / sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi)


# -- checks shared by the dense and loss kernels --------------------------------------------
def check_float(fn: str, name: str, a, like: np.ndarray | None = None) -> None:
    """Raise DataError unless ``a`` is a C-contiguous float32/float64 array (like ``like``)."""
    if not isinstance(a, np.ndarray) or a.dtype.char not in "fd":
        raise DataError(f"{fn}: {name} must be a float32 or float64 array; "
                        f"received {describe_array(a)}")
    if like is not None and (a.shape != like.shape or a.dtype != like.dtype):
        raise DataError(f"{fn}: {name} must be a {like.dtype} array of shape {like.shape}; "
                        f"received {describe_array(a)}")
    if not a.flags.c_contiguous:
        raise DataError(f"{fn}: {name} must be C-contiguous; received a strided view")


def output(fn: str, out, like: np.ndarray) -> np.ndarray:
    """``out`` checked against ``like``, or a new array shaped like it."""
    if out is None:
        return np.empty_like(like)
    check_float(fn, "out", out, like)
    return out


# -- per-element functions, specialised by type at compile time -----------------------------
# Compiled without fast-math: every kernel that calls one gets the same bits from it, however
# LLVM optimises the caller (see ``zoo.kernels.dense``). Their polynomials fuse each
# multiply-add where the CPU can (``multiply_add``), chosen once as in ``zoo.kernels.sgemm``,
# never by the compiler case by case.
@intrinsic
def multiply_add(typingctx, x, y, z):
    """``x * y + z`` in one rounding where the CPU has fused multiply-add (``sgemm.FUSED``),
    else two; floats of one type."""
    if not (isinstance(x, types.Float) and x == y == z):
        return None

    def codegen(context, builder, signature, args):
        if FUSED:
            kind = args[0].type
            name = "llvm.fma.f32" if isinstance(kind, ir.FloatType) else "llvm.fma.f64"
            fn = builder.module.declare_intrinsic(name, fnty=ir.FunctionType(kind, [kind] * 3))
            return builder.call(fn, args)
        return builder.fadd(builder.fmul(args[0], args[1]), args[2])

    return x(x, y, z), codegen


def scalar_tanh(v):
    """tanh of one float inside ``@njit`` code: fast rational form for float32, libm for float64."""
    return np.tanh(v)


def scalar_sigmoid(v):
    """The logistic function of one float inside ``@njit`` code (fast for float32)."""
    return 1.0 / (1.0 + np.exp(-v))


def scalar_erf(v):
    """erf of one float inside ``@njit`` code: fast rational form for float32, libm for float64."""
    return math.erf(v)


def scalar_exp(v):
    """exp of one float inside ``@njit`` code: a form loops vectorise for float32, libm for
    float64."""
    return np.exp(v)


def _f32(*values):
    return tuple(np.float32(v) for v in values)


@njit(fastmath=False)
def _odd13(x2, a1, a3, a5, a7, a9, a11, a13):
    """``a1 + a3 x2 + ... + a13 x2^6`` by Horner's rule: the odd numerator over ``x``."""
    return multiply_add(x2, multiply_add(x2, multiply_add(x2, multiply_add(x2, multiply_add(
        x2, multiply_add(x2, a13, a11), a9), a7), a5), a3), a1)


@overload(scalar_tanh, jit_options={"fastmath": False})
def _scalar_tanh(v):
    if v != types.float32:
        return lambda v: np.tanh(v)
    a1, a3, a5, a7, a9, a11, a13 = _f32(
        4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
        -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16)
    b0, b2, b4, b6 = _f32(4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04,
                          1.19825839466702e-06)
    # The fit holds on [-7.9053, 7.9053]; past 9, float32 tanh is +-1. Below 4e-4 tanh(x)
    # rounds to x, and the rational form would lose x's low bits for denormal-sized inputs.
    lim, nine, tiny, one = _f32(7.90531110763549805, 9.0, 4e-4, 1.0)

    def impl(v):
        x = min(max(v, -lim), lim)
        x2 = x * x
        p = x * _odd13(x2, a1, a3, a5, a7, a9, a11, a13)
        q = multiply_add(x2, multiply_add(x2, multiply_add(x2, b6, b4), b2), b0)
        t = p / q
        if abs(v) > nine:  # tanh is exactly +-1 in float32 there (NaN stays NaN below)
            t = one if v > 0 else -one
        return v if abs(v) < tiny else t

    return impl


@overload(scalar_erf, jit_options={"fastmath": False})
def _scalar_erf(v):
    if v != types.float32:
        return lambda v: math.erf(v)
    a1, a3, a5, a7, a9, a11, a13 = _f32(
        -1.60960333262415e-02, -2.95459980854025e-03, -7.34990630326855e-04,
        -5.69250639462346e-05, -2.10102402082508e-06, 2.77068142495902e-08,
        -2.72614225801306e-10)
    b0, b2, b4, b6, b8 = _f32(-1.42647390514189e-02, -7.37332916720468e-03,
                              -1.68282697438203e-03, -2.13374055278905e-04,
                              -1.45660718464996e-05)
    lim = np.float32(4.0)

    def impl(v):
        x = min(max(v, -lim), lim)  # a NaN input stays NaN through p / q
        x2 = x * x
        p = x * _odd13(x2, a1, a3, a5, a7, a9, a11, a13)
        q = multiply_add(x2, multiply_add(x2, multiply_add(x2, multiply_add(x2, b8, b6), b4),
                                          b2), b0)
        return p / q

    return impl


@intrinsic
def _power_of_two(typingctx, shifted):
    """``2.0 ** k`` for ``shifted = k + 1.5 * 2**52`` (``-1022 <= k <= 1023``): ``k`` sits in the
    low bits of the float64, which moves to the exponent field."""
    if shifted != types.float64:
        return None

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        bits = builder.bitcast(args[0], i64)
        exponent = builder.add(builder.sub(bits, ir.Constant(i64, 0x4338000000000000)),
                               ir.Constant(i64, 1023))
        return builder.bitcast(builder.shl(exponent, ir.Constant(i64, 52)), ir.DoubleType())

    return types.float64(shifted), codegen


@overload(scalar_exp, jit_options={"fastmath": False})
def _scalar_exp(v):
    if v != types.float32:
        return lambda v: np.exp(v)
    # exp(x) = 2**k * exp(r), r = x - k ln 2 in [-ln2/2, ln2/2], all in float64: Taylor's
    # degree 11 there is within 7e-15 of exp(r), so the float32 result is exp(x) correctly
    # rounded but where exp(x) lies within about 1e-7 ulp of a tie. libm's expf is a call per
    # element that no loop vectorises (~4 ns each: a third of the mlp-small step's loss);
    # this form is plain float64 arithmetic, the same bits on every CPU. Past the clamps,
    # float32's exp is 0 (below -104) or inf (above 89); a NaN stays NaN through r.
    c = tuple(1.0 / math.factorial(i) for i in range(12))
    log2e, ln2, shifter = 1.4426950408889634, 0.6931471805599453, 1.5 * 2.0 ** 52
    low, high = -104.0, 89.0

    def impl(v):
        x = min(max(np.float64(v), low), high)
        shifted = x * log2e + shifter  # k = round(x / ln 2), in the low bits
        k = shifted - shifter
        r = x - k * ln2
        p = c[11]
        p = p * r + c[10]
        p = p * r + c[9]
        p = p * r + c[8]
        p = p * r + c[7]
        p = p * r + c[6]
        p = p * r + c[5]
        p = p * r + c[4]
        p = p * r + c[3]
        p = p * r + c[2]
        p = p * r + c[1]
        p = p * r + c[0]
        return np.float32(p * _power_of_two(shifted))

    return impl


@overload(scalar_sigmoid, jit_options={"fastmath": False})
def _scalar_sigmoid(v):
    if v != types.float32:
        return lambda v: 1.0 / (1.0 + np.exp(-v))
    half = np.float32(0.5)
    return lambda v: half + half * scalar_tanh(half * v)


# -- kernels: flat loops over any-rank contiguous arrays, uniform (in, out, slope) ----------
@njit
def _relu(x, y, slope):
    xf, yf = x.reshape(x.size), y.reshape(y.size)
    zero = xf.dtype.type(0)
    for i in range(xf.size):
        v = xf[i]
        yf[i] = zero if v < zero else v  # noqa: FURB136 (max() may drop NaN; it must pass)


@njit
def _relu_backward(g, y, gx, slope):
    gf, yf, of = g.reshape(g.size), y.reshape(y.size), gx.reshape(gx.size)
    zero = gf.dtype.type(0)
    for i in range(gf.size):
        of[i] = gf[i] * (yf[i] > zero)  # arithmetic, not a branch: no mispredictions


@njit
def _leaky_relu(x, y, slope):
    xf, yf = x.reshape(x.size), y.reshape(y.size)
    a = xf.dtype.type(slope)
    for i in range(xf.size):
        v = xf[i]
        yf[i] = v * a if v < 0 else v


@njit
def _leaky_relu_backward(g, y, gx, slope):
    # With slope >= 0, y > 0 exactly where x > 0.
    gf, yf, of = g.reshape(g.size), y.reshape(y.size), gx.reshape(gx.size)
    a = gf.dtype.type(slope)
    for i in range(gf.size):
        of[i] = gf[i] if yf[i] > 0 else gf[i] * a


@njit
def _tanh(x, y, slope):
    xf, yf = x.reshape(x.size), y.reshape(y.size)
    for i in range(xf.size):
        yf[i] = scalar_tanh(xf[i])


@njit
def _tanh_backward(g, y, gx, slope):
    gf, yf, of = g.reshape(g.size), y.reshape(y.size), gx.reshape(gx.size)
    one = gf.dtype.type(1)
    for i in range(gf.size):
        t = yf[i]
        of[i] = gf[i] * (one - t * t)


@njit
def _sigmoid(x, y, slope):
    xf, yf = x.reshape(x.size), y.reshape(y.size)
    for i in range(xf.size):
        yf[i] = scalar_sigmoid(xf[i])


@njit
def _sigmoid_backward(g, y, gx, slope):
    gf, yf, of = g.reshape(g.size), y.reshape(y.size), gx.reshape(gx.size)
    one = gf.dtype.type(1)
    for i in range(gf.size):
        s = yf[i]
        of[i] = gf[i] * s * (one - s)


@njit
def gelu_constants(x):
    """GELU's constants in ``x``'s dtype: a Python float would promote float32 to float64."""
    dt = x.dtype.type
    return dt(0.5), dt(1), dt(_GELU_K), dt(_GELU_C), dt(3 * _GELU_C)


@njit
def gelu_value(v, consts):
    """GELU of one float, tanh form (Hendrycks and Gimpel, https://arxiv.org/abs/1606.08415)."""
    half, one, k, c, _ = consts
    return half * v * (one + scalar_tanh(k * (v + c * v * v * v)))


@njit
def gelu_derivative(v, consts):
    half, one, k, c, c3 = consts
    t = scalar_tanh(k * (v + c * v * v * v))
    return half * (one + t) + half * v * (one - t * t) * k * (one + c3 * v * v)


@njit
def _gelu(x, y, slope):
    xf, yf = x.reshape(x.size), y.reshape(y.size)
    consts = gelu_constants(xf)
    for i in range(xf.size):
        yf[i] = gelu_value(xf[i], consts)


@njit
def _gelu_backward(g, x, gx, slope):
    gf, xf, of = g.reshape(g.size), x.reshape(x.size), gx.reshape(gx.size)
    consts = gelu_constants(xf)
    for i in range(gf.size):
        of[i] = gf[i] * gelu_derivative(xf[i], consts)


@njit
def gelu_erf_constants(x):
    """gelu_erf's constants in ``x``'s dtype (see ``gelu_constants``)."""
    dt = x.dtype.type
    return dt(0.5), dt(1), dt(_SQRT_HALF), dt(_INV_SQRT_2PI)


@njit
def gelu_erf_value(v, consts):
    """GELU of one float, exact form ``x * Phi(x) = x (1 + erf(x / sqrt 2)) / 2``."""
    half, one, r, _ = consts
    return half * v * (one + scalar_erf(v * r))


@njit
def gelu_erf_derivative(v, consts):
    """``Phi(x) + x * phi(x)``, phi the standard normal density."""
    half, one, r, c = consts
    return half * (one + scalar_erf(v * r)) + v * c * np.exp(-half * v * v)


@njit
def _gelu_erf(x, y, slope):
    xf, yf = x.reshape(x.size), y.reshape(y.size)
    consts = gelu_erf_constants(xf)
    for i in range(xf.size):
        yf[i] = gelu_erf_value(xf[i], consts)


@njit
def _gelu_erf_backward(g, x, gx, slope):
    gf, xf, of = g.reshape(g.size), x.reshape(x.size), gx.reshape(gx.size)
    consts = gelu_erf_constants(xf)
    for i in range(gf.size):
        of[i] = gf[i] * gelu_erf_derivative(xf[i], consts)


KERNELS = {
    "relu": (_relu, _relu_backward),
    "leaky_relu": (_leaky_relu, _leaky_relu_backward),
    "tanh": (_tanh, _tanh_backward),
    "sigmoid": (_sigmoid, _sigmoid_backward),
    "gelu": (_gelu, _gelu_backward),
    "gelu_erf": (_gelu_erf, _gelu_erf_backward),
}


# -- public wrappers ------------------------------------------------------------------------
def forward(name: str, x: np.ndarray, out: np.ndarray | None = None,
            negative_slope: float = 0.01, check: bool = True) -> np.ndarray:
    """Apply the activation ``name`` elementwise; returns ``out`` (new array if None).

    ``check=False`` skips the checks, for layers that made ``out`` themselves and checked ``x``.
    """
    if check:
        check_float(name, "x", x)
        out = output(name, out, x)
    assert out is not None, "check=False needs out"
    KERNELS[name][0](x, out, negative_slope)
    return out


def backward(name: str, grad_out: np.ndarray, cached: np.ndarray,
             out: np.ndarray | None = None, negative_slope: float = 0.01,
             check: bool = True) -> np.ndarray:
    """Gradient w.r.t. the input; ``cached`` is the output (or gelu's input), see BACKWARD_FROM."""
    if check:
        fn = name + "_backward"
        check_float(fn, "grad_out", grad_out)
        check_float(fn, "y" if BACKWARD_FROM[name] == "output" else "x", cached, grad_out)
        out = output(fn, out, grad_out)
    assert out is not None, "check=False needs out"
    KERNELS[name][1](grad_out, cached, out, negative_slope)
    return out


def relu(x, out=None):
    """max(x, 0)."""
    return forward("relu", x, out)


def relu_backward(grad_out, y, out=None):
    """grad_out where the output y > 0, else 0."""
    return backward("relu", grad_out, y, out)


def leaky_relu(x, negative_slope=0.01, out=None):
    """x for x >= 0, negative_slope * x otherwise (Maas et al., 2013); negative_slope >= 0."""
    return forward("leaky_relu", x, out, negative_slope)


def leaky_relu_backward(grad_out, y, negative_slope=0.01, out=None):
    """grad_out where the output y > 0, negative_slope * grad_out elsewhere."""
    return backward("leaky_relu", grad_out, y, out, negative_slope)


def tanh(x, out=None):
    """Hyperbolic tangent."""
    return forward("tanh", x, out)


def tanh_backward(grad_out, y, out=None):
    """grad_out * (1 - y^2) from the output y = tanh(x)."""
    return backward("tanh", grad_out, y, out)


def sigmoid(x, out=None):
    """The logistic function 1 / (1 + exp(-x))."""
    return forward("sigmoid", x, out)


def sigmoid_backward(grad_out, y, out=None):
    """grad_out * y * (1 - y) from the output y = sigmoid(x)."""
    return backward("sigmoid", grad_out, y, out)


def gelu(x, out=None):
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return forward("gelu", x, out)


def gelu_backward(grad_out, x, out=None):
    """GELU's derivative at the input x, times grad_out."""
    return backward("gelu", grad_out, x, out)


def gelu_erf(x, out=None):
    """GELU, exact form: 0.5 x (1 + erf(x / sqrt 2)) (PyTorch's ``GELU(approximate="none")``)."""
    return forward("gelu_erf", x, out)


def gelu_erf_backward(grad_out, x, out=None):
    """gelu_erf's derivative at the input x, times grad_out."""
    return backward("gelu_erf", grad_out, x, out)
