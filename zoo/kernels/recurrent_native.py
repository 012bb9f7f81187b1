"""float32 recurrent time loops as native jobs of zoo's workers (``zoo.kernels.recurrent``).

Each row block's time loop (``zoo.kernels.recurrent_cells``) runs as a numba cfunc posted to
the workers (``threads.run_call``), not as a Python function (``threads.run_blocks``). A
Python block holds the GIL around its kernel: on the lstm workload the worker's block started
40-90 us after the caller's (the GIL passes only when the caller enters its kernel, and the
worker sleeps on it meanwhile), and the caller saw the worker's end tens of microseconds late,
in every pass. A worker spinning for the next job starts a native block at once.

A block finds its arrays in a frame: an int64 array of sizes, flags and addresses that
``_forward_frame`` and ``_backward_frame`` fill before the job is posted. Its work arrays (the
recurrent products of a step, the state gradients, its parts of the gradients...) are its row
of a scratch array kept from call to call (``_scratch``); the block zeroes them itself. After
a backward job, ``_backward_sums`` adds the blocks' parts of the gradients in block order.
The loops and their arithmetic are the ones the float64 blocks run from Python, so the results
are the same bits on one thread and on several.
"""

from __future__ import annotations

import numpy as np
from numba import carray, cfunc, types

from zoo.kernels import aligned, atomics, packed, sgemm, threads, workers
from zoo.kernels import recurrent_cells as cells
from zoo.kernels._jit import ORDERED, njit

RNN, LSTM, GRU = 0, 1, 2  # the cells, as the frames and block functions name them
GATES = (1, 4, 3)  # gate blocks of each
_NO_BLAS = (np.int64(0), np.int64(0))  # the loops' ``f``: float32 steps use ``packed`` only
NONE = np.empty((0, 0, 0), np.float32)  # an array argument a cell does not have
_ROW_GAP = 1 << 16  # floats between two blocks' rows of a scratch array (``_scratch``)
# Steps a backward block's ring holds (``recurrent_cells._step_weight_grad``): their
# recurrent-weight gradients are one product, of inner dimension steps x rows. The GRU's
# gradient is one GEMM after the loop: it has no ring.
RING_STEPS = (4, 4, 0)


@njit(fastmath=ORDERED)
def _f32(address, shape):
    """The float32 array of ``shape`` (C order) at ``address``."""
    return carray(atomics.pointer(address, np.float32(0)), shape)


@njit(fastmath=ORDERED)
def _line(floats):
    """``floats`` rounded up to whole cache lines (16 floats), so each part starts on one."""
    return -(-floats // 16) * 16


@njit(fastmath=ORDERED)
def _padded(width):
    """The row length of a block's recurrent-weight gradient part: ``width`` and a cache line.

    The part is added to at every step, a register tile of 8 rows at a time; with rows of
    512 floats, 2 KB, every other row sits at the same address modulo 4 KB, and the loads of
    one tile's rows waited on the stores of the tile before it to those addresses (the CPU
    tells loads from stores by their low 12 bits first): 43 us a step's part against 40 us
    with one more line a row (lstm workload, one core)."""
    return width + 16


def _scratch(name: str, blocks: int, floats: int):
    """A float32 work array kept for ``name``, a row of at least ``floats`` per block.

    The rows start on memory pages with ``_ROW_GAP`` floats between them that nothing
    touches (they cost address space, not memory). With the rows end to end, or a page or
    16 KB apart, the second block of the lstm workload's backward ran 5-7% slower than the
    first (two threads; either thread running it), and the same time with 256 KB or 1 MB
    between them, or as separate arrays: the cores' prefetchers, reading past one block's
    arrays into the other's, are the likely cause (not proven).
    """
    page = aligned.PAGE // 4
    row = -(-floats // page) * page + _ROW_GAP
    return aligned.kept(name, (blocks, row), np.float32, aligned.PAGE)


def _block_span(rows: int, blocks: int) -> int:
    """The most rows of a block (``_parallel``'s blocks: ``rows * i // blocks`` bounds)."""
    return -(-rows // blocks)


def _run(block, frame, rows: int, blocks: int) -> None:
    """The block cfunc ``block`` over ``blocks`` blocks of ``range(rows)``."""
    cuts = np.array([rows * i // blocks for i in range(blocks + 1)], np.int64)
    threads.run_call(_address(block), np.array([frame.ctypes.data], np.int64), cuts)


_CFUNCS: dict = {}  # {block function: its cfunc}, compiled on first use (only what runs)


def _address(block) -> int:
    if block not in _CFUNCS:
        _CFUNCS[block] = cfunc(types.void(types.CPointer(types.int64), types.int64),
                               cache=True)(block)
    return _CFUNCS[block].address


@njit(fastmath=ORDERED)
def _bounds(desc, i, words):
    """Block ``i``'s rows ``lo, hi`` and the job's frame of ``words`` words."""
    d = carray(desc, workers.DESC_WORDS)
    frame = carray(atomics.pointer(d[workers.D_ARGS], np.int64(0)), words)
    return d[workers.D_CUTS + i], d[workers.D_CUTS + i + 1], frame


# -- forward ---------------------------------------------------------------------------------
_FORWARD_WORDS = 17


@njit(fastmath=ORDERED)
def _forward_parts(rows, width):
    """Offsets (floats) in a forward block's scratch row: the step's recurrent products
    (rows x width), ``packed.gemm``'s work array, and the end."""
    work = _line(rows * width)
    return 0, work, work + _line(sgemm.ROWS * packed.PANEL)


@njit(fastmath=ORDERED)
def _forward_frame(frame, x, w_in, project, wp, gates, bias, h, zero_init, scratch, extra0,
                   extra1):
    frame[0], frame[1], frame[2], frame[3] = x.shape[0], x.shape[1], x.shape[2], h.shape[2]
    frame[4], frame[5], frame[6] = project, zero_init, wp.shape[0]
    frame[7], frame[8], frame[9] = x.ctypes.data, w_in.ctypes.data, wp.ctypes.data
    frame[10], frame[11], frame[12] = gates.ctypes.data, bias.ctypes.data, h.ctypes.data
    frame[13], frame[14] = extra0.ctypes.data, extra1.ctypes.data
    frame[15], frame[16] = scratch.ctypes.data, scratch.shape[1]


@njit(fastmath=ORDERED)
def _forward_arrays(desc, i, cell):
    """What every forward block needs: its rows, the frame, and the arrays of the loops."""
    lo, hi, fr = _bounds(desc, i, _FORWARD_WORDS)
    t_, n_, f_, u_ = fr[0], fr[1], fr[2], fr[3]
    width = GATES[cell] * u_
    at = fr[15] + 4 * i * fr[16]
    o = _forward_parts(hi - lo, width)
    rec = _f32(at + 4 * o[0], (hi - lo, width))
    rec[:] = 0  # read as is at the first step when the initial state is zeros
    wp = _f32(fr[9], (fr[6], u_, packed.PANEL))
    return (lo, hi, fr, _f32(fr[7], (t_, n_, f_)), _f32(fr[8], (f_, width)), wp,
            _f32(at + 4 * o[1], (sgemm.ROWS, packed.PANEL)), _f32(fr[10], (t_, n_, width)),
            _f32(fr[11], (width,)), _f32(fr[12], (t_ + 1, n_, u_)), rec)


def _rnn_forward_block(desc, i):  # a cfunc
    lo, hi, fr, x, w_in, wp, work, gates, bias, h, rec = _forward_arrays(desc, i, RNN)
    cells.rnn_loop(_NO_BLAS, x, w_in, fr[4] != 0, wp, wp, work, gates, bias, h, rec, fr[5] != 0,
                   lo, hi)


def _lstm_forward_block(desc, i):  # a cfunc; extras: c, tanh_c
    lo, hi, fr, x, w_in, wp, work, gates, bias, h, rec = _forward_arrays(desc, i, LSTM)
    t_, n_, u_ = x.shape[0], x.shape[1], h.shape[2]
    cells.lstm_loop(_NO_BLAS, x, w_in, fr[4] != 0, wp, wp, work, gates, bias, h,
                    _f32(fr[13], (t_ + 1, n_, u_)), _f32(fr[14], (t_, n_, u_)), rec,
                    fr[5] != 0, lo, hi)


def _gru_forward_block(desc, i):  # a cfunc; extras: recurrent_bias, hn
    lo, hi, fr, x, w_in, wp, work, gates, bias, h, rec = _forward_arrays(desc, i, GRU)
    t_, n_, u_ = x.shape[0], x.shape[1], h.shape[2]
    cells.gru_loop(_NO_BLAS, x, w_in, fr[4] != 0, wp, wp, work, gates, bias, _f32(fr[13], (u_,)),
                   h, _f32(fr[14], (t_, n_, u_)), rec, fr[5] != 0, lo, hi)


_FORWARD_BLOCKS = (_rnn_forward_block, _lstm_forward_block, _gru_forward_block)


def forward(cell: int, x, w_in, project: bool, wp, gates, bias, h, zero_init: bool,
            blocks: int, extra0=NONE, extra1=NONE) -> None:
    """The time loops of ``cell`` over ``blocks`` row blocks (``recurrent``'s float32 forward).

    ``wp`` is the packed recurrent weights; ``extra0, extra1`` the cell's own arrays: the
    LSTM's ``c`` and ``tanh_c``, the GRU's ``recurrent_bias`` and ``hn``.
    """
    n_ = x.shape[1]
    floats = _forward_parts(_block_span(n_, blocks), GATES[cell] * h.shape[2])[-1]
    scratch = _scratch("recurrent forward blocks", blocks, floats)
    frame = aligned.kept("recurrent forward frame", (_FORWARD_WORDS,), np.int64)
    _forward_frame(frame, x, w_in, project, wp, gates, bias, h, zero_init, scratch, extra0,
                   extra1)
    _run(_FORWARD_BLOCKS[cell], frame, n_, blocks)


# -- backward --------------------------------------------------------------------------------
_BACKWARD_WORDS = 21


@njit(fastmath=ORDERED)
def _backward_parts(cell, rows, features, units, ring):
    """Offsets (floats) in a backward block's scratch row, in this order: dL/dh (rows x
    units); the LSTM's dL/dc or the GRU's direct part of dL/dh (rows x units); the bias
    gradient; the GRU's b_hn gradient (units); the input weights' (narrow inputs); the
    recurrent weights' (units rows of ``_padded(width)``; the GRU's is one GEMM after the
    loop); with ``ring``, the last ``RING_STEPS`` steps' pre-activation gradients (rows x
    width each) and states (rows x units each); ``packed.gemm``'s work array; and the end."""
    width = GATES[cell] * units
    steps = RING_STEPS[cell] if ring else 0
    sizes = (rows * units, 0 if cell == RNN else rows * units, width,
             units if cell == GRU else 0, features * width,
             0 if cell == GRU else units * _padded(width), steps * rows * width,
             steps * rows * units, sgemm.ROWS * packed.PANEL)
    at = [0] * 10
    for j in range(9):
        at[j + 1] = at[j] + _line(sizes[j])
    return at


@njit(fastmath=ORDERED)
def _backward_frame(frame, x, h, gates, dh_out, every, wp, dz, zero_init, fused, ring,
                    scratch, extra0, extra1, state):
    frame[0], frame[1], frame[2], frame[3] = x.shape[0], x.shape[1], x.shape[2], h.shape[2]
    frame[4], frame[5], frame[6], frame[7] = every, zero_init, fused, ring
    frame[8], frame[9] = state.shape[0] > 0, wp.shape[0]
    frame[10], frame[11], frame[12] = dh_out.ctypes.data, wp.ctypes.data, x.ctypes.data
    frame[13], frame[14], frame[15] = h.ctypes.data, gates.ctypes.data, dz.ctypes.data
    frame[16], frame[17], frame[18] = extra0.ctypes.data, extra1.ctypes.data, state.ctypes.data
    frame[19], frame[20] = scratch.ctypes.data, scratch.shape[1]


@njit(fastmath=ORDERED)
def _backward_arrays(desc, i, cell):
    """What every backward block needs: its rows, the frame, the arrays of the loops and its
    own parts (``_backward_parts``), zeroed (the LSTM's dL/dc from the given final state's)."""
    lo, hi, fr = _bounds(desc, i, _BACKWARD_WORDS)
    t_, n_, f_, u_ = fr[0], fr[1], fr[2], fr[3]
    rows, width = hi - lo, GATES[cell] * u_
    at = fr[19] + 4 * i * fr[20]
    o = _backward_parts(cell, rows, f_, u_, fr[7] != 0)
    dh_rec = _f32(at + 4 * o[0], (rows, u_))
    second = _f32(at + 4 * o[1], (rows if cell != RNN else 0, u_))
    db = _f32(at + 4 * o[2], (width,))
    dbhn = _f32(at + 4 * o[3], (u_ if cell == GRU else 0,))
    dw_in = _f32(at + 4 * o[4], (f_, width))
    dw_rec = _f32(at + 4 * o[5], (0 if cell == GRU else u_, _padded(width)))[:, :width]
    dh_rec[:] = 0
    second[:] = 0
    db[:] = 0
    dbhn[:] = 0
    dw_in[:] = 0
    dw_rec[:] = 0
    if fr[8]:
        second[:] = _f32(fr[18], (n_, u_))[lo:hi]
    outputs, ring = t_ if fr[4] else 1, RING_STEPS[cell] if fr[7] else 0
    return (lo, hi, fr, _f32(fr[10], (outputs, n_, u_)),
            _f32(fr[11], (fr[9], width, packed.PANEL)), _f32(fr[12], (t_, n_, f_)),
            _f32(fr[13], (t_ + 1, n_, u_)), _f32(fr[14], (t_, n_, width)),
            _f32(fr[15], (t_, n_, width)), dh_rec, second, db, dbhn, dw_in, dw_rec,
            _f32(at + 4 * o[6], (ring, rows, width)), _f32(at + 4 * o[7], (ring, rows, u_)),
            _f32(at + 4 * o[8], (sgemm.ROWS, packed.PANEL)))


def _rnn_backward_block(desc, i):  # a cfunc
    (lo, hi, fr, dh_out, wp, x, h, gates, dz, dh_rec, second, db, dbhn, dw_in, dw_rec, ring,
     h_ring, work) = _backward_arrays(desc, i, RNN)
    cells.rnn_loop_backward(_NO_BLAS, h, dh_out, fr[4] != 0, wp, wp, work, dz, fr[5] != 0, lo,
                            hi, dh_rec, db, x, fr[6] != 0, dw_in, dw_rec, ring, h_ring)


def _lstm_backward_block(desc, i):  # a cfunc; extras: c, tanh_c; state: dL/dc of the last c
    (lo, hi, fr, dh_out, wp, x, h, gates, dz, dh_rec, dc, db, dbhn, dw_in, dw_rec, ring,
     h_ring, work) = _backward_arrays(desc, i, LSTM)
    t_, n_, u_ = x.shape[0], x.shape[1], h.shape[2]
    cells.lstm_loop_backward(_NO_BLAS, gates, _f32(fr[16], (t_ + 1, n_, u_)),
                             _f32(fr[17], (t_, n_, u_)), dh_out, fr[4] != 0, wp, wp, work, dz,
                             fr[5] != 0, lo, hi, dh_rec, dc, db, x, fr[6] != 0, dw_in, h,
                             dw_rec, ring, h_ring)


def _gru_backward_block(desc, i):  # a cfunc; dz: dzx; extras: hn, dzh
    (lo, hi, fr, dh_out, wp, x, h, gates, dzx, dh_rec, carry, db, dbhn, dw_in, dw_rec, _, _,
     work) = _backward_arrays(desc, i, GRU)
    t_, n_, u_ = x.shape[0], x.shape[1], h.shape[2]
    cells.gru_loop_backward(_NO_BLAS, gates, _f32(fr[16], (t_, n_, u_)), h, dh_out, fr[4] != 0,
                            wp, wp, work, dzx, _f32(fr[17], (t_, n_, 3 * u_)), fr[5] != 0, lo,
                            hi, dh_rec, carry, db, dbhn, x, fr[6] != 0, dw_in)


_BACKWARD_BLOCKS = (_rnn_backward_block, _lstm_backward_block, _gru_backward_block)


@njit(fastmath=ORDERED)
def _add_part(out, part, first):
    """``out`` = (first) or += ``part``, row by row (``part`` may be a padded view)."""
    for r in range(out.shape[0]):
        if first:
            out[r] = part[r]
        else:
            out[r] += part[r]


@njit(fastmath=ORDERED)
def _backward_sums(cell, scratch, n_, f_, u_, ring, fused, db, dbhn, dw_in, dw_rec, states):
    """The backward blocks' parts (rows of ``scratch``) added in block order: into ``db``,
    the GRU's ``dbhn``, ``dw_in`` (narrow inputs: ``fused``) and, but for the GRU, ``dw_rec``;
    unless ``states`` is empty (zero initial states), each block's rows of dL/dh_0 into
    ``states[0]`` (the GRU's plus its direct part) and the LSTM's dL/dc_0 into ``states[1]``."""
    blocks = scratch.shape[0]
    width = GATES[cell] * u_
    for b in range(blocks):
        lo, hi = n_ * b // blocks, n_ * (b + 1) // blocks
        o = _backward_parts(cell, hi - lo, f_, u_, ring)
        at = np.int64(scratch.ctypes.data) + 4 * b * scratch.shape[1]
        _add_part(db.reshape((1, width)), _f32(at + 4 * o[2], (1, width)), b == 0)
        if cell == GRU:
            _add_part(dbhn.reshape((1, u_)), _f32(at + 4 * o[3], (1, u_)), b == 0)
        if fused:
            _add_part(dw_in, _f32(at + 4 * o[4], (f_, width)), b == 0)
        if cell != GRU:
            _add_part(dw_rec, _f32(at + 4 * o[5], (u_, _padded(width)))[:, :width], b == 0)
        if states.shape[0]:
            states[0, lo:hi] = _f32(at + 4 * o[0], (hi - lo, u_))
            if cell == LSTM:
                states[1, lo:hi] = _f32(at + 4 * o[1], (hi - lo, u_))
            elif cell == GRU:
                states[0, lo:hi] += _f32(at + 4 * o[1], (hi - lo, u_))


_NO_SUM = np.empty(0, np.float32)  # ``dbhn`` but for the GRU
_NO_STATES = np.empty((0, 0, 0), np.float32)
_NO_STATE = np.empty((0, 0), np.float32)  # ``state`` when the LSTM's final dL/dc is not given


def backward(cell: int, x, h, gates, dh_out, every: bool, wp, dz, zero_init: bool,
             fused: bool, ring: bool, blocks: int, db, dw_in, dw_rec, dbhn=_NO_SUM,
             extra0=NONE, extra1=NONE, state=None):
    """The backward time loops of ``cell`` over ``blocks`` row blocks, and their gradient parts
    added in block order (``recurrent``'s float32 backward): ``db``, ``dbhn`` (GRU),
    ``dw_in`` if ``fused`` (narrow inputs), ``dw_rec`` (not the GRU's) are overwritten.

    ``dh_out`` is 3-D (one step when not ``every``); ``wp`` the packed transposed recurrent
    weights; ``ring``: nothing reads ``dz`` after the loop, so each block keeps its last few
    steps' (``RING_STEPS``); ``extra0, extra1``: the LSTM's ``c, tanh_c``, the GRU's
    ``hn, dzh`` (``dz`` is its ``dzx``); ``state``: the LSTM's dL/dc of its final cell state,
    or None. Returns the initial states' gradients ``(N, U)``: dL/dh_0 (and the LSTM's
    dL/dc_0), or None if ``zero_init``.
    """
    t_, n_, f_ = x.shape
    u_ = h.shape[2]
    floats = _backward_parts(cell, _block_span(n_, blocks), f_, u_, ring)[-1]
    scratch = _scratch("recurrent backward blocks", blocks, floats)
    frame = aligned.kept("recurrent backward frame", (_BACKWARD_WORDS,), np.int64)
    given = _NO_STATE if state is None else state
    _backward_frame(frame, x, h, gates, dh_out, every, wp, dz, zero_init, fused, ring, scratch,
                    extra0, extra1, given)
    _run(_BACKWARD_BLOCKS[cell], frame, n_, blocks)
    states = _NO_STATES if zero_init else np.empty((2 if cell == LSTM else 1, n_, u_),
                                                   np.float32)
    _backward_sums(cell, scratch, n_, f_, u_, ring, fused, db, dbhn, dw_in, dw_rec, states)
    return None if zero_init else tuple(states)
