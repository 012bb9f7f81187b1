"""A stack of Dense layers' forward, loss and backward as one kernel call.

For a small MLP (the mlp-small workload: 64-64-10, batch 32) the arithmetic of a step takes a
few microseconds and the Python around it (two layer calls each way, their GEMM and
activation calls, the loss) took four times as long; on the 784-wide mlp and autoencoder
workloads that Python was still 9-11% of a two-thread step. This kernel runs the same steps
in one call, with the same pieces: each product as the layer computes it, one ``sgemm`` call
where the layer's ``blas.Gemm`` does not cut it (float32) or one call of numpy's own BLAS
GEMM as ``np.dot`` makes it (``cblas.gemm_trans``), or, where the Gemm cuts it into blocks,
the same blocks posted to zoo's workers from inside the kernel
(``workers.gemm_in_kernel``); and the arithmetic of the kernels ``Dense`` and the
losses use (``zoo.kernels.dense``, ``zoo.kernels.losses``, compiled without fast-math so that
this kernel's copies of them round as theirs do). So the results are the layer-by-layer
results, bit for bit, on any thread count (``tests/test_dense_stack.py`` checks it), and
``zoo.training.fused`` decides from the model's structure and sizes alone when to use it.

Work the layers do one piece after another, this kernel shares where it can: a layer's
elementwise work (the forward's parts, bias and activation; the activation's gradient; under
MSE the loss's gradient) is one call (``dense_rows.rows``), in blocks of rows that zoo's
workers share when the layer is large (``plans[:, ROWS]``), and the weight and input gradients
of a layer too small to cut run as one job of their two calls (``plans[:, PAIR]``). Sums over
rows (the bias gradient, the loss) stay one pass each, in the layers' order (a large MSE
output's two side by side, ``plans[:, SUMS]``). Under plain SGD it also makes each layer's
update right after the layer's gradients, with ``optim``'s own SGD kernel (``_sgd_update``).

Parameters and gradients are read and written in the trainer's flat buffers; ``layout`` (its
columns below) places every layer's arrays in them and in ``work``, one buffer per batch size
for the intermediate arrays, and ``plans`` says how each product is computed.
"""

from __future__ import annotations

import numpy as np

from zoo.kernels import cblas, dense_rows, fpenv, optim, sgemm, workers
from zoo.kernels._jit import njit
from zoo.kernels.dense import _bias_grad, _grad_leaky_relu, _grad_sigmoid, _grad_tanh
from zoo.kernels.dense_rows import _at
from zoo.kernels.losses import _softmax_ce, mse_value

# Activation codes (``layout[:, 4]``); relu is leaky_relu with slope 0, as in Dense.
LINEAR, LEAKY_RELU, TANH, SIGMOID = (dense_rows.LINEAR, dense_rows.LEAKY_RELU, dense_rows.TANH,
                                     dense_rows.SIGMOID)
ACTIVATION_CODES = {None: LINEAR, "relu": LEAKY_RELU, "leaky_relu": LEAKY_RELU, "tanh": TANH,
                    "sigmoid": SIGMOID}
# Loss codes.
SOFTMAX_CROSS_ENTROPY, MEAN_SQUARED_ERROR = 0, 1
# Columns of ``layout``, one row per layer: sizes, offsets into ``values``/``grads`` (weight,
# bias) and into ``work`` (the layer's output, its activation's gradient, the gradient of its
# output: the loss's for the last layer, else where the next layer writes its input gradient).
FAN_IN, UNITS, WEIGHT, BIAS, ACTIVATION, OUT, GRAD_PRE, GRAD_OUT = range(8)
# ``plans[layer, product]``, the products in the order FORWARD, WEIGHT_GRAD, INPUT_GRAD: how
# the layer's ``blas.Gemm`` of that shape computes it. ``P_BLOCKS`` 1: one call, ``sgemm``'s
# where ``P_KIND`` is ``workers.KIND_TILED``, else BLAS's as ``np.dot`` makes it; more: the
# Gemm's job (``workers.gemm_in_kernel``: ``P_KIND``, ``P_FN`` from
# ``workers.gemm_block_function``), its blocks along ``P_AXIS`` bounded by the
# ``P_BLOCKS + 1`` words from ``P_CUTS``.
FORWARD, WEIGHT_GRAD, INPUT_GRAD = range(3)
P_BLOCKS, P_AXIS, P_KIND, P_FN, P_CUTS = range(5)
# ``plans[layer, UPDATE]``: the SGD update of the layer's weight, where the step makes it
# (``update``): ``P_BLOCKS`` chunks of the weight's elements bounded from ``P_CUTS``, each
# ``optim``'s SGD chunk cfunc (``P_FN``) on zoo's threads; 1: the SGD kernel itself.
UPDATE = 3
# ``plans[layer, ROWS]``: the layer's elementwise work (``dense_rows.rows``) in ``P_BLOCKS``
# blocks of rows bounded from ``P_CUTS`` (``dense_rows.row_cuts``), each ``dense_rows``'s
# cfunc (``P_FN``) on zoo's threads; 1: ``rows`` itself, on the whole output.
ROWS = 4
# ``plans[layer, PAIR]``: ``P_BLOCKS`` 2 where the layer's weight and input gradients, each
# one call of one kind (their plans' ``P_BLOCKS`` 1, ``P_KIND`` and ``P_FN`` copied here),
# run as one job of two blocks (``workers``'s ``AXIS_LIST``), so each core makes one.
PAIR = 5
# ``plans[layer, SUMS]`` (the last layer, under MSE): ``P_BLOCKS`` 2 where the loss and the
# bias gradient, one pass each over the output, run as one job of two blocks
# (``dense_rows.SUMS``, cfunc ``P_FN``); 1: one after the other.
SUMS = 6


# ``frame`` (``frame_of``): what a fused step is given that stays the same from step to step,
# as int64 words: BLAS's GEMM (address, integer width), the loss code, and the arrays as
# addresses (each sized by the words after it or by ``layout``'s rows). numba's dispatcher
# takes about 45 ns an array argument: a dozen of them were a microsecond of the mlp-small
# step's 17.
F_ADDRESS, F_WIDTH, F_LOSS, F_VALUES, F_GRADS, F_PARAMS, F_LAYOUT, F_DEPTH, F_SLOPES, F_WORK, \
    F_WORK_SIZE, F_PLANS, F_PLAN_WIDTH, F_SCRATCH, F_SCRATCH_SIZE, F_HYPER, F_ARGS, \
    FRAME_WORDS = range(18)


def frame_of(blas, loss_code, values, grads, layout, slopes, work, plans, scratch, hyper,
             args) -> np.ndarray:
    """The ``frame`` of ``fused_step``'s unchanging arguments (see ``fused_step``). It holds
    addresses only: the caller keeps every array alive, and unmoved, as long as the frame."""
    arrays = (values, grads, layout, slopes, work, plans, scratch, hyper, args)
    if not all(a.flags.c_contiguous for a in arrays) or grads.size != values.size \
            or slopes.size != layout.shape[0] or plans.shape[:2] != (layout.shape[0], 7) \
            or hyper.size != 4 or args.size != workers.CALL_ARGS:
        raise ValueError("dense_stack.frame_of: arrays of unexpected shapes")
    frame = np.zeros(FRAME_WORDS, np.int64)
    frame[[F_ADDRESS, F_WIDTH, F_LOSS]] = blas[0], blas[1], loss_code
    frame[[F_VALUES, F_GRADS, F_PARAMS]] = values.ctypes.data, grads.ctypes.data, values.size
    frame[[F_LAYOUT, F_DEPTH, F_SLOPES]] = layout.ctypes.data, layout.shape[0], \
        slopes.ctypes.data
    frame[[F_WORK, F_WORK_SIZE]] = work.ctypes.data, work.size
    frame[[F_PLANS, F_PLAN_WIDTH]] = plans.ctypes.data, plans.shape[2]
    frame[[F_SCRATCH, F_SCRATCH_SIZE]] = scratch.ctypes.data, scratch.size
    frame[[F_HYPER, F_ARGS]] = hyper.ctypes.data, args.ctypes.data
    return frame


@njit
def _region(buf, offset, rows, cols):
    return buf[offset:offset + rows * cols].reshape((rows, cols))


@njit
def _activation_grad(g, y, dz, db, code, slope):
    """``dz = g * act'(y)`` and ``db``, its sum over rows, in one pass (``dense``'s kernels:
    the per-element arithmetic of ``dense_rows.rows``'s ACT_GRAD)."""
    if code == LEAKY_RELU:
        _grad_leaky_relu(g, y, dz, db, slope)
    elif code == TANH:
        _grad_tanh(g, y, dz, db, slope)
    else:
        _grad_sigmoid(g, y, dz, db, slope)


@njit
def _product(f, plan, a, ta, b, tb, c, scratch, box, ticket, clock, add=True):
    """``c = op(a) @ op(b)`` as ``plan`` says (see ``plans``), the way the layer computes it:
    one sgemm or BLAS call, or the Gemm's blocks, a split inner dimension's parts added in block
    order (``blas._add_parts``); without ``add`` they are left in ``scratch`` (``_parts``)."""
    blocks = plan[P_BLOCKS]
    if blocks == 1:
        if plan[P_KIND] == workers.KIND_TILED:
            m = a.shape[1] if ta else a.shape[0]
            sgemm.gemm_at(ta, tb, m, c.shape[1], a.shape[0] if ta else a.shape[1],
                          a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1], c.ctypes.data,
                          c.shape[1], False)
        else:
            cblas.gemm_trans(f, a, ta, b, tb, c)
        return
    workers.gemm_in_kernel(box, ticket, clock, plan[P_KIND], plan[P_FN], f[1],
                           plan[P_CUTS:P_CUTS + blocks + 1], plan[P_AXIS], a, int(ta), b,
                           int(tb), c, scratch)
    if add and plan[P_AXIS] == 2:
        m, n = c.shape
        for part in range(blocks - 1):
            earlier = _region(scratch, part * m * n, m, n)
            for i in range(m):
                for j in range(n):
                    c[i, j] += earlier[i, j]


@njit
def _parts(plan):
    """How many parts ``_product`` left in its scratch (without ``add``): none unless ``plan``
    cut the inner dimension."""
    return plan[P_BLOCKS] - 1 if plan[P_BLOCKS] > 1 and plan[P_AXIS] == 2 else 0


@njit
def _elementwise(f, plan, op, y, scratch, count, bias, slope, code, grad, dz, target, args,
                 box, ticket, clock):
    """``dense_rows.rows``'s work ``op`` on the layer output ``y`` (``count`` parts of it in
    ``scratch``), as ``plan`` says: in one call, or as a job of row blocks (``slope``: the
    one-element array of the slope)."""
    blocks = plan[P_BLOCKS]
    if blocks == 1:
        dense_rows.rows(op, y, scratch.ctypes.data, count, y.size * y.itemsize, bias, slope[0],
                        code, grad, dz, target, y.size)
        return
    dense_rows.describe(args, op, y, scratch.ctypes.data, count, bias, slope, code, grad, dz,
                        target)
    workers.call_in_kernel(box, ticket, clock, f[1], plan[P_FN], args,
                           plan[P_CUTS:P_CUTS + blocks + 1])


@njit
def _loss_and_bias_grad(f, plan, out, target, dz, db, args, box, ticket, clock):
    """The MSE loss of ``out`` and the bias gradient ``db`` (``dz`` summed over rows), as
    ``plan`` says: one job of two blocks, or one after the other. Returns the loss."""
    if plan[P_BLOCKS] == 1:
        _bias_grad(dz, db)
        return mse_value(out, target)
    loss = np.empty(1)
    dense_rows.describe(args, dense_rows.SUMS, out, loss.ctypes.data, 0, db, loss, 0, out, dz,
                        target)
    workers.call_in_kernel(box, ticket, clock, f[1], plan[P_FN], args, plan[P_CUTS:P_CUTS + 3])
    return loss[0]


@njit
def _gradients_paired(f, plan, x, dz, w, dw, dx, box, ticket, clock):
    """A layer's input gradient ``dx = dz @ w.T`` and weight gradient ``dw = x.T @ dz`` as
    one job of two blocks, each one call of the plan's kind.

    The input gradient is block 0, which the caller computes (``zoo.kernels.workers``): the
    caller also makes the layer's forward product and its update, so ``w`` is read and
    written by one core only. With the weight gradient first, the other core read ``w`` for
    ``dx`` and the caller's update then had to take every line of it back: the autoencoder
    workload's two-thread step was 1.6-3.4% slower that way (two runs of 40 interleaved
    rounds, faster in 33 and 37 of them)."""
    table = np.empty(2 * workers.GEMM_WORDS, np.int64)
    workers.describe_listed(table[:workers.GEMM_WORDS], dz, 0, w, 1, dx)
    workers.describe_listed(table[workers.GEMM_WORDS:], x, 1, dz, 0, dw)
    workers.gemm_in_kernel(box, ticket, clock, plan[P_KIND], plan[P_FN], f[1],
                           plan[P_CUTS:P_CUTS + 3], workers.AXIS_LIST, dz, 0, dz, 0, dx, table)


@njit
def _sgd(values, grads, velocity, hyper, start, end):
    optim._sgd(values[start:end], grads[start:end], velocity[start:end], hyper[0], hyper[1],
               hyper[2] != 0, hyper[3])


@njit
def _sgd_update(f, plan, values, grads, velocity, hyper, args, start, size, box, ticket,
                clock):
    """SGD's update of ``values[start:start + size]`` (``hyper``: lr, momentum, nesterov,
    weight decay), as ``optim.sgd`` makes it: the same kernel, elementwise, so the same bits
    however the elements are chunked."""
    end = start + size
    chunks = plan[P_BLOCKS]
    if chunks == 1:
        _sgd(values, grads, velocity, hyper, start, end)
        return
    p, g, v = values[start:end], grads[start:end], velocity[start:end]
    optim._job_args(args, p, g, v, p, hyper)
    workers.call_in_kernel(box, ticket, clock, f[1], plan[P_FN], args,
                           plan[P_CUTS:P_CUTS + chunks + 1])


@njit
def fused_step(frame, x, labels, target, velocity, box, ticket, clock, update):
    """Forward, loss and backward; the gradients land in the frame's ``grads``. Returns the
    mean loss, or -1.0 for a label out of range (the caller then raises, as the loss does).

    Denormals are flushed to zero inside, as the trainer flushes them around a step through
    the layers (``zoo.kernels.fpenv``), and the caller's mode is restored on return: here it
    is two instructions, where the Python scope took about 1.5 us of the mlp-small step's 20.
    Jobs posted from inside hand the mode on to the workers, as every job does.

    ``frame`` (``frame_of``) holds what stays from step to step: ``cblas.gemm_function``'s
    address and width, the loss code, the parameters ``values`` and their ``grads``,
    ``layout``, the layers' ``slopes``, ``work``, ``plans`` (how each product is computed),
    ``scratch`` (a split inner dimension's parts), SGD's ``hyper`` (see ``_sgd_update``) and
    ``args``, an int64 scratch of ``workers.CALL_ARGS``. ``box``, ``ticket``, ``clock`` are a
    ``workers.kernel_jobs`` scope's. With ``update``, each layer's weights and bias also take
    their SGD step once its gradients are made (``velocity``: the momentum buffer).
    Callers build every argument (``zoo.training.fused``): nothing is checked here."""
    zero = x.dtype.type(0)
    depth, params = frame[F_DEPTH], frame[F_PARAMS]
    values, grads = _at(frame[F_VALUES], params, zero), _at(frame[F_GRADS], params, zero)
    layout = _at(frame[F_LAYOUT], (depth, 8), np.int64(0))
    slopes = _at(frame[F_SLOPES], depth, np.float64(0))
    work = _at(frame[F_WORK], frame[F_WORK_SIZE], zero)
    plans = _at(frame[F_PLANS], (depth, 7, frame[F_PLAN_WIDTH]), np.int64(0))
    scratch = _at(frame[F_SCRATCH], frame[F_SCRATCH_SIZE], zero)
    hyper = _at(frame[F_HYPER], 4, np.float64(0))
    args = _at(frame[F_ARGS], workers.CALL_ARGS, np.int64(0))
    mode = workers._float_mode()
    workers._set_float_mode(mode | fpenv.FLUSH_BITS)
    value = _step(frame[F_ADDRESS], frame[F_WIDTH], x, labels, target, frame[F_LOSS], values,
                  grads, layout, slopes, work, plans, scratch, box, ticket, clock, update,
                  velocity, hyper, args)
    workers._set_float_mode(mode)
    return value


@njit
def _step(address, width, x, labels, target, loss_code, values, grads, layout, slopes, work,
          plans, scratch, box, ticket, clock, update, velocity, hyper, args):
    """``fused_step``'s work, in the floating-point mode it sets."""
    f = (address, width)
    jobs = (scratch, box, ticket, clock)
    rows = x.shape[0]
    depth = layout.shape[0]
    last = depth - 1
    classes = layout[last, UNITS]
    out = _region(work, layout[last, OUT], rows, classes)
    grad = _region(work, layout[last, GRAD_OUT], rows, classes)
    mse = loss_code == MEAN_SQUARED_ERROR
    # Forward: the first layer reads x, every other the previous layer's output in work. A
    # product's parts (a cut inner dimension) are added by the elementwise pass, and under
    # MSE the last layer's pass also makes the loss's gradient and its activation's.
    for li in range(depth):
        fan_in, units, code = layout[li, FAN_IN], layout[li, UNITS], layout[li, ACTIVATION]
        w = _region(values, layout[li, WEIGHT], fan_in, units)
        y = _region(work, layout[li, OUT], rows, units)
        if li == 0:
            _product(f, plans[li, FORWARD], x, False, w, False, y, *jobs, False)
        else:
            _product(f, plans[li, FORWARD], _region(work, layout[li - 1, OUT], rows, fan_in),
                     False, w, False, y, *jobs, False)
        b_off = layout[li, BIAS]
        op, g, dz, t = dense_rows.FORWARD, y, y, y  # g, dz, t: unread unless the op says
        if li == last and mse:
            op, g, t = op | dense_rows.MSE_GRAD, grad, target
            if code != LINEAR:
                op, dz = op | dense_rows.ACT_GRAD, _region(work, layout[li, GRAD_PRE], rows, units)
        _elementwise(f, plans[li, ROWS], op, y, scratch, _parts(plans[li, FORWARD]),
                     values[b_off:b_off + units], slopes[li:li + 1], code, g, dz, t, args, box,
                     ticket, clock)
    if mse:  # the loss, and the bias gradient of the dz the forward's pass made
        li = last
        b_off = layout[li, BIAS]
        dz = grad if layout[li, ACTIVATION] == LINEAR else _region(work, layout[li, GRAD_PRE],
                                                                   rows, classes)
        value = _loss_and_bias_grad(f, plans[li, SUMS], out, target, dz,
                                    grads[b_off:b_off + classes], args, box, ticket, clock)
    else:
        value = _softmax_ce(out, labels, grad)
        if value < 0:
            return value
    # Backward, last layer first, as Dense.backward: activation and bias gradient, weight
    # gradient, then the input gradient for every layer but the first (nothing reads it).
    for li in range(last, -1, -1):
        fan_in, units, code = layout[li, FAN_IN], layout[li, UNITS], layout[li, ACTIVATION]
        g = _region(work, layout[li, GRAD_OUT], rows, units)
        b_off = layout[li, BIAS]
        db = grads[b_off:b_off + units]
        dz = g
        if li == last and mse:  # dz and db made after the forward's pass
            if code != LINEAR:
                dz = _region(work, layout[li, GRAD_PRE], rows, units)
        elif code == LINEAR:
            _bias_grad(g, db)
        else:
            dz = _region(work, layout[li, GRAD_PRE], rows, units)
            y = _region(work, layout[li, OUT], rows, units)
            if plans[li, ROWS, P_BLOCKS] == 1:  # one pass makes dz and db together
                _activation_grad(g, y, dz, db, code, slopes[li])
            else:  # dz in row blocks, then db, the sum over the rows in order
                _elementwise(f, plans[li, ROWS], dense_rows.ACT_GRAD, y, scratch, 0,
                             values[b_off:b_off + units], slopes[li:li + 1], code, g, dz, y,
                             args, box, ticket, clock)
                _bias_grad(dz, db)
        dw = _region(grads, layout[li, WEIGHT], fan_in, units)
        if li == 0:
            _product(f, plans[li, WEIGHT_GRAD], x, True, dz, False, dw, *jobs)
        else:
            x_in = _region(work, layout[li - 1, OUT], rows, fan_in)
            w = _region(values, layout[li, WEIGHT], fan_in, units)
            dx = _region(work, layout[li - 1, GRAD_OUT], rows, fan_in)
            if plans[li, PAIR, P_BLOCKS] == 2:
                _gradients_paired(f, plans[li, PAIR], x_in, dz, w, dw, dx, box, ticket, clock)
            else:
                _product(f, plans[li, WEIGHT_GRAD], x_in, True, dz, False, dw, *jobs)
                _product(f, plans[li, INPUT_GRAD], dz, False, w, True, dx, *jobs)
        if update:  # nothing reads this layer's parameters again in this step
            w_off, size = layout[li, WEIGHT], fan_in * units
            if plans[li, UPDATE, P_BLOCKS] == 1 and b_off == w_off + size:
                _sgd(values, grads, velocity, hyper, w_off, b_off + units)  # side by side
            else:
                _sgd_update(f, plans[li, UPDATE], values, grads, velocity, hyper, args, w_off,
                            size, box, ticket, clock)
                _sgd(values, grads, velocity, hyper, b_off, b_off + units)
    return value
