"""A stack of Dense layers' forward, loss and backward as one kernel call.

For a small MLP (the mlp-small workload: 64-64-10, batch 32) the arithmetic of a step takes a
few microseconds and the Python around it (two layer calls each way, their GEMM and
activation calls, the loss) took four times as long; on the 784-wide mlp and autoencoder
workloads that Python was still 9-11% of a two-thread step. This kernel runs the same steps
in one call, with the same pieces: each product as the layer computes it, one call of numpy's
own BLAS GEMM as ``np.dot`` makes it (``cblas.gemm_trans``), or, where the layer's
``blas.Gemm`` cuts it into blocks, the same blocks posted to zoo's workers from inside the
kernel (``workers.gemm_in_kernel``); and the very kernels ``Dense`` and the losses use
(``zoo.kernels.dense``, ``zoo.kernels.losses``, compiled without fast-math so that this
kernel's copies of them round as theirs do), in the same order. So the results are the
layer-by-layer results, bit for bit, on any thread count (``tests/test_dense_stack.py``
checks it), and ``zoo.training.fused`` decides from the model's structure and sizes alone
when to use it. Under plain SGD it also makes each layer's update right after the layer's
gradients, with ``optim``'s own SGD kernel (``_sgd_update``).

Parameters and gradients are read and written in the trainer's flat buffers; ``layout`` (its
columns below) places every layer's arrays in them and in ``work``, one buffer per batch size
for the intermediate arrays, and ``plans`` says how each product is computed.
"""

from __future__ import annotations

from zoo.kernels import cblas, optim, workers
from zoo.kernels._jit import njit
from zoo.kernels.dense import (
    _bias,
    _bias_grad,
    _bias_leaky_relu,
    _bias_sigmoid,
    _bias_tanh,
    _grad_leaky_relu,
    _grad_sigmoid,
    _grad_tanh,
)
from zoo.kernels.losses import _mse, _softmax_ce

# Activation codes (``layout[:, 4]``); relu is leaky_relu with slope 0, as in Dense.
LINEAR, LEAKY_RELU, TANH, SIGMOID = 0, 1, 2, 3
ACTIVATION_CODES = {None: LINEAR, "relu": LEAKY_RELU, "leaky_relu": LEAKY_RELU, "tanh": TANH,
                    "sigmoid": SIGMOID}
# Loss codes.
SOFTMAX_CROSS_ENTROPY, MEAN_SQUARED_ERROR = 0, 1
# Columns of ``layout``, one row per layer: sizes, offsets into ``values``/``grads`` (weight,
# bias) and into ``work`` (the layer's output, its activation's gradient, the gradient of its
# output: the loss's for the last layer, else where the next layer writes its input gradient).
FAN_IN, UNITS, WEIGHT, BIAS, ACTIVATION, OUT, GRAD_PRE, GRAD_OUT = range(8)
# ``plans[layer, product]``, the products in the order FORWARD, WEIGHT_GRAD, INPUT_GRAD: how
# the layer's ``blas.Gemm`` of that shape computes it. ``P_BLOCKS`` 1: one BLAS call as
# ``np.dot`` makes it; more: the Gemm's job (``workers.gemm_in_kernel``: ``P_KIND``, ``P_FN``
# from ``workers.gemm_block_function``), its blocks along ``P_AXIS`` bounded by the
# ``P_BLOCKS + 1`` words from ``P_CUTS``.
FORWARD, WEIGHT_GRAD, INPUT_GRAD = range(3)
P_BLOCKS, P_AXIS, P_KIND, P_FN, P_CUTS = range(5)
# ``plans[layer, UPDATE]``: the SGD update of the layer's weight, where the step makes it
# (``update``): ``P_BLOCKS`` chunks of the weight's elements bounded from ``P_CUTS``, each
# ``optim``'s SGD chunk cfunc (``P_FN``) on zoo's threads; 1: the SGD kernel itself.
UPDATE = 3


@njit
def _region(buf, offset, rows, cols):
    return buf[offset:offset + rows * cols].reshape((rows, cols))


@njit
def _activate(y, b, code, slope):
    if code == LEAKY_RELU:
        _bias_leaky_relu(y, b, y, slope)
    elif code == TANH:
        _bias_tanh(y, b, y, slope)
    elif code == SIGMOID:
        _bias_sigmoid(y, b, y, slope)
    else:
        _bias(y, b, y, slope)


@njit
def _activation_grad(g, y, dz, db, code, slope):
    if code == LEAKY_RELU:
        _grad_leaky_relu(g, y, dz, db, slope)
    elif code == TANH:
        _grad_tanh(g, y, dz, db, slope)
    else:
        _grad_sigmoid(g, y, dz, db, slope)


@njit
def _product(f, plan, a, ta, b, tb, c, scratch, box, ticket, clock):
    """``c = op(a) @ op(b)`` as ``plan`` says (see ``plans``), the way the layer computes it:
    one BLAS call, or the Gemm's blocks, a split inner dimension's parts added in block
    order (``blas._add_parts``)."""
    blocks = plan[P_BLOCKS]
    if blocks == 1:
        cblas.gemm_trans(f, a, ta, b, tb, c)
        return
    workers.gemm_in_kernel(box, ticket, clock, plan[P_KIND], plan[P_FN], f[1],
                           plan[P_CUTS:P_CUTS + blocks + 1], plan[P_AXIS], a, int(ta), b,
                           int(tb), c, scratch)
    if plan[P_AXIS] == 2:
        m, n = c.shape
        for part in range(blocks - 1):
            earlier = _region(scratch, part * m * n, m, n)
            for i in range(m):
                for j in range(n):
                    c[i, j] += earlier[i, j]


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
def fused_step(address, width, x, labels, target, loss_code, values, grads, layout, slopes,
               work, plans, scratch, box, ticket, clock, update, velocity, hyper, args):
    """Forward, loss and backward; the gradients land in ``grads``. Returns the mean loss, or
    -1.0 for a label out of range (the caller then raises, as the loss does).

    ``(address, width)`` is ``cblas.gemm_function(dtype)``, passed as two scalars: a tuple
    argument costs numba's dispatcher a microsecond per call. ``plans`` says how each
    product is computed, ``scratch`` holds a split inner dimension's parts, and ``box``,
    ``ticket``, ``clock`` are a ``workers.kernel_jobs`` scope's. With ``update``, each layer's
    weights and bias also take their SGD step once its gradients are made (``velocity``,
    ``hyper``: see ``_sgd_update``; ``args``: an int64 scratch of ``workers.CALL_ARGS``).
    Callers build every argument (``zoo.training.fused``): nothing is checked here."""
    f = (address, width)
    jobs = (scratch, box, ticket, clock)
    rows = x.shape[0]
    depth = layout.shape[0]
    # Forward: the first layer reads x, every other the previous layer's output in work.
    for li in range(depth):
        fan_in, units = layout[li, FAN_IN], layout[li, UNITS]
        w = _region(values, layout[li, WEIGHT], fan_in, units)
        y = _region(work, layout[li, OUT], rows, units)
        if li == 0:
            _product(f, plans[li, FORWARD], x, False, w, False, y, *jobs)
        else:
            _product(f, plans[li, FORWARD], _region(work, layout[li - 1, OUT], rows, fan_in),
                     False, w, False, y, *jobs)
        b_off = layout[li, BIAS]
        _activate(y, values[b_off:b_off + units], layout[li, ACTIVATION], slopes[li])
    last = depth - 1
    classes = layout[last, UNITS]
    out = _region(work, layout[last, OUT], rows, classes)
    grad = _region(work, layout[last, GRAD_OUT], rows, classes)
    if loss_code == SOFTMAX_CROSS_ENTROPY:
        value = _softmax_ce(out, labels, grad)
        if value < 0:
            return value
    else:
        value = _mse(out, target, grad)
    # Backward, last layer first, as Dense.backward: activation and bias gradient, weight
    # gradient, then the input gradient for every layer but the first (nothing reads it).
    for li in range(last, -1, -1):
        fan_in, units, code = layout[li, FAN_IN], layout[li, UNITS], layout[li, ACTIVATION]
        g = _region(work, layout[li, GRAD_OUT], rows, units)
        b_off = layout[li, BIAS]
        db = grads[b_off:b_off + units]
        if code == LINEAR:
            _bias_grad(g, db)
            dz = g
        else:
            dz = _region(work, layout[li, GRAD_PRE], rows, units)
            _activation_grad(g, _region(work, layout[li, OUT], rows, units), dz, db, code,
                             slopes[li])
        dw = _region(grads, layout[li, WEIGHT], fan_in, units)
        if li == 0:
            _product(f, plans[li, WEIGHT_GRAD], x, True, dz, False, dw, *jobs)
        else:
            _product(f, plans[li, WEIGHT_GRAD], _region(work, layout[li - 1, OUT], rows, fan_in),
                     True, dz, False, dw, *jobs)
            _product(f, plans[li, INPUT_GRAD], dz, False,
                     _region(values, layout[li, WEIGHT], fan_in, units), True,
                     _region(work, layout[li - 1, GRAD_OUT], rows, fan_in), *jobs)
        if update:  # nothing reads this layer's parameters again in this step
            _sgd_update(f, plans[li, UPDATE], values, grads, velocity, hyper, args,
                        layout[li, WEIGHT], fan_in * units, box, ticket, clock)
            _sgd(values, grads, velocity, hyper, b_off, b_off + units)
    return value

