"""Fused recurrent cells: the gate maths of one time step in one kernel, plus the time loops.

Per sequence: the inputs of all steps are projected at once (one GEMM; for narrow inputs,
F <= 16, the projection is fused into the cells instead, since BLAS is slow at GEMMs with an
inner dimension of 1 to 16); then step by step one GEMM applies the recurrent weights to the
previous state and one fused kernel adds the projection and the bias, applies every gate's
non-linearity and produces the new state, caching what backward needs. Backward mirrors it:
per step one fused kernel turns the state gradient into pre-activation gradients (and
accumulates the bias gradient) and one GEMM carries it to the previous state; the recurrent
weights' gradient (and the inputs' and, for wide inputs, the input weights') is then one GEMM
over all steps (``_gradients``). In float32 each block instead adds its rows' ``h_t^T dz_t`` to
its own part of the recurrent weights' gradient in the time loop, right after the cell, while
``dz_t`` is in cache (``zoo.kernels.sgemm`` with ``h_t`` read transposed in place, each
element one chain of multiply-adds over the block's steps in order); the parts are added in
block order. As one GEMM after the loop it was ~25% of an lstm step, at ~135 GFLOP/s, and one
more job for the threads to meet at. Narrow inputs have their input-weight gradient added row
by row in the backward cells (``_add_input_row``), while the row's pre-activation gradients
are in L1: as a GEMM over all steps with an inner dimension of 1 it read the whole ``dz``
from memory again (180 us of an lstm step's ~9 ms). When nothing reads the pre-activation
gradients after the loop (no input gradient, narrow inputs, float32: a model's first layer),
each block keeps only the current step's, in a buffer of its own (``_ring``), and ``dz`` is
not written.

The step GEMMs: float32 multiplies by the recurrent weights packed once per pass
(``zoo.kernels.packed``: a register tile in LLVM IR, 190-220 GFLOP/s on the lstm workload's
32 x 128 x 512 steps, where a BLAS call, repacking the 256 KB of weights at every step, ran at
100-140); float64 (gradient checks) calls numpy's own BLAS function (``zoo.kernels.cblas``).

The rows of a batch are independent through time, so the batch is cut into row blocks
(``_blocks``: from the sizes alone) and each block runs its whole time loop as one numba kernel
(``_rnn_loop`` ...) without the GIL. Driven from Python instead, each step held the GIL for a
few microseconds and two threads kept waking each other on it. The blocks are shared by
``zoo.kernels.threads``' count of threads, each with BLAS on one thread; a row's step products
do not depend on the rows beside it, and the parts of the bias (and narrow input-weight)
gradients are added in block order, so the results are the same on one thread and on several.

Layout: everything is time-major so each step's slice is one contiguous ``(N, width)`` block:
inputs ``x`` are ``(T, N, F)``, ``gates`` ``(T, N, G*U)``, states ``h`` (and ``c``)
``(T + 1, N, U)`` with the initial state in slot 0 and step t's output in slot t + 1. Gate
blocks along the last axis:

- tanh RNN (Elman 1990): ``h' = tanh(x W + h R + b)``; G = 1.
- LSTM (Hochreiter and Schmidhuber 1997, with the forget gate of Gers et al. 2000), gate
  order i, f, g, o as in PyTorch and Keras: ``c' = f*c + i*g``, ``h' = o*tanh(c')``; G = 4.
- GRU (Cho et al. 2014) in the "reset after" form of cuDNN and PyTorch, gate order r, z, n:
  ``n = tanh(x W_n + b_n + r * (h R_n + b_hn))``, ``h' = (1 - z) * n + z * h``; G = 3.
  Applying the reset gate after the recurrent product lets one GEMM serve all three gates.

float32 uses a rational approximation of tanh (the [13/6] form with the coefficients of
Eigen's fast float tanh; error below 3e-7) that LLVM vectorises, and
``sigmoid(x) = (1 + tanh(x / 2)) / 2``; the LSTM's four gates share one division
(``_lstm_gates_f32``). float64 uses ``math.tanh`` so gradient checks are exact. The cells are
vectorised with 512-bit vectors where the CPU has them (``zoo.kernels.vector_width``), and the
work arrays start on cache lines (``zoo.kernels.aligned``); neither changes a bit.
"""

from __future__ import annotations

import math

import numpy as np
from numba import types
from numba.extending import overload

from zoo.errors import DataError, describe_array
from zoo.kernels import aligned, cblas, packed, sgemm, threads
from zoo.kernels._jit import njit
from zoo.kernels.vector_width import wide_vectors

_FLOATS = (np.float32, np.float64)
# float32 constants keep float32 arithmetic in float32 (a Python 1 or 0.5 would promote it to
# float64) and promote exactly to float64.
_ONE = np.float32(1.0)
_HALF = np.float32(0.5)
# Inputs up to this width are projected inside the cells rather than by one GEMM.
FUSE_MAX_FEATURES = 16
# Split the batch into blocks of at least this many rows (a step's GEMM on 32 rows takes half
# the time of one on 64; on 16, more than half), at most MAX_BLOCKS of them, and only with this
# much multiply-add work per step (rows x units x gate width): below, threads cost more than
# they save.
ROWS_PER_BLOCK = 32
MAX_BLOCKS = 8
MIN_WORK = 1 << 18


# -- scalar non-linearities ------------------------------------------------------------------
def _tanh(x):
    """tanh; float32 inside kernels gets the vectorisable rational form below.

    (This Python body only runs with ``NUMBA_DISABLE_JIT=1``; it keeps the scalar's type so
    that float32 constants such as ``_ONE`` do not turn float64 maths into float32.)
    """
    return type(x)(math.tanh(x))


def _tanh_ratio_f32(x):
    """tanh(x) as ``(numerator, denominator)``: the division left to the caller."""
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
    return v * p, q  # q is in [0.0049, 1.6]: never zero, and products of four stay normal


@overload(_tanh_ratio_f32, inline="always")
def _tanh_ratio_typed(x):
    return _tanh_ratio_f32


def _tanh_f32(x):
    num, den = _tanh_ratio_f32(x)
    # np.divide, not '/': under numba's Python error model '/' checks for zero, which stops
    # the loop from vectorising.
    return np.divide(num, den)


@overload(_tanh, inline="always")
def _tanh_typed(x):
    if x == types.float32:
        return _tanh_f32
    return lambda x: math.tanh(x)


def _sigmoid(x):
    """The logistic function through tanh, so float32 shares the vectorised form."""
    return type(x)(0.5 + 0.5 * math.tanh(0.5 * x))


def _sigmoid_any(x):
    return _HALF + _HALF * _tanh(_HALF * x)


# Inlined at numba IR level: in a cell with many calls LLVM's inliner gives up, and a call
# left in a loop stops it from vectorising.
@overload(_sigmoid, inline="always")
def _sigmoid_typed(x):
    return _sigmoid_any


def _lstm_gates(zi, zf, zg, zo):
    """The LSTM's gate activations ``sigmoid(zi), sigmoid(zf), tanh(zg), sigmoid(zo)``."""
    return _sigmoid(zi), _sigmoid(zf), _tanh(zg), _sigmoid(zo)


def _lstm_gates_f32(zi, zf, zg, zo):
    # The four rational tanh share one division: 1/q_k = (prod of the other three) / (prod
    # of all four). A division costs the vector unit as much as the rest of a tanh (one per
    # 16 lanes every 10 cycles against two multiply-adds a cycle), so this one instead of four
    # made the cell about a third faster; each quotient moves by a few float32 ulps.
    ni, qi = _tanh_ratio_f32(_HALF * zi)
    nf, qf = _tanh_ratio_f32(_HALF * zf)
    ng, qg = _tanh_ratio_f32(zg)
    no, qo = _tanh_ratio_f32(_HALF * zo)
    q_if = qi * qf
    q_go = qg * qo
    inv = np.divide(_ONE, q_if * q_go)
    inv_if = inv * q_go
    inv_go = inv * q_if
    return (_HALF + _HALF * (ni * (inv_if * qf)), _HALF + _HALF * (nf * (inv_if * qi)),
            ng * (inv_go * qo), _HALF + _HALF * (no * (inv_go * qg)))


@overload(_lstm_gates, inline="always")
def _lstm_gates_typed(zi, zf, zg, zo):
    if zi == types.float32:
        return _lstm_gates_f32
    return lambda zi, zf, zg, zo: (_sigmoid(zi), _sigmoid(zf), _tanh(zg), _sigmoid(zo))


# -- fused cells: one time step each ---------------------------------------------------------
# Each gate block is sliced into its own row view and indexed from 0: with offsets such as
# ``gates[n, 2 * u + j]`` LLVM cannot prove the index non-negative, keeps numba's wraparound
# select and falls back to gathers and scatters, about 5x slower.
@njit
def _project_row(g, x, w_in):
    """``g = x @ w_in`` for one row: the input projection, fused for narrow inputs."""
    for k in range(g.shape[0]):
        g[k] = 0
    for f in range(x.shape[0]):
        xf = x[f]
        wf = w_in[f]
        for k in range(g.shape[0]):
            g[k] += xf * wf[k]


@njit
def _rnn_cell(x, w_in, project, rec, gates, bias, h):
    wide_vectors()
    n_, u_ = h.shape
    for n in range(n_):
        if project:
            _project_row(gates[n], x[n], w_in)
        r = rec[n]
        g = gates[n]
        hn = h[n]
        for j in range(u_):
            hn[j] = _tanh(r[j] + g[j] + bias[j])


@njit
def _rnn_cell_backward(h, dh_rec, dh_out, use_out, dz, db, x, fused, dw_in):
    wide_vectors()
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
        if fused:
            _add_input_row(x[n], dzn, dw_in)


@njit
def _lstm_cell(x, w_in, project, rec, gates, bias, c_prev, c, h, tanh_c):
    wide_vectors()
    n_, u_ = h.shape
    bi, bf, bg, bo = bias[:u_], bias[u_:2 * u_], bias[2 * u_:3 * u_], bias[3 * u_:]
    for n in range(n_):
        if project:
            _project_row(gates[n], x[n], w_in)
        gi, gf, gg, go = gates[n, :u_], gates[n, u_:2 * u_], gates[n, 2 * u_:3 * u_], \
            gates[n, 3 * u_:]
        ri, rf, rg, ro = rec[n, :u_], rec[n, u_:2 * u_], rec[n, 2 * u_:3 * u_], rec[n, 3 * u_:]
        cp, cn, hn, tn = c_prev[n], c[n], h[n], tanh_c[n]
        for j in range(u_):
            i, f, g, o = _lstm_gates(gi[j] + ri[j] + bi[j], gf[j] + rf[j] + bf[j],
                                     gg[j] + rg[j] + bg[j], go[j] + ro[j] + bo[j])
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
def _lstm_cell_backward(gates, c_prev, tanh_c, dh_rec, dh_out, use_out, dc, dz, db, x,
                        fused, dw_in):
    """``dc`` holds dL/dc_t on entry and dL/dc_{t-1} on exit."""
    wide_vectors()
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
        if fused:
            _add_input_row(x[n], dz[n], dw_in)


@njit
def _gru_cell(x, w_in, project, rec, gates, bias, rbias, h_prev, h, hn):
    wide_vectors()
    n_, u_ = h.shape
    br, bz, bn = bias[:u_], bias[u_:2 * u_], bias[2 * u_:]
    for n in range(n_):
        if project:
            _project_row(gates[n], x[n], w_in)
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
def _gru_cell_backward(gates, hn, h_prev, dh_rec, dh_out, use_out, carry, dzx, dzh, db, dbhn,
                       x, fused, dw_in):
    """``carry`` holds the direct part of dL/dh_t (through ``z * h``) on entry and exit.

    ``dzx`` are the gradients of the input-side pre-activations (x W + b), ``dzh`` those of
    the recurrent side (h R, with b_hn in its candidate block); they differ in that block only.
    """
    wide_vectors()
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
        if fused:
            _add_input_row(x[n], dzx[n], dw_in)


@njit
def _add_input_row(x, dz, dw):
    """``dw += outer(x, dz)`` for one row: the input-weight gradient of narrow inputs, added
    by the backward cells row by row while the row's ``dz`` is in L1 (a GEMM over all steps
    would read the whole ``dz`` from memory again, for an inner dimension of 1 to 16; a pass
    per step after the cell read it from L2 again: 2% of an lstm step)."""
    wide_vectors()
    for k in range(x.shape[0]):
        xk = x[k]
        row = dw[k]
        for j in range(row.shape[0]):
            row[j] += xk * dz[j]


# -- time loops: one block of rows through every step, without the GIL ----------------------
def _product(f, a, b, bp, c, work):
    """``c = a @ b`` for one step: float32 against ``bp = packed.pack(b)``, float64 by BLAS."""
    cblas.gemm(f, a, b, c)


@overload(_product, inline="always")
def _product_typed(f, a, b, bp, c, work):
    if a.dtype == types.float32:
        return lambda f, a, b, bp, c, work: packed.gemm(a, bp, c, work)
    return lambda f, a, b, bp, c, work: cblas.gemm(f, a, b, c)


def _add_weight_grad(h, dz, dw):
    """``dw += h^T dz`` for one step of a block, float32 only (float64's recurrent-weight
    gradient is one GEMM after the loop, ``_gradients``: numpy's BLAS, exact to its rounding,
    for gradient checks)."""
    if h.dtype == np.float32:
        dw += h.T @ dz


@overload(_add_weight_grad, inline="always")
def _add_weight_grad_typed(h, dz, dw):
    if h.dtype == types.float32:
        def add(h, dz, dw):
            sgemm.gemm_at(True, False, dw.shape[0], dw.shape[1], h.shape[0],
                          np.int64(h.ctypes.data), h.strides[0] // 4,
                          np.int64(dz.ctypes.data), dz.strides[0] // 4,
                          np.int64(dw.ctypes.data), dw.strides[0] // 4, True)
        return add
    return lambda h, dz, dw: None


# ``f`` is ``cblas.gemm_function(dtype)``; ``dh_out`` is always 3-D here: every step's output
# gradient ``(T, N, U)`` when ``every``, else ``(1, N, U)`` for the last step only.
@njit
def _rnn_loop(f, x, w_in, project, w_rec, wp, work, gates, bias, h, rec, zero_init, lo,
              hi):
    for t in range(x.shape[0]):
        if t or not zero_init:
            _product(f, h[t, lo:hi], w_rec, wp, rec, work)
        _rnn_cell(x[t, lo:hi], w_in, project, rec, gates[t, lo:hi], bias, h[t + 1, lo:hi])


@njit
def _step_rows(dz, ring, t, lo, hi):
    """Where step ``t``'s pre-activation gradients of rows ``lo:hi`` go: ``dz[t, lo:hi]``, or
    the block's one-step ``ring`` when nothing reads them after the loop (``_ring``)."""
    return ring if ring.shape[0] else dz[t, lo:hi]


@njit
def _rnn_loop_backward(f, h, dh_out, every, w_t, wp, work, dz, zero_init, lo, hi, dh_rec,
                       db, x, fused, dw_in, dw_rec, ring):
    t_ = dz.shape[0]
    for t in range(t_ - 1, -1, -1):
        dz_t = _step_rows(dz, ring, t, lo, hi)
        _rnn_cell_backward(h[t + 1, lo:hi], dh_rec, dh_out[t if every else 0, lo:hi],
                           every or t == t_ - 1, dz_t, db, x[t, lo:hi], fused, dw_in)
        if t or not zero_init:
            _add_weight_grad(h[t, lo:hi], dz_t, dw_rec)
            _product(f, dz_t, w_t, wp, dh_rec, work)


@njit
def _lstm_loop(f, x, w_in, project, w_rec, wp, work, gates, bias, h, c, tanh_c, rec,
               zero_init, lo, hi):
    for t in range(x.shape[0]):
        if t or not zero_init:
            _product(f, h[t, lo:hi], w_rec, wp, rec, work)
        _lstm_cell(x[t, lo:hi], w_in, project, rec, gates[t, lo:hi], bias, c[t, lo:hi],
                   c[t + 1, lo:hi], h[t + 1, lo:hi], tanh_c[t, lo:hi])


@njit
def _lstm_loop_backward(f, gates, c, tanh_c, dh_out, every, w_t, wp, work, dz, zero_init,
                        lo, hi, dh_rec, dc, db, x, fused, dw_in, h, dw_rec, ring):
    t_ = dz.shape[0]
    for t in range(t_ - 1, -1, -1):
        dz_t = _step_rows(dz, ring, t, lo, hi)
        _lstm_cell_backward(gates[t, lo:hi], c[t, lo:hi], tanh_c[t, lo:hi], dh_rec,
                            dh_out[t if every else 0, lo:hi], every or t == t_ - 1, dc,
                            dz_t, db, x[t, lo:hi], fused, dw_in)
        if t or not zero_init:
            _add_weight_grad(h[t, lo:hi], dz_t, dw_rec)
            _product(f, dz_t, w_t, wp, dh_rec, work)


@njit
def _gru_loop(f, x, w_in, project, w_rec, wp, work, gates, bias, rbias, h, hn, rec,
              zero_init, lo, hi):
    for t in range(x.shape[0]):
        if t or not zero_init:
            _product(f, h[t, lo:hi], w_rec, wp, rec, work)
        _gru_cell(x[t, lo:hi], w_in, project, rec, gates[t, lo:hi], bias, rbias, h[t, lo:hi],
                  h[t + 1, lo:hi], hn[t, lo:hi])


@njit
def _gru_loop_backward(f, gates, hn, h, dh_out, every, w_t, wp, work, dzx, dzh, zero_init,
                       lo, hi, dh_rec, carry, db, dbhn, x, fused, dw_in):
    t_ = dzx.shape[0]
    for t in range(t_ - 1, -1, -1):
        _gru_cell_backward(gates[t, lo:hi], hn[t, lo:hi], h[t, lo:hi], dh_rec,
                           dh_out[t if every else 0, lo:hi], every or t == t_ - 1, carry,
                           dzx[t, lo:hi], dzh[t, lo:hi], db, dbhn, x[t, lo:hi], fused, dw_in)
        if t or not zero_init:
            _product(f, dzh[t, lo:hi], w_t, wp, dh_rec, work)


# -- threads --------------------------------------------------------------------------------
def _blocks(rows: int, work: int) -> int:
    """How many row blocks to cut ``rows`` independent rows into: from the sizes alone.

    Never from the thread count or the timing, so every block's arithmetic, and the order the
    bias-gradient parts are added in, is the same on one thread and on several.
    """
    if work < MIN_WORK:
        return 1
    return max(1, min(MAX_BLOCKS, rows // ROWS_PER_BLOCK))


def _parallel(fn, rows: int, blocks: int) -> list:
    """``[fn(lo, hi) for each block]`` over ``blocks`` contiguous blocks of ``range(rows)``.

    The blocks share ``zoo.kernels.threads``' count of threads (each with BLAS on one thread);
    the results come back in block order whichever thread ran them.
    """
    cuts = [rows * i // blocks for i in range(blocks + 1)]
    results = [None] * blocks

    def block(i):
        results[i] = fn(cuts[i], cuts[i + 1])

    threads.run_blocks(block, blocks)
    return results


# -- checks ----------------------------------------------------------------------------------
def _check(name: str, x, shape: tuple, dtype) -> None:
    if not isinstance(x, np.ndarray) or x.dtype != dtype:
        raise DataError(f"{name} must be a {np.dtype(dtype)} array like x; "
                        f"received {describe_array(x)}")
    if x.shape != tuple(shape):
        raise DataError(f"{name} must have shape {tuple(shape)}; received {describe_array(x)}")
    if not x.flags.c_contiguous:
        raise DataError(f"{name} must be C-contiguous; received a strided view")


def _dims(x, w_rec, g: int) -> tuple:
    """``(T, N, F, U)`` from ``x`` (T, N, F) and ``w_rec`` (U, G*U), or one DataError."""
    if not isinstance(x, np.ndarray) or x.ndim != 3 or x.dtype.type not in _FLOATS \
            or not x.flags.c_contiguous:
        raise DataError(f"x must be a C-contiguous float32 or float64 array of shape "
                        f"(T, N, F); received {describe_array(x)}")
    if not isinstance(w_rec, np.ndarray) or w_rec.ndim != 2 or w_rec.shape[0] == 0 \
            or w_rec.shape[1] != g * w_rec.shape[0]:
        raise DataError(f"w_rec must have shape (units, {g} * units); "
                        f"received {describe_array(w_rec)}")
    t_, n_, f_ = x.shape
    u_ = w_rec.shape[0]
    _check("w_rec", w_rec, (u_, g * u_), x.dtype)
    return t_, n_, f_, u_


def _check_dh_out(dh_out, t_, n_, u_, dtype) -> bool:
    """True if ``dh_out`` covers every step ``(T, N, U)``, False for the last step only."""
    every = isinstance(dh_out, np.ndarray) and dh_out.ndim == 3
    _check("dh_out", dh_out, (t_, n_, u_) if every else (n_, u_), dtype)
    return every


def _project(x, w_in, gates, blocks: int) -> bool:
    """Project wide inputs with one GEMM (split over time); True if the cells must do it."""
    t_, n_, f_ = x.shape
    if f_ <= FUSE_MAX_FEATURES:
        return True
    x2 = x.reshape(t_ * n_, f_)
    g2 = gates.reshape(t_ * n_, -1)
    _parallel(lambda lo, hi: np.matmul(x2[lo * n_:hi * n_], w_in, out=g2[lo * n_:hi * n_]),
              t_, min(blocks, t_))
    return False


def _gradients(x, w_in, h, dz_in, dz_rec, dx, dw_in, dw_rec, zero_init, blocks) -> None:
    """dx, dW_in and dW_rec as GEMMs over all steps, in ``blocks`` blocks; dW_in only if
    ``dw_in`` is given (narrow inputs have theirs summed in the time loops), dW_rec only if
    ``dw_rec`` is (float32's is summed in the loops too, ``_add_weight_grad``).

    dx is cut into row blocks and dW_in into column blocks. dW_rec = sum_t h_t^T dz_t is cut
    along the sum instead, into ``blocks`` runs of steps whose partial products are added in
    block order afterwards: each block then packs its own rows of h and dz only, where column
    blocks each packed all of h (measured on one core: the lstm's 128 x 2496 x 512 product
    5% faster than as column blocks, the rnn's 128 x 2496 x 128 10%). The cut and the order of
    the additions depend on the sizes alone, never on the thread count.
    """
    if dx is None and dw_in is None and dw_rec is None:
        return  # all summed in the time loops: no job to post
    t_, n_, f_ = x.shape
    w = dz_in.shape[2]
    first = 1 if zero_init else 0  # h[0] = 0 adds nothing to dW_rec
    x2 = x.reshape(t_ * n_, f_)
    h2 = h[first:t_].reshape((t_ - first) * n_, h.shape[2])
    dzi = dz_in.reshape(t_ * n_, w)
    dzr = dz_rec[first:].reshape((t_ - first) * n_, w)
    dx2 = None if dx is None else dx.reshape(t_ * n_, f_)
    w_in_t = w_in.T
    parts = [] if dw_rec is None else \
        [dw_rec] + [aligned.empty(dw_rec.shape, dw_rec.dtype) for _ in range(blocks - 1)]
    k_ = len(h2)

    def block(lo, hi):
        cols = slice(w * lo // blocks, w * hi // blocks)
        rows = slice(t_ * n_ * lo // blocks, t_ * n_ * hi // blocks)
        run = slice(k_ * lo // blocks, k_ * hi // blocks)  # empty runs give zeros
        if dw_in is not None:
            np.matmul(x2.T, dzi[:, cols], out=dw_in[:, cols])
        if parts:
            np.matmul(h2[run].T, dzr[run], out=parts[lo])
        if dx2 is not None:
            np.matmul(dzi[rows], w_in_t, out=dx2[rows])

    _parallel(block, blocks, blocks)
    for part in parts[1:]:  # in block order
        dw_rec += part


_NOT_PACKED = np.empty((0, 0, 0), np.float32)  # what float64 loops get for ``wp``


def _transposed(w):
    """R^T for the backward steps: a view where it is only packed (float32), else contiguous,
    which makes BLAS's step GEMMs faster."""
    return w.T if w.dtype == np.float32 else np.ascontiguousarray(w.T)


def _pack(w, name: str):
    """The recurrent weights as the float32 step products take them (``packed.pack``), in an
    array that starts on a cache line (``zoo.kernels.aligned``: the tile's 64-byte loads of
    a panel row then never straddle two lines), the one this thread keeps for ``name``."""
    if w.dtype != np.float32:
        return _NOT_PACKED
    k, n = w.shape
    out = aligned.kept(name, (-(-n // packed.PANEL), k, packed.PANEL), np.float32)
    return packed.pack(w, out)


def _weight_grad_part(w_rec, lo: int):
    """The recurrent-weight gradient's part of the block from row ``lo``, summed in its time
    loop, zeroed (float32), or an unused (1, 1) array (float64: one GEMM after the loop)."""
    if w_rec.dtype == np.float32:
        part = aligned.kept(("recurrent weight gradient", lo), w_rec.shape, w_rec.dtype)
        part.fill(0)
        return part
    return np.zeros((1, 1), w_rec.dtype)


def _sum_parts(parts, out) -> bool:
    """``out`` = the blocks' parts added in block order; False if they are unused (float64)."""
    if out.dtype != np.float32:
        return False
    out[...] = parts[0]
    for part in parts[1:]:
        out += part
    return True


def _keeps_dz(dx, fused: bool, dtype) -> bool:
    """Whether the pre-activation gradients of every step are read after the time loop: by
    ``_gradients``, for an input gradient, wide inputs' weight gradient, or float64's
    recurrent-weight gradient. Otherwise the loops sum all they need as they go."""
    return dx is not None or not fused or dtype != np.float32


def _ring(keep_dz: bool, rows: int, width: int, dtype):
    """A block's buffer for one step's pre-activation gradients where nothing reads them after
    the loop (``_keeps_dz``), else an empty one (they go to ``dz``). The lstm workload's
    backward then writes 64 KB a block a step that stays in L1/L2, where it wrote 5 MB of
    ``dz`` a pass to memory (4-9% of its step on two threads)."""
    return aligned.empty((0 if keep_dz else rows, width), dtype)


def _work():
    """A block's work array for ``packed.gemm`` (one per block: blocks run concurrently)."""
    return packed.scratch()


def _steps(dh_out, every: bool):
    """``dh_out`` as the loops take it: 3-D, with one step when only the last has one."""
    return dh_out if every else dh_out[None]


# -- tanh RNN --------------------------------------------------------------------------------
def rnn_forward(x, w_in, w_rec, bias, h, gates, zero_init: bool = False) -> None:
    """Run a tanh RNN over the sequence; ``h[1:]`` receives the states.

    Args:
        x: ``(T, N, F)`` inputs, time-major. w_in: ``(F, U)``. w_rec: ``(U, U)``.
        bias: ``(U,)``.
        h: ``(T + 1, N, U)``; ``h[0]`` is the initial state, ``h[1:]`` is written.
        gates: ``(T, N, U)`` work array (the input projections).
        zero_init: ``h[0]`` is all zeros, so the first recurrent GEMM is skipped.
    """
    t_, n_, f_, u_ = _dims(x, w_rec, 1)
    dt = x.dtype
    _check("w_in", w_in, (f_, u_), dt)
    _check("bias", bias, (u_,), dt)
    _check("h", h, (t_ + 1, n_, u_), dt)
    _check("gates", gates, (t_, n_, u_), dt)
    blocks = _blocks(n_, n_ * u_ * u_)
    project = _project(x, w_in, gates, blocks)

    f, wp = cblas.gemm_function(dt), _pack(w_rec, "forward")

    def rows(lo, hi):
        rec = aligned.zeros((hi - lo, u_), dt)
        _rnn_loop(f, x, w_in, project, w_rec, wp, _work(), gates, bias, h, rec, zero_init,
                  lo, hi)

    _parallel(rows, n_, blocks)


def rnn_backward(x, w_in, w_rec, h, dh_out, dz, dx, dw_in, dw_rec, db,
                 zero_init: bool = False):
    """Backprop through time for ``rnn_forward``; returns dL/dh_0, or None if ``zero_init``.

    Args:
        x, w_in, w_rec, h: as given to and left by ``rnn_forward``.
        dh_out: dL/dh for every step ``(T, N, U)``, or ``(N, U)`` for the last step only.
        dz: ``(T, N, U)`` work array; receives the pre-activation gradients where they are
            needed after the loop (``_keeps_dz``), else is left as it was.
        dx: ``(T, N, F)`` (or None to skip it), dw_in, dw_rec, db: receive the gradients
            (overwritten).
        zero_init: the initial state was zeros (not an input), so its gradient is skipped.
    """
    t_, n_, f_, u_ = _dims(x, w_rec, 1)
    dt = x.dtype
    for name, arr, shape in (("w_in", w_in, (f_, u_)), ("h", h, (t_ + 1, n_, u_)),
                             ("dz", dz, (t_, n_, u_)),
                             ("dw_in", dw_in, (f_, u_)), ("dw_rec", dw_rec, (u_, u_)),
                             ("db", db, (u_,))):
        _check(name, arr, shape, dt)
    every = _check_dh_out(dh_out, t_, n_, u_, dt)
    if dx is not None:
        _check("dx", dx, (t_, n_, f_), dt)
    w_t = _transposed(w_rec)
    blocks = _blocks(n_, n_ * u_ * u_)

    f, steps, wp = cblas.gemm_function(dt), _steps(dh_out, every), _pack(w_t, "backward")

    fused = f_ <= FUSE_MAX_FEATURES
    keep_dz = _keeps_dz(dx, fused, dt)

    def rows(lo, hi):
        dh_rec = aligned.zeros((hi - lo, u_), dt)
        db_part = aligned.zeros(u_, dt)
        dw_part = aligned.zeros((f_, u_), dt)
        rec_part = _weight_grad_part(w_rec, lo)
        _rnn_loop_backward(f, h, steps, every, w_t, wp, _work(), dz, zero_init, lo, hi,
                           dh_rec, db_part, x, fused, dw_part, rec_part,
                           _ring(keep_dz, hi - lo, u_, dt))
        return dh_rec, db_part, dw_part, rec_part

    parts = _parallel(rows, n_, blocks)
    np.sum([p[1] for p in parts], axis=0, out=db)
    if fused:
        np.sum([p[2] for p in parts], axis=0, out=dw_in)
    in_loop = _sum_parts([p[3] for p in parts], dw_rec)
    _gradients(x, w_in, h, dz, dz, dx, None if fused else dw_in, None if in_loop else dw_rec,
               zero_init, blocks)
    return None if zero_init else np.concatenate([p[0] for p in parts])


# -- LSTM ------------------------------------------------------------------------------------
def lstm_forward(x, w_in, w_rec, bias, h, c, tanh_c, gates, zero_init: bool = False) -> None:
    """Run an LSTM over the sequence; ``h[1:]``, ``c[1:]``, ``tanh_c`` and ``gates`` are written.

    Args:
        x: ``(T, N, F)`` inputs, time-major. w_in: ``(F, 4U)``. w_rec: ``(U, 4U)``.
        bias: ``(4U,)``; gate order i, f, g, o.
        h, c: ``(T + 1, N, U)``; slot 0 holds the initial states, ``[1:]`` is written.
        tanh_c: ``(T, N, U)``, receives tanh(c_t).
        gates: ``(T, N, 4U)``, receives the gate activations (which backward needs).
        zero_init: ``h[0]`` is all zeros, so the first recurrent GEMM is skipped.
    """
    t_, n_, f_, u_ = _dims(x, w_rec, 4)
    dt = x.dtype
    for name, arr, shape in (("w_in", w_in, (f_, 4 * u_)), ("bias", bias, (4 * u_,)),
                             ("h", h, (t_ + 1, n_, u_)), ("c", c, (t_ + 1, n_, u_)),
                             ("tanh_c", tanh_c, (t_, n_, u_)), ("gates", gates, (t_, n_, 4 * u_))):
        _check(name, arr, shape, dt)
    blocks = _blocks(n_, n_ * u_ * 4 * u_)
    project = _project(x, w_in, gates, blocks)

    f, wp = cblas.gemm_function(dt), _pack(w_rec, "forward")

    def rows(lo, hi):
        rec = aligned.zeros((hi - lo, 4 * u_), dt)
        _lstm_loop(f, x, w_in, project, w_rec, wp, _work(), gates, bias, h, c, tanh_c, rec,
                   zero_init, lo, hi)

    _parallel(rows, n_, blocks)


def lstm_backward(x, w_in, w_rec, h, c, tanh_c, gates, dh_out, dz, dx, dw_in, dw_rec, db,
                  zero_init: bool = False, dc_out=None):
    """Backprop through time for ``lstm_forward``; returns ``(dh0, dc0)`` (None if ``zero_init``).

    Args:
        x, w_in, w_rec, h, c, tanh_c, gates: as given to and left by ``lstm_forward``.
        dh_out: dL/dh for every step ``(T, N, U)``, or ``(N, U)`` for the last step only.
        dz: ``(T, N, 4U)`` work array; receives the pre-activation gradients where they are
            needed after the loop (``_keeps_dz``), else is left as it was.
        dx: ``(T, N, F)`` (or None to skip it), dw_in, dw_rec, db: receive the gradients
            (overwritten).
        zero_init: the initial states were zeros (not inputs); their gradients are skipped.
        dc_out: optional ``(N, U)`` dL/dc of the final cell state.
    """
    t_, n_, f_, u_ = _dims(x, w_rec, 4)
    dt = x.dtype
    for name, arr, shape in (("w_in", w_in, (f_, 4 * u_)), ("h", h, (t_ + 1, n_, u_)),
                             ("c", c, (t_ + 1, n_, u_)), ("tanh_c", tanh_c, (t_, n_, u_)),
                             ("gates", gates, (t_, n_, 4 * u_)), ("dz", dz, (t_, n_, 4 * u_)),
                             ("dw_in", dw_in, (f_, 4 * u_)),
                             ("dw_rec", dw_rec, (u_, 4 * u_)), ("db", db, (4 * u_,))):
        _check(name, arr, shape, dt)
    every = _check_dh_out(dh_out, t_, n_, u_, dt)
    if dx is not None:
        _check("dx", dx, (t_, n_, f_), dt)
    if dc_out is not None:
        _check("dc_out", dc_out, (n_, u_), dt)
    w_t = _transposed(w_rec)
    blocks = _blocks(n_, n_ * u_ * 4 * u_)

    f, steps, wp = cblas.gemm_function(dt), _steps(dh_out, every), _pack(w_t, "backward")
    fused = f_ <= FUSE_MAX_FEATURES
    keep_dz = _keeps_dz(dx, fused, dt)

    def rows(lo, hi):
        dh_rec = aligned.zeros((hi - lo, u_), dt)
        dc = aligned.zeros((hi - lo, u_), dt) if dc_out is None else aligned.copy(dc_out[lo:hi])
        db_part = aligned.zeros(4 * u_, dt)
        dw_part = aligned.zeros((f_, 4 * u_), dt)
        rec_part = _weight_grad_part(w_rec, lo)
        ring = _ring(keep_dz, hi - lo, 4 * u_, dt)
        _lstm_loop_backward(f, gates, c, tanh_c, steps, every, w_t, wp, _work(), dz, zero_init,
                            lo, hi, dh_rec, dc, db_part, x, fused, dw_part, h, rec_part, ring)
        return dh_rec, dc, db_part, dw_part, rec_part

    parts = _parallel(rows, n_, blocks)
    np.sum([p[2] for p in parts], axis=0, out=db)
    if fused:
        np.sum([p[3] for p in parts], axis=0, out=dw_in)
    in_loop = _sum_parts([p[4] for p in parts], dw_rec)
    _gradients(x, w_in, h, dz, dz, dx, None if fused else dw_in, None if in_loop else dw_rec,
               zero_init, blocks)
    if zero_init:
        return None, None
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# -- GRU -------------------------------------------------------------------------------------
def gru_forward(x, w_in, w_rec, bias, recurrent_bias, h, hn, gates,
                zero_init: bool = False) -> None:
    """Run a reset-after GRU over the sequence; ``h[1:]``, ``hn`` and ``gates`` are written.

    Args:
        x: ``(T, N, F)`` inputs, time-major. w_in: ``(F, 3U)``. w_rec: ``(U, 3U)``.
        bias: ``(3U,)`` input-side biases, gate order r, z, n.
        recurrent_bias: ``(U,)``, b_hn, the bias of the candidate's recurrent product.
        h: ``(T + 1, N, U)``; ``h[0]`` is the initial state, ``h[1:]`` is written.
        hn: ``(T, N, U)``, receives ``h R_n + b_hn`` of each step.
        gates: ``(T, N, 3U)``, receives the gate activations.
        zero_init: ``h[0]`` is all zeros, so the first recurrent GEMM is skipped.
    """
    t_, n_, f_, u_ = _dims(x, w_rec, 3)
    dt = x.dtype
    for name, arr, shape in (("w_in", w_in, (f_, 3 * u_)), ("bias", bias, (3 * u_,)),
                             ("recurrent_bias", recurrent_bias, (u_,)),
                             ("h", h, (t_ + 1, n_, u_)), ("hn", hn, (t_, n_, u_)),
                             ("gates", gates, (t_, n_, 3 * u_))):
        _check(name, arr, shape, dt)
    blocks = _blocks(n_, n_ * u_ * 3 * u_)
    project = _project(x, w_in, gates, blocks)

    f, wp = cblas.gemm_function(dt), _pack(w_rec, "forward")

    def rows(lo, hi):
        rec = aligned.zeros((hi - lo, 3 * u_), dt)
        _gru_loop(f, x, w_in, project, w_rec, wp, _work(), gates, bias, recurrent_bias, h, hn,
                  rec, zero_init, lo, hi)

    _parallel(rows, n_, blocks)


def gru_backward(x, w_in, w_rec, h, hn, gates, dh_out, dzx, dzh, dx, dw_in, dw_rec, db, dbhn,
                 zero_init: bool = False):
    """Backprop through time for ``gru_forward``; returns dL/dh_0, or None if ``zero_init``.

    Args:
        x, w_in, w_rec, h, hn, gates: as given to and left by ``gru_forward``.
        dh_out: dL/dh for every step ``(T, N, U)``, or ``(N, U)`` for the last step only.
        dzx, dzh: ``(T, N, 3U)`` work arrays, receive the input-side and recurrent-side
            pre-activation gradients.
        dx: ``(T, N, F)`` (or None to skip it), dw_in, dw_rec, db: ``(3U,)``, dbhn: ``(U,)``:
            receive the gradients (overwritten).
        zero_init: the initial state was zeros (not an input), so its gradient is skipped.
    """
    t_, n_, f_, u_ = _dims(x, w_rec, 3)
    dt = x.dtype
    for name, arr, shape in (("w_in", w_in, (f_, 3 * u_)), ("h", h, (t_ + 1, n_, u_)),
                             ("hn", hn, (t_, n_, u_)), ("gates", gates, (t_, n_, 3 * u_)),
                             ("dzx", dzx, (t_, n_, 3 * u_)), ("dzh", dzh, (t_, n_, 3 * u_)),
                             ("dw_in", dw_in, (f_, 3 * u_)),
                             ("dw_rec", dw_rec, (u_, 3 * u_)), ("db", db, (3 * u_,)),
                             ("dbhn", dbhn, (u_,))):
        _check(name, arr, shape, dt)
    every = _check_dh_out(dh_out, t_, n_, u_, dt)
    if dx is not None:
        _check("dx", dx, (t_, n_, f_), dt)
    w_t = _transposed(w_rec)
    blocks = _blocks(n_, n_ * u_ * 3 * u_)

    f, steps, wp = cblas.gemm_function(dt), _steps(dh_out, every), _pack(w_t, "backward")
    fused = f_ <= FUSE_MAX_FEATURES

    def rows(lo, hi):
        dh_rec = aligned.zeros((hi - lo, u_), dt)
        carry = aligned.zeros((hi - lo, u_), dt)
        db_part = aligned.zeros(3 * u_, dt)
        dbhn_part = aligned.zeros(u_, dt)
        dw_part = aligned.zeros((f_, 3 * u_), dt)
        _gru_loop_backward(f, gates, hn, h, steps, every, w_t, wp, _work(), dzx, dzh,
                           zero_init, lo, hi, dh_rec, carry, db_part, dbhn_part, x, fused,
                           dw_part)
        return dh_rec + carry, db_part, dbhn_part, dw_part

    parts = _parallel(rows, n_, blocks)
    np.sum([p[1] for p in parts], axis=0, out=db)
    np.sum([p[2] for p in parts], axis=0, out=dbhn)
    if fused:
        np.sum([p[3] for p in parts], axis=0, out=dw_in)
    _gradients(x, w_in, h, dzx, dzh, dx, None if fused else dw_in, dw_rec, zero_init, blocks)
    return None if zero_init else np.concatenate([p[0] for p in parts])
