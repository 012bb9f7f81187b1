"""The recurrent cells and their time loops, as numba kernels (``zoo.kernels.recurrent``
drives them).

A cell is one time step of one block of rows, all gates fused: forward it adds the input
projection (or, for narrow inputs, makes it: ``_project_row``) and the recurrent product to the
bias, applies every gate's non-linearity and writes the new state, caching what backward
needs; backward it turns the state gradient into pre-activation gradients and adds the bias
gradient (and narrow inputs' input-weight gradient, ``_add_input_row``). A time loop runs one
block of rows through every step: per step one product against the recurrent weights
(``_product``: float32 against the weights packed once per pass, ``zoo.kernels.packed``;
float64 by numpy's BLAS, ``zoo.kernels.cblas``) and one cell; float32 backward loops also add
the block's ``h_t^T dz_t`` to its part of the recurrent weights' gradient while ``dz_t`` is in
cache (``_add_weight_grad``).

Gate blocks along the last axis:

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
vectorised with 512-bit vectors where the CPU has them (``zoo.kernels.vector_width``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import types
from numba.extending import overload

from zoo.kernels import cblas, packed, sgemm
from zoo.kernels._jit import ORDERED, njit
from zoo.kernels.vector_width import wide_vectors

# float32 constants keep float32 arithmetic in float32 (a Python 1 or 0.5 would promote it to
# float64) and promote exactly to float64.
_ONE = np.float32(1.0)
_HALF = np.float32(0.5)


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
    t = np.divide(num, den)
    # Exactly +-1 from the clamp on: the ratio there is 1 - 1 ulp in the order written (a
    # regrouping of the sums once happened to give 1). NaN fails both tests and stays NaN.
    if x >= np.float32(9.0):
        return _ONE
    if x <= np.float32(-9.0):
        return -_ONE
    return t


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
@njit(fastmath=ORDERED)
def _project_row(g, x, w_in):
    """``g = x @ w_in`` for one row: the input projection, fused for narrow inputs."""
    for k in range(g.shape[0]):
        g[k] = 0
    for f in range(x.shape[0]):
        xf = x[f]
        wf = w_in[f]
        for k in range(g.shape[0]):
            g[k] += xf * wf[k]


def _projection(x, w_in, project, g):
    """``(s, p)``, a row's input projection as ``s * p[k]``: for one input feature
    ``x[0] * w_in[0, k]``, which the cell multiplies in its own loop: ``_project_row``'s
    passes writing the row and reading it back took 12.0 -> 10.7 us of the lstm workload's
    forward cell (alone, warm); in interleaved rounds its two-thread step ran 1.009x and
    1.018x as fast without them, the rnn workload's 1.054x and 1.070x. Else ``g`` as
    ``_project_row`` writes it (``project``: narrow inputs) or the inputs' GEMM did, with
    ``s`` 1: exactly ``g``."""
    if project and x.shape[0] == 1:
        return x[0], w_in[0]
    if project:
        _project_row(g, x, w_in)
    return _ONE, g  # float32: exact in float64 too (the branches unify to g's type)


# Inlined (numba IR): as a call, which row it returns is hidden from LLVM, and the lstm cell
# took 11.2 us instead of 10.7.
@overload(_projection, inline="always")
def _projection_typed(x, w_in, project, g):
    return _projection


@njit(fastmath=ORDERED)
def _rnn_cell(x, w_in, project, rec, gates, bias, h):
    wide_vectors()
    n_, u_ = h.shape
    for n in range(n_):
        s, p = _projection(x[n], w_in, project, gates[n])
        r = rec[n]
        hn = h[n]
        for j in range(u_):
            hn[j] = _tanh(r[j] + s * p[j] + bias[j])


@njit(fastmath=ORDERED)
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


@njit(fastmath=ORDERED)
def _lstm_cell(x, w_in, project, rec, gates, bias, c_prev, c, h, tanh_c):
    wide_vectors()
    n_, u_ = h.shape
    bi, bf, bg, bo = bias[:u_], bias[u_:2 * u_], bias[2 * u_:3 * u_], bias[3 * u_:]
    for n in range(n_):
        s, p = _projection(x[n], w_in, project, gates[n])
        pi, pf, pg, po = p[:u_], p[u_:2 * u_], p[2 * u_:3 * u_], p[3 * u_:]
        gi, gf, gg, go = gates[n, :u_], gates[n, u_:2 * u_], gates[n, 2 * u_:3 * u_], \
            gates[n, 3 * u_:]
        ri, rf, rg, ro = rec[n, :u_], rec[n, u_:2 * u_], rec[n, 2 * u_:3 * u_], rec[n, 3 * u_:]
        cp, cn, hn, tn = c_prev[n], c[n], h[n], tanh_c[n]
        for j in range(u_):
            i, f, g, o = _lstm_gates(s * pi[j] + ri[j] + bi[j], s * pf[j] + rf[j] + bf[j],
                                     s * pg[j] + rg[j] + bg[j], s * po[j] + ro[j] + bo[j])
            cc = f * cp[j] + i * g
            tc = _tanh(cc)
            gi[j] = i
            gf[j] = f
            gg[j] = g
            go[j] = o
            cn[j] = cc
            tn[j] = tc
            hn[j] = o * tc


@njit(fastmath=ORDERED)
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


@njit(fastmath=ORDERED)
def _gru_cell(x, w_in, project, rec, gates, bias, rbias, h_prev, h, hn):
    wide_vectors()
    n_, u_ = h.shape
    br, bz, bn = bias[:u_], bias[u_:2 * u_], bias[2 * u_:]
    for n in range(n_):
        s, p = _projection(x[n], w_in, project, gates[n])
        pr, pz, pn = p[:u_], p[u_:2 * u_], p[2 * u_:]
        gr, gz, gn = gates[n, :u_], gates[n, u_:2 * u_], gates[n, 2 * u_:]
        rr, rz, rn = rec[n, :u_], rec[n, u_:2 * u_], rec[n, 2 * u_:]
        hp, ho, hr = h_prev[n], h[n], hn[n]
        for j in range(u_):
            r = _sigmoid(s * pr[j] + rr[j] + br[j])
            z = _sigmoid(s * pz[j] + rz[j] + bz[j])
            a = rn[j] + rbias[j]
            nn = _tanh(s * pn[j] + bn[j] + r * a)
            gr[j] = r
            gz[j] = z
            gn[j] = nn
            hr[j] = a
            ho[j] = (_ONE - z) * nn + z * hp[j]


@njit(fastmath=ORDERED)
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


@njit(fastmath=ORDERED)
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


def _add_weight_grads(hs, dzs, dw):
    """``dw += hs^T dzs`` over several steps, ``hs`` ``(steps, rows, U)`` and ``dzs``
    ``(steps, rows, W)`` contiguous: float32 only, as ``_add_weight_grad``."""
    if hs.dtype == np.float32:
        dw += hs.reshape(-1, hs.shape[2]).T @ dzs.reshape(-1, dzs.shape[2])


@overload(_add_weight_grads, inline="always")
def _add_weight_grads_typed(hs, dzs, dw):
    if hs.dtype == types.float32:
        def add(hs, dzs, dw):
            sgemm.gemm_at(True, False, dw.shape[0], dw.shape[1], hs.shape[0] * hs.shape[1],
                          np.int64(hs.ctypes.data), hs.shape[2], np.int64(dzs.ctypes.data),
                          dzs.shape[2], np.int64(dw.ctypes.data), dw.strides[0] // 4, True)
        return add
    return lambda hs, dzs, dw: None


@njit(fastmath=ORDERED)
def _step_weight_grad(h_t, dz_t, dw, ring, h_ring, held, flush):
    """``dw += h_t^T dz_t`` for one step of a block (float32; float64's is one GEMM after the
    loop). Returns how many steps the ring holds after it.

    Without a ring (``ring`` empty: ``dz`` is kept whole) each step makes its own product.
    With one, ``dz_t`` is ``ring[held]``: the step's ``h_t`` joins it in ``h_ring``, and the
    ring's steps make one product when it is full or at ``flush`` (the last step with a
    weight gradient). Every element of ``dw`` is the same chain of multiply-adds either way
    (steps in the loop's order, rows in order within a step), but the product's inner
    dimension is steps x rows instead of rows: on one EPYC core the lstm's 128 x 512 gradient
    took 44.8 us a step at 32 rows, 40.6 at 4 x 32."""
    if not ring.shape[0]:
        _add_weight_grad(h_t, dz_t, dw)
        return 0
    h_ring[held] = h_t
    held += 1
    if held == ring.shape[0] or flush:
        _add_weight_grads(h_ring[:held], ring[:held], dw)
        return 0
    return held


# ``f`` is ``cblas.gemm_function(dtype)``; ``dh_out`` is always 3-D here: every step's output
# gradient ``(T, N, U)`` when ``every``, else ``(1, N, U)`` for the last step only.
@njit(fastmath=ORDERED)
def rnn_loop(f, x, w_in, project, w_rec, wp, work, gates, bias, h, rec, zero_init, lo,
              hi):
    for t in range(x.shape[0]):
        if t or not zero_init:
            _product(f, h[t, lo:hi], w_rec, wp, rec, work)
        _rnn_cell(x[t, lo:hi], w_in, project, rec, gates[t, lo:hi], bias, h[t + 1, lo:hi])


@njit(fastmath=ORDERED)
def _step_rows(dz, ring, held, t, lo, hi):
    """Where step ``t``'s pre-activation gradients of rows ``lo:hi`` go: ``dz[t, lo:hi]``, or
    the block's ``ring`` of the last few steps when nothing reads them after the loop
    (``recurrent._keeps_dz``), at ``held``, the steps it holds (``_step_weight_grad``)."""
    return ring[held] if ring.shape[0] else dz[t, lo:hi]


@njit(fastmath=ORDERED)
def rnn_loop_backward(f, h, dh_out, every, w_t, wp, work, dz, zero_init, lo, hi, dh_rec,
                       db, x, fused, dw_in, dw_rec, ring, h_ring):
    t_ = dz.shape[0]
    held, last = 0, 1 if zero_init else 0  # last: the last step with a weight gradient
    for t in range(t_ - 1, -1, -1):
        dz_t = _step_rows(dz, ring, held, t, lo, hi)
        _rnn_cell_backward(h[t + 1, lo:hi], dh_rec, dh_out[t if every else 0, lo:hi],
                           every or t == t_ - 1, dz_t, db, x[t, lo:hi], fused, dw_in)
        if t or not zero_init:
            held = _step_weight_grad(h[t, lo:hi], dz_t, dw_rec, ring, h_ring, held, t == last)
            _product(f, dz_t, w_t, wp, dh_rec, work)


@njit(fastmath=ORDERED)
def lstm_loop(f, x, w_in, project, w_rec, wp, work, gates, bias, h, c, tanh_c, rec,
               zero_init, lo, hi):
    for t in range(x.shape[0]):
        if t or not zero_init:
            _product(f, h[t, lo:hi], w_rec, wp, rec, work)
        _lstm_cell(x[t, lo:hi], w_in, project, rec, gates[t, lo:hi], bias, c[t, lo:hi],
                   c[t + 1, lo:hi], h[t + 1, lo:hi], tanh_c[t, lo:hi])


@njit(fastmath=ORDERED)
def lstm_loop_backward(f, gates, c, tanh_c, dh_out, every, w_t, wp, work, dz, zero_init,
                        lo, hi, dh_rec, dc, db, x, fused, dw_in, h, dw_rec, ring, h_ring):
    t_ = dz.shape[0]
    held, last = 0, 1 if zero_init else 0  # last: the last step with a weight gradient
    for t in range(t_ - 1, -1, -1):
        dz_t = _step_rows(dz, ring, held, t, lo, hi)
        _lstm_cell_backward(gates[t, lo:hi], c[t, lo:hi], tanh_c[t, lo:hi], dh_rec,
                            dh_out[t if every else 0, lo:hi], every or t == t_ - 1, dc,
                            dz_t, db, x[t, lo:hi], fused, dw_in)
        if t or not zero_init:
            held = _step_weight_grad(h[t, lo:hi], dz_t, dw_rec, ring, h_ring, held, t == last)
            _product(f, dz_t, w_t, wp, dh_rec, work)


@njit(fastmath=ORDERED)
def gru_loop(f, x, w_in, project, w_rec, wp, work, gates, bias, rbias, h, hn, rec,
              zero_init, lo, hi):
    for t in range(x.shape[0]):
        if t or not zero_init:
            _product(f, h[t, lo:hi], w_rec, wp, rec, work)
        _gru_cell(x[t, lo:hi], w_in, project, rec, gates[t, lo:hi], bias, rbias, h[t, lo:hi],
                  h[t + 1, lo:hi], hn[t, lo:hi])


@njit(fastmath=ORDERED)
def gru_loop_backward(f, gates, hn, h, dh_out, every, w_t, wp, work, dzx, dzh, zero_init,
                       lo, hi, dh_rec, carry, db, dbhn, x, fused, dw_in):
    t_ = dzx.shape[0]
    for t in range(t_ - 1, -1, -1):
        _gru_cell_backward(gates[t, lo:hi], hn[t, lo:hi], h[t, lo:hi], dh_rec,
                           dh_out[t if every else 0, lo:hi], every or t == t_ - 1, carry,
                           dzx[t, lo:hi], dzh[t, lo:hi], db, dbhn, x[t, lo:hi], fused, dw_in)
        if t or not zero_init:
            _product(f, dzh[t, lo:hi], w_t, wp, dh_rec, work)
