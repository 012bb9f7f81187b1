"""When a training step's forward, loss and backward run as one kernel call, and how.

A plain stack of ``Dense`` layers (a ``Sequential`` of nothing else, with biases, activations
none/relu/leaky_relu/tanh/sigmoid) under ``SoftmaxCrossEntropy`` or ``MSE`` runs through
``zoo.kernels.dense_stack``, which computes exactly what the layers would (the same products,
blocks and kernels, in the same order), in one call instead of a dozen or two: the Python of
the layer calls costs more than their arithmetic on small MLPs, and a tenth of a two-thread
step on 784-wide ones. Under plain SGD the same call makes the update too (``DenseStackStep``;
the trainer decides, ``Trainer._fused_sgd``); other optimizers and clipping run as usual
after it. Everything else, and any batch this path does not take, goes through the layers.

The choice depends on the model's structure and the batch's sizes alone, never on the machine
or the load, so it never changes which bits a run produces. It needs numpy's BLAS to be callable
from kernels (``cblas.gemm_function``: OpenBLAS). A product the layer's ``kernels.blas.Gemm``
cuts into blocks is cut the same way here, and its blocks shared by zoo's workers
(``workers.kernel_jobs``) on as many threads as the layers would use.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from zoo.kernels import blas, cblas, dense_rows, optim, threads, workers
from zoo.kernels import dense_stack as ds
from zoo.layers.dense import Dense
from zoo.losses import MSE, SoftmaxCrossEntropy
from zoo.model import Sequential
from zoo.training.flat import MIN_OWNED

# Multiply-adds each of a layer's weight and input gradients needs at least for the two to
# run as one job (``ds.PAIR``): about 5 us on one core, where the hand-off costs one or two.
PAIR_WORK = 500_000
_ALIGN = 16  # elements: each work array starts on a 64-byte boundary (float32)
_LABELS = np.zeros(1, np.int64)  # the argument a loss does not read


def dense_stack_step(model, loss, values: np.ndarray, grads: np.ndarray):
    """A ``DenseStackStep`` for this model and loss, or None where the layers must run."""
    if type(model) is not Sequential or not model.layers or len(model.input_shape) != 1:
        return None
    layers = [layer for layer in model.layers if type(layer) is Dense and layer.use_bias
              and layer.activation in ds.ACTIVATION_CODES]
    if len(layers) != len(model.layers):
        return None
    if type(loss) is SoftmaxCrossEntropy:
        loss_code = ds.SOFTMAX_CROSS_ENTROPY
    elif type(loss) is MSE:
        loss_code = ds.MEAN_SQUARED_ERROR
    else:
        return None
    dtype = values.dtype
    if dtype not in (np.float32, np.float64) or cblas.gemm_function(dtype)[0] == 0:
        return None
    # np.dot computes a product with a dimension of 1 as a matrix-vector product (gemv):
    # with another BLAS routine the bits could differ, so such stacks stay with the layers.
    if min(min(layer.weight.value.shape) for layer in layers) < 2:
        return None
    offsets = []
    for layer in layers:
        where = [_offset(values, layer.weight.value), _offset(values, layer.bias.value),
                 _offset(grads, layer.weight.grad), _offset(grads, layer.bias.grad)]
        if None in where or where[0] != where[2] or where[1] != where[3]:
            return None
        offsets.append(where[:2])
    return DenseStackStep(layers, loss_code, values, grads, offsets)


def _offset(buffer: np.ndarray, view: np.ndarray) -> int | None:
    """Where the C-contiguous ``view`` starts in the flat ``buffer``, or None if it is not
    inside it."""
    if view.base is not buffer or not view.flags.c_contiguous or view.dtype != buffer.dtype:
        return None
    start = view.__array_interface__["data"][0] - buffer.__array_interface__["data"][0]
    return start // buffer.itemsize


class Layout(NamedTuple):
    """A ``DenseStackStep``'s arrays for one batch size."""

    frame: np.ndarray  # ``ds.fused_step``'s unchanging arguments (``ds.frame_of``)
    outputs: np.ndarray  # the last layer's output, a view of ``work``
    # What ``frame`` points into, kept alive here (the other arrays are the step's own).
    layout: np.ndarray
    work: np.ndarray
    plans: np.ndarray
    scratch: np.ndarray | None  # a cut inner dimension's parts; None: no product has blocks
    blocked: bool  # whether anything but the update has blocks (products, elementwise, pairs)
    chunked: bool  # whether an update has chunks
    calls_blas: bool  # whether a product is BLAS's (float64, or float32 too large for sgemm)


class DenseStackStep:
    """``step(xb, tb, sgd)``: ``(outputs, loss, updated)`` of one fused forward, loss and
    backward, or None when this batch must go through the layers (its shape, dtype or layout
    differ, or the weights were replaced since).

    With ``sgd`` (``optimizers.SGD.fused_update``'s tuple for this very buffer) the kernel
    also makes the update, each layer's as soon as its gradients are made, while they are
    still in the cache of the core that made them (``updated`` is then True): on the mlp
    workload the update was about a tenth of a two-thread step. Only where the layers'
    parameters are the whole buffer, so the update covers what ``SGD.step`` would.
    """

    def __init__(self, layers, loss_code, values, grads, offsets):
        self.values, self.grads = values, grads
        self.loss_code = loss_code
        self.blas = cblas.gemm_function(values.dtype)
        self.dtype = values.dtype
        self.fan_in = layers[0].weight.value.shape[0]
        self.classes = layers[-1].units
        self.sizes = [layer.weight.value.shape for layer in layers]
        self.slopes = np.array([0.0 if layer.activation == "relu" else layer.negative_slope
                                for layer in layers])
        self.codes = [ds.ACTIVATION_CODES[layer.activation] for layer in layers]
        self.offsets = offsets
        # The arrays the layout was made for: a layer whose parameter is rebound (a restore
        # that assigns new arrays) sends steps back through the layers.
        self.parameters = [(p, p.value, p.grad) for layer in layers
                           for p in (layer.weight, layer.bias)]
        self.target = np.zeros((1, 1), values.dtype)  # MSE's target for a classifier: unread
        self.work: dict = {}  # rows -> ``_layout(rows)``, or None: not fused
        self._scratch = np.zeros(1, values.dtype)  # the scratch argument where none is needed
        self._alone = workers.kernel_jobs(1)  # never entered: the arguments of no jobs
        self._hyper = np.zeros(4)  # SGD's lr, momentum, nesterov, weight decay, each step
        self._last_hyper: tuple = ()  # what _hyper holds
        self._sgd_chunk = 0  # the SGD chunk cfunc's address once compiled (first update)
        self._args = np.zeros(workers.CALL_ARGS, np.int64)  # a chunked update's description
        sizes = sum(layer.weight.value.size + layer.bias.value.size for layer in layers)
        self.whole = sizes == values.size  # the layers' parameters are the whole buffer

    def step(self, xb, tb, sgd=None):
        if not (isinstance(xb, np.ndarray) and xb.dtype == self.dtype and xb.ndim == 2
                and xb.shape[1] == self.fan_in and xb.flags.c_contiguous):
            return None
        rows = xb.shape[0]
        if self.loss_code == ds.SOFTMAX_CROSS_ENTROPY:
            if not (isinstance(tb, np.ndarray) and tb.dtype == np.int64
                    and tb.shape == (rows,) and tb.flags.c_contiguous):
                return None
            labels, target = tb, self.target
        else:
            if not (isinstance(tb, np.ndarray) and tb.dtype == self.dtype
                    and tb.shape == (rows, self.classes) and tb.flags.c_contiguous):
                return None
            labels, target = _LABELS, tb
        for p, value, grad in self.parameters:
            if p.value is not value or p.grad is not grad:
                return None
        plan = self.work.get(rows, False)
        if plan is False:
            plan = self.work[rows] = self._layout(rows)
        if plan is None:
            return None
        frame, outputs, *_, blocked, chunked, calls_blas = plan
        update, velocity = sgd is not None and self.whole, self.values
        if update:
            velocity, hyper = sgd[0], sgd[1:]
            if hyper != self._last_hyper:  # changed: lr by a schedule, say
                self._hyper[:] = self._last_hyper = hyper
            velocity = self.values if velocity is None else velocity  # unread without momentum
            if not self._sgd_chunk:  # the chunk cfunc, compiled on first use
                self._sgd_chunk = optim.block_address("sgd", self.dtype)
                for laid_out in self.work.values():
                    if laid_out is not None:
                        laid_out.plans[:, ds.UPDATE, ds.P_FN] = self._sgd_chunk
        shared = blocked or (update and chunked)  # product or row blocks, update chunks
        if calls_blas or (shared and threads.threads() > 1):
            # BLAS held to one thread, and on more than one thread the workers awake between
            # the kernel's jobs, as around any training step (``threads.step_scope``)
            with threads.step_scope():
                value = self._run(frame, xb, labels, target, velocity, update, shared)
        else:  # sgemm's products on one thread: nothing to hold (1 us of mlp-small's 16)
            value = self._run(frame, xb, labels, target, velocity, update, shared)
        if value < 0:
            return None  # a label out of range: the loss raises it, through the layers
        return outputs, value, update

    def _run(self, frame, xb, labels, target, velocity, update, shared):
        """``ds.fused_step``; where it has anything to share, with the pool held till it
        returns and its jobs on the trainer's threads."""
        if not shared:  # no pool to hold
            jobs = self._alone
            return ds.fused_step(frame, xb, labels, target, velocity, jobs.box, jobs.ticket,
                                 jobs.clock, update)
        with workers.kernel_jobs(threads.threads()) as jobs:
            return ds.fused_step(frame, xb, labels, target, velocity, jobs.box, jobs.ticket,
                                 jobs.clock, update)

    def _layout(self, rows: int):
        """The ``Layout`` for batches of ``rows`` examples, or None if they must go through
        the layers (a single example: np.dot's matrix-vector path)."""
        if rows < 2:
            return None
        plans, scratch = self._plans(rows)
        layout = np.zeros((len(self.sizes), 8), np.int64)
        used = 0

        def take(count):
            nonlocal used
            start = used
            used += -(-count // _ALIGN) * _ALIGN
            return start

        for i, ((fan_in, units), code, (w, b)) in enumerate(zip(self.sizes, self.codes,
                                                                self.offsets)):
            layout[i, ds.FAN_IN], layout[i, ds.UNITS] = fan_in, units
            layout[i, ds.WEIGHT], layout[i, ds.BIAS], layout[i, ds.ACTIVATION] = w, b, code
            layout[i, ds.OUT] = take(rows * units)
            layout[i, ds.GRAD_PRE] = take(rows * units) if code != ds.LINEAR else 0
            layout[i, ds.GRAD_OUT] = take(rows * units)
        work = np.zeros(used, self.dtype)
        start = layout[-1, ds.OUT]
        outputs = work[start:start + rows * self.classes].reshape(rows, self.classes)
        jobs = [ds.FORWARD, ds.WEIGHT_GRAD, ds.INPUT_GRAD, ds.ROWS, ds.PAIR, ds.SUMS]
        blocked = bool((plans[:, jobs, ds.P_BLOCKS] > 1).any())
        chunked = bool((plans[:, ds.UPDATE, ds.P_BLOCKS] > 1).any())
        products = [ds.FORWARD, ds.WEIGHT_GRAD, ds.INPUT_GRAD]
        calls_blas = bool((plans[:, products, ds.P_KIND] != workers.KIND_TILED).any())
        frame = ds.frame_of(self.blas, self.loss_code, self.values, self.grads, layout,
                            self.slopes, work, plans,
                            self._scratch if scratch is None else scratch, self._hyper,
                            self._args)
        return Layout(frame, outputs, layout, work, plans, scratch, blocked, chunked,
                      calls_blas)

    def _plans(self, rows: int):
        """``(plans, scratch)``: how each product is computed (``ds.P_*``), as the layer's
        ``blas.Gemm`` of its shape would, and the scratch for the parts of a split inner
        dimension (None where no product has blocks)."""
        width = ds.P_CUTS + max(blas.MAX_BLOCKS, dense_rows.MAX_ROW_BLOCKS) + 1
        plans = np.zeros((len(self.sizes), 7, width), np.int64)
        plans[:, :, ds.P_BLOCKS] = 1
        plans[:, ds.UPDATE, ds.P_FN] = self._sgd_chunk  # 0 until the first update
        for li, (fan_in, units) in enumerate(self.sizes):
            # The layer's elementwise work in blocks of rows, where it is large enough; then
            # under MSE the last layer's loss beside its bias gradient.
            cuts = dense_rows.row_cuts(rows, units)
            if len(cuts) > 2:
                plan = plans[li, ds.ROWS]
                plan[ds.P_BLOCKS], plan[ds.P_FN] = len(cuts) - 1, \
                    dense_rows.block_address(self.dtype)
                plan[ds.P_CUTS:ds.P_CUTS + len(cuts)] = cuts
                if li == len(self.sizes) - 1 and self.loss_code == ds.MEAN_SQUARED_ERROR:
                    sums = plans[li, ds.SUMS]
                    sums[ds.P_BLOCKS], sums[ds.P_FN] = 2, plan[ds.P_FN]
                    sums[ds.P_CUTS:ds.P_CUTS + 3] = 0, 1, 2
            # A large weight's update in two chunks at the rows its products cut
            # (``flat.owner_chunks``): each thread updates the rows of the gradient it made.
            if fan_in * units >= MIN_OWNED:
                plan = plans[li, ds.UPDATE]
                plan[ds.P_BLOCKS] = 2
                plan[ds.P_CUTS:ds.P_CUTS + 3] = 0, blas.cut_in_two(fan_in) * units, \
                    fan_in * units
        parts, blocked = 0, False
        for li, (fan_in, units) in enumerate(self.sizes):
            gemms = blas.layer_gemms(rows, fan_in, units, self.dtype)
            # The kind of each product (``workers.gemm_block_function``): one sgemm call or
            # sgemm blocks where the layer has a Gemm for it, else one BLAS call.
            kinds = [workers.gemm_block_function(self.dtype, gemm is not None and gemm.tiled)
                     for gemm in gemms]
            # Gradients too small to cut, but each worth a core: one job of the two calls
            # (one kind a job).
            uncut = all(gemm is None or gemm.blocks == 1 for gemm in gemms[1:])
            if li and uncut and kinds[1][:2] == kinds[2][:2] \
                    and rows * fan_in * units >= PAIR_WORK:
                plan = plans[li, ds.PAIR]
                plan[ds.P_BLOCKS], plan[ds.P_KIND], plan[ds.P_FN] = 2, *kinds[1][:2]
                plan[ds.P_CUTS:ds.P_CUTS + 3] = 0, 1, 2
            for product, gemm, (kind, fn, _) in zip(
                    (ds.FORWARD, ds.WEIGHT_GRAD, ds.INPUT_GRAD), gemms, kinds):
                plan = plans[li, product]
                plan[ds.P_KIND], plan[ds.P_FN] = kind, fn
                if gemm is None or gemm.blocks == 1:
                    continue
                blocked = True
                plan[ds.P_BLOCKS], plan[ds.P_AXIS] = gemm.blocks, gemm.axis
                plan[ds.P_CUTS:ds.P_CUTS + gemm.blocks + 1] = gemm.cuts
                if gemm.axis == 2:
                    m, _, n = gemm.shape
                    parts = max(parts, (gemm.blocks - 1) * m * n)
        return plans, (np.zeros(max(parts, 1), self.dtype) if blocked else None)
