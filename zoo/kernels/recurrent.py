"""Fused recurrent cells: the gate maths of one time step in one kernel, plus the time loops.

A recurrent layer does three things per sequence: one GEMM projects the inputs of all time
steps at once (the layer does it, before the loop); then, step by step, one BLAS GEMM applies
the recurrent weights to the previous state and one fused kernel here adds the input
projection and the bias, applies every gate's non-linearity and produces the new state,
caching what backward needs. Backward mirrors it: per step one fused kernel turns the state
gradient into pre-activation gradients and one GEMM carries it to the previous state; the
weight gradients are then one GEMM each over all steps (the layer does those too).

Why a Python loop over steps with BLAS rather than one numba kernel for the whole sequence:
the step GEMMs (batch 64 x hidden 128 x gates) run at BLAS speed only through numpy (numba's
``np.dot`` needs SciPy, which zoo does not depend on, and a hand-written numba GEMM runs at a
fraction of OpenBLAS's speed), while the per-step Python cost here is a few microseconds
against 25-100 us of GEMM per step. ``benchmarks/recurrent_step.py`` has the figures.

Layout: everything is time-major so each step's slice is one contiguous ``(N, width)`` block.
``gates`` is ``(T, N, G*U)``; states ``h`` (and ``c``) are ``(T + 1, N, U)`` with the initial
state in slot 0 and step t's output in slot t + 1. Gate blocks along the last axis:

- tanh RNN (Elman 1990): ``h' = tanh(x W + h R + b)``; G = 1.
- LSTM (Hochreiter and Schmidhuber 1997, with the forget gate of Gers et al. 2000), gate
  order i, f, g, o as in PyTorch and Keras: ``c' = f*c + i*g``, ``h' = o*tanh(c')``; G = 4.
- GRU (Cho et al. 2014) in the "reset after" form of cuDNN and PyTorch, gate order r, z, n:
  ``n = tanh(x W_n + b_n + r * (h R_n + b_hn))``, ``h' = (1 - z) * n + z * h``; G = 3.
  Applying the reset gate after the recurrent product lets one GEMM serve all three gates.

float32 uses a rational approximation of tanh (the [13/6] minimax form with the coefficients
of Eigen's fast float tanh; error below 3e-7) that LLVM vectorises, and
``sigmoid(x) = (1 + tanh(x / 2)) / 2``; float64 uses ``math.tanh`` so gradient checks are
exact.
"""

from __future__ import annotations

import math

import numpy as np
from numba import types
from numba.extending import overload

from zoo.errors import DataError, describe_array
from zoo.kernels._jit import njit

_FLOATS = (np.float32, np.float64)
# float32 constants keep float32 arithmetic in float32 (a Python 1 or 0.5 would promote it to
# float64) and promote exactly to float64.
_ONE = np.float32(1.0)
_HALF = np.float32(0.5)


# -- scalar non-linearities ------------------------------------------------------------------
def _tanh(x):
    """tanh; float32 inside kernels gets the vectorisable rational form below."""
    return math.tanh(x)


def _tanh_f32(x):
    v = min(max(x, np.float32(-9.0)), np.float32(9.0))  # tanh(9) rounds to 1 in float32
    v2 = v * v
    p = v2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
    p = v2 * p + np.float32(-8.60467152213735e-11)
    p = v2 * p + np.float32(5.12229709037114e-08)
    p = v2 * p + np.float32(1.48572235717979e-05)
    p = v2 * p + np.float32(6.37261928875436e-04)
    p = v2 * p + np.float32(4.89352455891786e-03)
    q = v2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
    q = v2 * q + np.float32(2.26843463243900e-03)
    q = v2 * q + np.float32(4.89352518554385e-03)
    # np.divide, not '/': under numba's Python error model '/' checks for zero, which stops
    # the loop from vectorising (q >= 0.0049 here, never zero).
    return np.divide(v * p, q)


@overload(_tanh, inline="always")
def _tanh_typed(x):
    if x == types.float32:
        return _tanh_f32
    return lambda x: math.tanh(x)


def _sigmoid(x):
    """The logistic function through tanh, so float32 shares the vectorised form."""
    return _HALF + _HALF * math.tanh(_HALF * x)


def _sigmoid_any(x):
    return _HALF + _HALF * _tanh(_HALF * x)


# Inlined at numba IR level: in a cell with many calls LLVM's inliner gives up, and a call
# left in a loop stops it from vectorising.
@overload(_sigmoid, inline="always")
def _sigmoid_typed(x):
    return _sigmoid_any


# -- fused cells: one time step each ---------------------------------------------------------
# Each gate block is sliced into its own row view and indexed from 0: with offsets such as
# ``gates[n, 2 * u + j]`` LLVM cannot prove the index non-negative, keeps numba's wraparound
# select and falls back to gathers and scatters, about 5x slower.
@njit
def _rnn_cell(rec, xp, bias, h):
    n_, u_ = h.shape
    for n in range(n_):
        r = rec[n]
        x = xp[n]
        hn = h[n]
        for j in range(u_):
            hn[j] = _tanh(r[j] + x[j] + bias[j])


@njit
def _rnn_cell_backward(h, dh_rec, dh_out, use_out, dz, db):
    n_, u_ = h.shape
    for n in range(n_):
        hn = h[n]
        dr = dh_rec[n]
        do = dh_out[n]
        dzn = dz[n]
        for j in range(u_):
            dh = dr[j] + do[j] if use_out else dr[j]
            v = dh * (_ONE - hn[j] * hn[j])
            dzn[j] = v
            db[j] += v


@njit
def _lstm_cell(rec, gates, bias, c_prev, c, h, tanh_c):
    n_, u_ = h.shape
    bi, bf, bg, bo = bias[:u_], bias[u_:2 * u_], bias[2 * u_:3 * u_], bias[3 * u_:]
    for n in range(n_):
        gi, gf, gg, go = gates[n, :u_], gates[n, u_:2 * u_], gates[n, 2 * u_:3 * u_], \
            gates[n, 3 * u_:]
        ri, rf, rg, ro = rec[n, :u_], rec[n, u_:2 * u_], rec[n, 2 * u_:3 * u_], rec[n, 3 * u_:]
        cp, cn, hn, tn = c_prev[n], c[n], h[n], tanh_c[n]
        for j in range(u_):
            i = _sigmoid(gi[j] + ri[j] + bi[j])
            f = _sigmoid(gf[j] + rf[j] + bf[j])
            g = _tanh(gg[j] + rg[j] + bg[j])
            o = _sigmoid(go[j] + ro[j] + bo[j])
            cc = f * cp[j] + i * g
            tc = _tanh(cc)
            gi[j] = i
            gf[j] = f
            gg[j] = g
            go[j] = o
            cn[j] = cc
            tn[j] = tc
            hn[j] = o * tc


@njit
def _lstm_cell_backward(gates, c_prev, tanh_c, dh_rec, dh_out, use_out, dc, dz, db):
    """``dc`` holds dL/dc_t on entry and dL/dc_{t-1} on exit."""
    n_, u_ = tanh_c.shape
    bi, bf, bg, bo = db[:u_], db[u_:2 * u_], db[2 * u_:3 * u_], db[3 * u_:]
    for n in range(n_):
        gi, gf, gg, go = gates[n, :u_], gates[n, u_:2 * u_], gates[n, 2 * u_:3 * u_], \
            gates[n, 3 * u_:]
        zi, zf, zg, zo = dz[n, :u_], dz[n, u_:2 * u_], dz[n, 2 * u_:3 * u_], dz[n, 3 * u_:]
        cp, tn, dr, do, dcn = c_prev[n], tanh_c[n], dh_rec[n], dh_out[n], dc[n]
        for j in range(u_):
            dh = dr[j] + do[j] if use_out else dr[j]
            i = gi[j]
            f = gf[j]
            g = gg[j]
            o = go[j]
            tc = tn[j]
            dct = dcn[j] + dh * o * (_ONE - tc * tc)
            dzi = dct * g * i * (_ONE - i)
            dzf = dct * cp[j] * f * (_ONE - f)
            dzg = dct * i * (_ONE - g * g)
            dzo = dh * tc * o * (_ONE - o)
            dcn[j] = dct * f
            zi[j] = dzi
            zf[j] = dzf
            zg[j] = dzg
            zo[j] = dzo
            bi[j] += dzi
            bf[j] += dzf
            bg[j] += dzg
            bo[j] += dzo


@njit
def _gru_cell(rec, gates, bias, rbias, h_prev, h, hn):
    n_, u_ = h.shape
    br, bz, bn = bias[:u_], bias[u_:2 * u_], bias[2 * u_:]
    for n in range(n_):
        gr, gz, gn = gates[n, :u_], gates[n, u_:2 * u_], gates[n, 2 * u_:]
        rr, rz, rn = rec[n, :u_], rec[n, u_:2 * u_], rec[n, 2 * u_:]
        hp, ho, hr = h_prev[n], h[n], hn[n]
        for j in range(u_):
            r = _sigmoid(gr[j] + rr[j] + br[j])
            z = _sigmoid(gz[j] + rz[j] + bz[j])
            a = rn[j] + rbias[j]
            nn = _tanh(gn[j] + bn[j] + r * a)
            gr[j] = r
            gz[j] = z
            gn[j] = nn
            hr[j] = a
            ho[j] = (_ONE - z) * nn + z * hp[j]


@njit
def _gru_cell_backward(gates, hn, h_prev, dh_rec, dh_out, use_out, carry, dzx, dzh, db, dbhn):
    """``carry`` holds the direct part of dL/dh_t (through ``z * h``) on entry and exit.

    ``dzx`` are the gradients of the input-side pre-activations (x W + b), ``dzh`` those of
    the recurrent side (h R, with b_hn in its candidate block); they differ in that block only.
    """
    n_, u_ = hn.shape
    br, bz, bn = db[:u_], db[u_:2 * u_], db[2 * u_:]
    for n in range(n_):
        gr, gz, gn = gates[n, :u_], gates[n, u_:2 * u_], gates[n, 2 * u_:]
        xr, xz, xn = dzx[n, :u_], dzx[n, u_:2 * u_], dzx[n, 2 * u_:]
        hr, hz, hh = dzh[n, :u_], dzh[n, u_:2 * u_], dzh[n, 2 * u_:]
        a, hp, dr, do, cy = hn[n], h_prev[n], dh_rec[n], dh_out[n], carry[n]
        for j in range(u_):
            dh = dr[j] + cy[j] + do[j] if use_out else dr[j] + cy[j]
            r = gr[j]
            z = gz[j]
            nn = gn[j]
            dzn = dh * (_ONE - z) * (_ONE - nn * nn)
            dzz = dh * (hp[j] - nn) * z * (_ONE - z)
            dha = dzn * r
            dzr = dzn * a[j] * r * (_ONE - r)
            cy[j] = dh * z
            xr[j] = dzr
            xz[j] = dzz
            xn[j] = dzn
            hr[j] = dzr
            hz[j] = dzz
            hh[j] = dha
            br[j] += dzr
            bz[j] += dzz
            bn[j] += dzn
            dbhn[j] += dha


# -- checks ----------------------------------------------------------------------------------
def _check(name: str, x, shape: tuple, dtype) -> None:
    if not isinstance(x, np.ndarray) or x.dtype.type not in _FLOATS:
        raise DataError(f"{name} must be a float32 or float64 array; received {describe_array(x)}")
    if dtype is not None and x.dtype != dtype:
        raise DataError(f"{name} must have dtype {np.dtype(dtype)} like the gates; "
                        f"received {describe_array(x)}")
    if x.shape != tuple(shape):
        raise DataError(f"{name} must have shape {tuple(shape)}; received {describe_array(x)}")
    if not x.flags.c_contiguous:
        raise DataError(f"{name} must be C-contiguous; received a strided view")


def _dims(gates, g: int) -> tuple:
    if not isinstance(gates, np.ndarray) or gates.ndim != 3 or gates.dtype.type not in _FLOATS \
            or gates.shape[2] % g or gates.shape[2] == 0 or not gates.flags.c_contiguous:
        raise DataError(f"gates must be a C-contiguous float32 or float64 array of shape "
                        f"(T, N, {g} * units); received {describe_array(gates)}")
    t_, n_, width = gates.shape
    return t_, n_, width // g


def _check_dh_out(dh_out, t_, n_, u_, dtype) -> bool:
    """True if ``dh_out`` covers every step ``(T, N, U)``, False for the last step only."""
    every = isinstance(dh_out, np.ndarray) and dh_out.ndim == 3
    _check("dh_out", dh_out, (t_, n_, u_) if every else (n_, u_), dtype)
    return every


def _dh_at(dh_out, every: bool, t: int, t_: int):
    if every:
        return dh_out[t], True
    return dh_out, t == t_ - 1


# -- tanh RNN --------------------------------------------------------------------------------
def rnn_forward(gates, w_rec, bias, h, zero_init: bool = False) -> None:
    """Run a tanh RNN over the sequence; ``h[1:]`` receives the states.

    Args:
        gates: ``(T, N, U)`` input projections ``x_t W`` (without bias); left unchanged.
        w_rec: ``(U, U)`` recurrent weights. bias: ``(U,)``.
        h: ``(T + 1, N, U)``; ``h[0]`` is the initial state, ``h[1:]`` is written.
        zero_init: ``h[0]`` is all zeros, so the first recurrent GEMM is skipped.
    """
    t_, n_, u_ = _dims(gates, 1)
    dt = gates.dtype
    _check("w_rec", w_rec, (u_, u_), dt)
    _check("bias", bias, (u_,), dt)
    _check("h", h, (t_ + 1, n_, u_), dt)
    rec = np.zeros((n_, u_), dt)
    for t in range(t_):
        if t or not zero_init:
            np.matmul(h[t], w_rec, out=rec)
        _rnn_cell(rec, gates[t], bias, h[t + 1])


def rnn_backward(h, w_rec, dh_out, dz, db, need_dh0: bool = True):
    """Backprop through time for ``rnn_forward``; returns dL/dh_0 (or None).

    Args:
        h: the states written by ``rnn_forward``. w_rec: ``(U, U)``.
        dh_out: dL/dh for every step ``(T, N, U)``, or ``(N, U)`` for the last step only.
        dz: ``(T, N, U)``, receives the pre-activation gradients (for the weight GEMMs).
        db: ``(U,)``, receives the bias gradient (overwritten).
        need_dh0: compute the initial state's gradient (one more GEMM).
    """
    t_ = h.shape[0] - 1 if isinstance(h, np.ndarray) and h.ndim == 3 else -1
    t_, n_, u_ = _dims(dz, 1)
    dt = dz.dtype
    _check("h", h, (t_ + 1, n_, u_), dt)
    _check("w_rec", w_rec, (u_, u_), dt)
    _check("db", db, (u_,), dt)
    every = _check_dh_out(dh_out, t_, n_, u_, dt)
    w_t = np.ascontiguousarray(w_rec.T)  # a contiguous R^T makes the step GEMMs faster
    dh_rec = np.zeros((n_, u_), dt)
    db[...] = 0
    for t in range(t_ - 1, -1, -1):
        out, use = _dh_at(dh_out, every, t, t_)
        _rnn_cell_backward(h[t + 1], dh_rec, out, use, dz[t], db)
        if t or need_dh0:
            np.matmul(dz[t], w_t, out=dh_rec)
    return dh_rec if need_dh0 else None


# -- LSTM ------------------------------------------------------------------------------------
def lstm_forward(gates, w_rec, bias, h, c, tanh_c, zero_init: bool = False) -> None:
    """Run an LSTM over the sequence; ``h[1:]``, ``c[1:]`` and ``tanh_c`` receive the states.

    Args:
        gates: ``(T, N, 4U)`` input projections ``x_t W`` (without bias), gate order i, f, g,
            o; overwritten with the gate activations, which backward needs.
        w_rec: ``(U, 4U)``. bias: ``(4U,)``.
        h, c: ``(T + 1, N, U)``; slot 0 holds the initial states, ``[1:]`` is written.
        tanh_c: ``(T, N, U)``, receives tanh(c_t).
        zero_init: ``h[0]`` is all zeros, so the first recurrent GEMM is skipped.
    """
    t_, n_, u_ = _dims(gates, 4)
    dt = gates.dtype
    _check("w_rec", w_rec, (u_, 4 * u_), dt)
    _check("bias", bias, (4 * u_,), dt)
    _check("h", h, (t_ + 1, n_, u_), dt)
    _check("c", c, (t_ + 1, n_, u_), dt)
    _check("tanh_c", tanh_c, (t_, n_, u_), dt)
    rec = np.zeros((n_, 4 * u_), dt)
    for t in range(t_):
        if t or not zero_init:
            np.matmul(h[t], w_rec, out=rec)
        _lstm_cell(rec, gates[t], bias, c[t], c[t + 1], h[t + 1], tanh_c[t])


def lstm_backward(gates, c, tanh_c, w_rec, dh_out, dz, db, need_dh0: bool = True,
                  dc_out=None):
    """Backprop through time for ``lstm_forward``; returns ``(dh0, dc0)`` (None if not needed).

    Args:
        gates, c, tanh_c: as left by ``lstm_forward``. w_rec: ``(U, 4U)``.
        dh_out: dL/dh for every step ``(T, N, U)``, or ``(N, U)`` for the last step only.
        dz: ``(T, N, 4U)``, receives the pre-activation gradients. db: ``(4U,)``, overwritten.
        need_dh0: compute the initial states' gradients.
        dc_out: optional ``(N, U)`` dL/dc of the final cell state.
    """
    t_, n_, u_ = _dims(dz, 4)
    dt = dz.dtype
    _check("gates", gates, dz.shape, dt)
    _check("c", c, (t_ + 1, n_, u_), dt)
    _check("tanh_c", tanh_c, (t_, n_, u_), dt)
    _check("w_rec", w_rec, (u_, 4 * u_), dt)
    _check("db", db, (4 * u_,), dt)
    every = _check_dh_out(dh_out, t_, n_, u_, dt)
    w_t = np.ascontiguousarray(w_rec.T)
    dh_rec = np.zeros((n_, u_), dt)
    if dc_out is None:
        dc = np.zeros((n_, u_), dt)
    else:
        _check("dc_out", dc_out, (n_, u_), dt)
        dc = dc_out.copy()
    db[...] = 0
    for t in range(t_ - 1, -1, -1):
        out, use = _dh_at(dh_out, every, t, t_)
        _lstm_cell_backward(gates[t], c[t], tanh_c[t], dh_rec, out, use, dc, dz[t], db)
        if t or need_dh0:
            np.matmul(dz[t], w_t, out=dh_rec)
    return (dh_rec, dc) if need_dh0 else (None, None)


# -- GRU -------------------------------------------------------------------------------------
def gru_forward(gates, w_rec, bias, recurrent_bias, h, hn, zero_init: bool = False) -> None:
    """Run a reset-after GRU over the sequence; ``h[1:]`` receives the states.

    Args:
        gates: ``(T, N, 3U)`` input projections ``x_t W`` (without bias), gate order r, z, n;
            overwritten with the gate activations.
        w_rec: ``(U, 3U)``. bias: ``(3U,)`` input-side biases.
        recurrent_bias: ``(U,)``, b_hn, the bias of the candidate's recurrent product.
        h: ``(T + 1, N, U)``; ``h[0]`` is the initial state. hn: ``(T, N, U)``, receives
            ``h R_n + b_hn`` of each step.
        zero_init: ``h[0]`` is all zeros, so the first recurrent GEMM is skipped.
    """
    t_, n_, u_ = _dims(gates, 3)
    dt = gates.dtype
    _check("w_rec", w_rec, (u_, 3 * u_), dt)
    _check("bias", bias, (3 * u_,), dt)
    _check("recurrent_bias", recurrent_bias, (u_,), dt)
    _check("h", h, (t_ + 1, n_, u_), dt)
    _check("hn", hn, (t_, n_, u_), dt)
    rec = np.zeros((n_, 3 * u_), dt)
    for t in range(t_):
        if t or not zero_init:
            np.matmul(h[t], w_rec, out=rec)
        _gru_cell(rec, gates[t], bias, recurrent_bias, h[t], h[t + 1], hn[t])


def gru_backward(gates, hn, h, w_rec, dh_out, dzx, dzh, db, dbhn, need_dh0: bool = True):
    """Backprop through time for ``gru_forward``; returns dL/dh_0 (or None).

    Args:
        gates, hn, h: as left by ``gru_forward``. w_rec: ``(U, 3U)``.
        dh_out: dL/dh for every step ``(T, N, U)``, or ``(N, U)`` for the last step only.
        dzx, dzh: ``(T, N, 3U)``, receive the input-side and recurrent-side pre-activation
            gradients (for the input and recurrent weight GEMMs).
        db: ``(3U,)`` and dbhn: ``(U,)``, overwritten with the bias gradients.
    """
    t_, n_, u_ = _dims(dzx, 3)
    dt = dzx.dtype
    _check("dzh", dzh, dzx.shape, dt)
    _check("gates", gates, dzx.shape, dt)
    _check("hn", hn, (t_, n_, u_), dt)
    _check("h", h, (t_ + 1, n_, u_), dt)
    _check("w_rec", w_rec, (u_, 3 * u_), dt)
    _check("db", db, (3 * u_,), dt)
    _check("dbhn", dbhn, (u_,), dt)
    every = _check_dh_out(dh_out, t_, n_, u_, dt)
    w_t = np.ascontiguousarray(w_rec.T)
    dh_rec = np.zeros((n_, u_), dt)
    carry = np.zeros((n_, u_), dt)
    db[...] = 0
    dbhn[...] = 0
    for t in range(t_ - 1, -1, -1):
        out, use = _dh_at(dh_out, every, t, t_)
        _gru_cell_backward(gates[t], hn[t], h[t], dh_rec, out, use, carry, dzx[t], dzh[t],
                           db, dbhn)
        if t or need_dh0:
            np.matmul(dzh[t], w_t, out=dh_rec)
    if not need_dh0:
        return None
    dh_rec += carry
    return dh_rec
