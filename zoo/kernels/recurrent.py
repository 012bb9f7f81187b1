"""Recurrent layers' kernels: the checks, the row blocks and the passes over a sequence.

The arithmetic of one time step is a fused cell and a pass over a block of rows is a time loop
(``zoo.kernels.recurrent_cells``, where the cells and their float32 maths are described).

Per sequence: the inputs of all steps are projected at once (one GEMM; for narrow inputs,
F <= 16, the projection is fused into the cells instead, since BLAS is slow at GEMMs with an
inner dimension of 1 to 16); then step by step one GEMM applies the recurrent weights to the
previous state and one fused kernel adds the projection and the bias, applies every gate's
non-linearity and produces the new state, caching what backward needs. Backward mirrors it:
per step one fused kernel turns the state gradient into pre-activation gradients (and
accumulates the bias gradient) and one GEMM carries it to the previous state; the recurrent
weights' gradient (and the inputs' and, for wide inputs, the input weights') is then one GEMM
over all steps (``_gradients``). In float32 (but for the GRU) each block instead adds its rows'
``h_t^T dz_t`` to its own part of the recurrent weights' gradient in the time loop, right after
the cell, while ``dz_t`` is in cache (``zoo.kernels.sgemm`` with ``h_t`` read transposed in
place, each element one chain of multiply-adds over the block's steps in order); the parts are
added in block order. As one GEMM after the loop it was ~25% of an lstm step, at ~135 GFLOP/s,
and one more job for the threads to meet at. Narrow inputs have their input-weight gradient
added row by row in the backward cells, while the row's pre-activation gradients are in L1: as
a GEMM over all steps with an inner dimension of 1 it read the whole ``dz`` from memory again
(180 us of an lstm step's ~9 ms). When nothing reads the pre-activation gradients after the
loop (no input gradient, narrow inputs, float32: a model's first layer), each block keeps only
the current step's, in a buffer of its own (``_keeps_dz``), and ``dz`` is not written.

The step GEMMs: float32 multiplies by the recurrent weights packed once per pass
(``zoo.kernels.packed``: a register tile in LLVM IR, 190-220 GFLOP/s on the lstm workload's
32 x 128 x 512 steps, where a BLAS call, repacking the 256 KB of weights at every step, ran at
100-140); float64 (gradient checks) calls numpy's own BLAS function (``zoo.kernels.cblas``).

The rows of a batch are independent through time, so the batch is cut into row blocks
(``_blocks``: from the sizes alone) and each block runs its whole time loop as one numba kernel
without the GIL: in float32 as a native job of zoo's workers (``zoo.kernels.recurrent_native``),
in float64 as a Python block (``_parallel``). The blocks are shared by ``zoo.kernels.threads``'
count of threads, each with BLAS on one thread; a row's step products do not depend on the rows
beside it, and the parts of the bias (and narrow input-weight, and float32 recurrent-weight)
gradients are added in block order, so the results are the same on one thread and on several.

Layout: everything is time-major so each step's slice is one contiguous ``(N, width)`` block:
inputs ``x`` are ``(T, N, F)``, ``gates`` ``(T, N, G*U)``, states ``h`` (and ``c``)
``(T + 1, N, U)`` with the initial state in slot 0 and step t's output in slot t + 1; the gate
blocks (G of them: 1 for the tanh RNN, 4 for the LSTM, 3 for the GRU) along the last axis. The
work arrays start on cache lines (``zoo.kernels.aligned``), which changes no bit.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError, describe_array
from zoo.kernels import aligned, cblas, packed, threads
from zoo.kernels import recurrent_cells as cells
from zoo.kernels import recurrent_native as native

_FLOATS = (np.float32, np.float64)
# Inputs up to this width are projected inside the cells rather than by one GEMM.
FUSE_MAX_FEATURES = 16
# Split the batch into blocks of at least this many rows (a step's GEMM on 32 rows takes half
# the time of one on 64; on 16, more than half), at most MAX_BLOCKS of them, and only with this
# much multiply-add work per step (rows x units x gate width): below, threads cost more than
# they save.
ROWS_PER_BLOCK = 32
MAX_BLOCKS = 8
MIN_WORK = 1 << 18


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


def _keeps_dz(dx, fused: bool, dtype) -> bool:
    """Whether the pre-activation gradients of every step are read after the time loop: by
    ``_gradients``, for an input gradient, wide inputs' weight gradient, or float64's
    recurrent-weight gradient. Otherwise (float32) each block keeps only the current step's,
    in a buffer of its own: the lstm workload's backward then writes 64 KB a block a step that
    stays in L1/L2, where it wrote 5 MB of ``dz`` a pass to memory (4-9% of its step on two
    threads)."""
    return dx is not None or not fused or dtype != np.float32


# What float64's Python blocks pass for the float32 loops' own arrays: the recurrent-weight
# gradient's part (float64's is one GEMM after the loop), the rings of the last steps' dz and
# h (``recurrent_cells._step_weight_grad``) and ``packed.gemm``'s work array.
_NO_PART = np.zeros((1, 1))
_NO_RING = np.empty((0, 0, 0))
_NO_WORK = np.empty((0, 0), np.float32)


def _forward_setup(x, w_in, w_rec, gates, g: int) -> tuple:
    """What every forward pass starts with: its row blocks (``_blocks``), whether the cells
    project the inputs (``_project``, which projects wide ones now) and the packed weights."""
    n_ = x.shape[1]
    u_ = w_rec.shape[0]
    blocks = _blocks(n_, n_ * u_ * g * u_)
    return blocks, _project(x, w_in, gates, blocks), _pack(w_rec, "forward")


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
    blocks, project, wp = _forward_setup(x, w_in, w_rec, gates, 1)
    if dt == np.float32:
        native.forward(native.RNN, x, w_in, project, wp, gates, bias, h, zero_init, blocks)
        return
    f = cblas.gemm_function(dt)

    def rows(lo, hi):
        rec = aligned.zeros((hi - lo, u_), dt)
        cells.rnn_loop(f, x, w_in, project, w_rec, wp, _NO_WORK, gates, bias, h, rec,
                       zero_init, lo, hi)

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

    steps, wp = _steps(dh_out, every), _pack(w_t, "backward")
    fused = f_ <= FUSE_MAX_FEATURES
    if dt == np.float32:
        # (h stands in for the gates, which the RNN does not have)
        states = native.backward(native.RNN, x, h, h, steps, every, wp, dz, zero_init, fused,
                                 not _keeps_dz(dx, fused, dt), blocks, db, dw_in, dw_rec)
        _gradients(x, w_in, h, dz, dz, dx, None if fused else dw_in, None, zero_init, blocks)
        return None if states is None else states[0]
    f = cblas.gemm_function(dt)

    def rows(lo, hi):
        dh_rec = aligned.zeros((hi - lo, u_), dt)
        db_part = aligned.zeros(u_, dt)
        dw_part = aligned.zeros((f_, u_), dt)
        cells.rnn_loop_backward(f, h, steps, every, w_t, wp, _NO_WORK, dz, zero_init, lo, hi,
                                dh_rec, db_part, x, fused, dw_part, _NO_PART, _NO_RING,
                                _NO_RING)
        return dh_rec, db_part, dw_part

    parts = _parallel(rows, n_, blocks)
    np.sum([p[1] for p in parts], axis=0, out=db)
    if fused:
        np.sum([p[2] for p in parts], axis=0, out=dw_in)
    _gradients(x, w_in, h, dz, dz, dx, None if fused else dw_in, dw_rec, zero_init, blocks)
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
    blocks, project, wp = _forward_setup(x, w_in, w_rec, gates, 4)
    if dt == np.float32:
        native.forward(native.LSTM, x, w_in, project, wp, gates, bias, h, zero_init, blocks,
                       c, tanh_c)
        return
    f = cblas.gemm_function(dt)

    def rows(lo, hi):
        rec = aligned.zeros((hi - lo, 4 * u_), dt)
        cells.lstm_loop(f, x, w_in, project, w_rec, wp, _NO_WORK, gates, bias, h, c, tanh_c,
                        rec, zero_init, lo, hi)

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

    steps, wp = _steps(dh_out, every), _pack(w_t, "backward")
    fused = f_ <= FUSE_MAX_FEATURES
    if dt == np.float32:
        states = native.backward(native.LSTM, x, h, gates, steps, every, wp, dz, zero_init,
                                 fused, not _keeps_dz(dx, fused, dt), blocks, db, dw_in, dw_rec,
                                 extra0=c, extra1=tanh_c, state=dc_out)
        _gradients(x, w_in, h, dz, dz, dx, None if fused else dw_in, None, zero_init, blocks)
        return (None, None) if states is None else states
    f = cblas.gemm_function(dt)

    def rows(lo, hi):
        dh_rec = aligned.zeros((hi - lo, u_), dt)
        dc = aligned.zeros((hi - lo, u_), dt) if dc_out is None else aligned.copy(dc_out[lo:hi])
        db_part = aligned.zeros(4 * u_, dt)
        dw_part = aligned.zeros((f_, 4 * u_), dt)
        cells.lstm_loop_backward(f, gates, c, tanh_c, steps, every, w_t, wp, _NO_WORK, dz,
                                 zero_init, lo, hi, dh_rec, dc, db_part, x, fused, dw_part, h,
                                 _NO_PART, _NO_RING, _NO_RING)
        return dh_rec, dc, db_part, dw_part

    parts = _parallel(rows, n_, blocks)
    np.sum([p[2] for p in parts], axis=0, out=db)
    if fused:
        np.sum([p[3] for p in parts], axis=0, out=dw_in)
    _gradients(x, w_in, h, dz, dz, dx, None if fused else dw_in, dw_rec, zero_init, blocks)
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
    blocks, project, wp = _forward_setup(x, w_in, w_rec, gates, 3)
    if dt == np.float32:
        native.forward(native.GRU, x, w_in, project, wp, gates, bias, h, zero_init, blocks,
                       recurrent_bias, hn)
        return
    f = cblas.gemm_function(dt)

    def rows(lo, hi):
        rec = aligned.zeros((hi - lo, 3 * u_), dt)
        cells.gru_loop(f, x, w_in, project, w_rec, wp, _NO_WORK, gates, bias, recurrent_bias,
                       h, hn, rec, zero_init, lo, hi)

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

    steps, wp = _steps(dh_out, every), _pack(w_t, "backward")
    fused = f_ <= FUSE_MAX_FEATURES
    if dt == np.float32:
        states = native.backward(native.GRU, x, h, gates, steps, every, wp, dzx, zero_init,
                                 fused, False, blocks, db, dw_in, dw_rec, dbhn=dbhn,
                                 extra0=hn, extra1=dzh)
        _gradients(x, w_in, h, dzx, dzh, dx, None if fused else dw_in, dw_rec, zero_init,
                   blocks)
        return None if states is None else states[0]
    f = cblas.gemm_function(dt)

    def rows(lo, hi):
        dh_rec = aligned.zeros((hi - lo, u_), dt)
        carry = aligned.zeros((hi - lo, u_), dt)
        db_part = aligned.zeros(3 * u_, dt)
        dbhn_part = aligned.zeros(u_, dt)
        dw_part = aligned.zeros((f_, 3 * u_), dt)
        cells.gru_loop_backward(f, gates, hn, h, steps, every, w_t, wp, _NO_WORK, dzx, dzh,
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
