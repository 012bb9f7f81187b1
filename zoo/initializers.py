"""Weight initialisers: functions ``init(shape, fan_in, fan_out, rng, dtype) -> ndarray``.

Every initialiser takes the array's ``shape``, its ``fan_in`` and ``fan_out`` (computed by the
layer, which knows its own layout: a Dense weight ``(in, out)`` has ``fan_in = in``, a conv
kernel ``(out_c, in_c, kh, kw)`` has ``fan_in = in_c * kh * kw`` and ``fan_out = out_c * kh *
kw``), a ``numpy.random.Generator`` and the dtype. Values are drawn in float64 and then cast, so
a float32 and a float64 model built from the same seed start from the same numbers.

Each initialiser asks ``zoo.sizing.reserve`` before it allocates, so a model built under a
parameter budget is refused before an absurd array is drawn. ``get_initializer(name)`` resolves
option strings; a callable is returned unchanged, so a layer also accepts a user's own
function with the same signature.
"""

from __future__ import annotations

import math

import numpy as np

from zoo.errors import ConfigError
from zoo.sizing import reserve


def _check_fans(name: str, fan_in, fan_out) -> None:
    if fan_in <= 0 or fan_out <= 0:
        raise ConfigError(f"{name}: fan_in and fan_out must be positive; received "
                          f"fan_in={fan_in}, fan_out={fan_out}")


def he_normal(shape, fan_in, fan_out, rng, dtype=np.float32) -> np.ndarray:
    """Normal with std sqrt(2 / fan_in), for ReLU nets.

    He et al., "Delving Deep into Rectifiers", https://arxiv.org/abs/1502.01852.
    """
    _check_fans("he_normal", fan_in, fan_out)
    reserve(shape, dtype)
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(dtype)


def he_uniform(shape, fan_in, fan_out, rng, dtype=np.float32) -> np.ndarray:
    """Uniform on [-l, l] with l = sqrt(6 / fan_in) (same variance as he_normal)."""
    _check_fans("he_uniform", fan_in, fan_out)
    reserve(shape, dtype)
    limit = math.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, shape).astype(dtype)


def glorot_normal(shape, fan_in, fan_out, rng, dtype=np.float32) -> np.ndarray:
    """Normal with std sqrt(2 / (fan_in + fan_out)) (Glorot and Bengio, AISTATS 2010)."""
    _check_fans("glorot_normal", fan_in, fan_out)
    reserve(shape, dtype)
    return (rng.standard_normal(shape) * math.sqrt(2.0 / (fan_in + fan_out))).astype(dtype)


def glorot_uniform(shape, fan_in, fan_out, rng, dtype=np.float32) -> np.ndarray:
    """Uniform on [-l, l] with l = sqrt(6 / (fan_in + fan_out)) (Glorot and Bengio, 2010)."""
    _check_fans("glorot_uniform", fan_in, fan_out)
    reserve(shape, dtype)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(dtype)


def orthogonal(shape, fan_in, fan_out, rng, dtype=np.float32, gain: float = 1.0) -> np.ndarray:
    """A (semi-)orthogonal matrix, reshaped to ``shape``.

    The array is seen as a matrix ``(prod(shape[:-1]), shape[-1])``; its rows (or columns,
    whichever are fewer) are orthonormal. The QR factor's signs are fixed by diag(R) so the
    result is uniformly distributed over orthogonal matrices. Saxe et al., "Exact solutions to
    the nonlinear dynamics of learning in deep linear neural networks",
    https://arxiv.org/abs/1312.6120.
    """
    if len(shape) < 2:
        raise ConfigError(f"orthogonal: shape must have at least 2 axes; received {tuple(shape)}")
    reserve(shape, dtype)
    rows, cols = math.prod(shape[:-1]), shape[-1]
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return (gain * q).reshape(shape).astype(dtype)


def uniform_fan_in(shape, fan_in, fan_out, rng, dtype=np.float32) -> np.ndarray:
    """Uniform on [-l, l] with l = 1 / sqrt(fan_in): PyTorch's default for ``nn.Linear`` and
    ``nn.Conv*`` weights and biases (its ``kaiming_uniform_(a=sqrt(5))``), which presets that
    reproduce a PyTorch model use. Biases get it too, given the weight's fan_in."""
    _check_fans("uniform_fan_in", fan_in, fan_out)
    limit = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-limit, limit, shape).astype(dtype)


def zeros(shape, fan_in=None, fan_out=None, rng=None, dtype=np.float32) -> np.ndarray:
    """All zeros (biases)."""
    reserve(shape, dtype)
    return np.zeros(shape, dtype)


def ones(shape, fan_in=None, fan_out=None, rng=None, dtype=np.float32) -> np.ndarray:
    """All ones (normalisation scales)."""
    reserve(shape, dtype)
    return np.ones(shape, dtype)


INITIALIZERS = {f.__name__: f for f in (he_normal, he_uniform, glorot_normal, glorot_uniform,
                                        orthogonal, uniform_fan_in, zeros, ones)}
# PyTorch's names for the same distributions.
ALIASES = {"kaiming_normal": "he_normal", "kaiming_uniform": "he_uniform",
           "xavier_normal": "glorot_normal", "xavier_uniform": "glorot_uniform"}


def get_initializer(name):
    """The initialiser called ``name`` (or ``name`` itself when it is callable)."""
    if callable(name):
        return name
    key = ALIASES.get(name, name) if isinstance(name, str) else None
    if key not in INITIALIZERS:
        known = ", ".join(sorted(INITIALIZERS) + sorted(ALIASES))
        raise ConfigError(f"unknown initializer {name!r}; known: {known}")
    return INITIALIZERS[key]


def name_of(init) -> str:
    """The registered name of an initialiser, or its function name (for get_config)."""
    return getattr(init, "__name__", repr(init))
