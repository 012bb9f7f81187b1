"""A small pool of persistent threads that run the blocks of one job with the calling thread.

A job is ``blocks`` pieces of work whose outputs do not overlap. The caller and up to
``threads - 1`` workers take blocks not yet taken until none is left (each its own first, see
"Each thread its own blocks" below), so which thread runs which block is decided at run time,
and is all the thread count decides: the caller cut the work from the sizes alone, so the
result is the same on one thread and on many (``zoo.kernels.threads`` has the whole policy).
Three kinds of job:

- ``run_gemm``: the blocks of a ``zoo.kernels.blas.Gemm``, each one call of zoo's float32
  product (``zoo.kernels.sgemm``) or of numpy's own single-threaded ``dgemm``
  (``zoo.kernels.cblas``). Workers compute them inside a
  numba kernel, without the GIL and without returning to Python.
- ``run_call``: block ``i`` is a numba ``cfunc`` called by its address with the job's
  description, also without the GIL (``zoo.kernels.optim``'s updates in chunks).
- ``run_blocks(fn, blocks, ...)``: any Python function ``fn(i)``; a worker takes the GIL to
  call it (zoo's blocks spend their time in numba kernels or BLAS, which release it), which
  costs a GIL hand-off or two per job.

Workers end at interpreter exit (``_stop_workers``), before the memory a spinning worker
reads is freed.

**The hand-off.** Posting a job is one atomic store into a shared int64 array (the mailbox).
A worker that has just finished a job does not go to sleep at once: for ``SPIN_NS`` (200 us)
it watches the mailbox, without the GIL, in a numba loop with the CPU's spin-wait hint, then
it sleeps on a lock until a caller wakes it. A worker that spins starts its block a
microsecond after the job is posted, against about 55 us (median; 63 us at p90) to wake a
sleeping thread on a 2-core KVM guest, which was most of what a second core could win on a
180 us block. Some products of a training step come 100-300 us apart, so a step keeps the
workers spinning until it ends (``awake``). The spin is bounded, so an idle zoo does not
keep a core busy; a caller whose own blocks are done waits for the others' the same way
(spin, then short naps).

**Nothing waits for a thread that has no block.** A worker that wakes late, after the caller
and the others took every block, finds nothing left; a block is taken by a compare-and-swap
on one word that holds the job's number and its next block, so a late worker can never take
a block of a job that has ended or mix two jobs. The caller waits only for blocks that were
taken, which is what keeps a descheduled worker on a busy core from stalling a step that did
not need it.

**Each thread its own blocks.** Of a native job's P participants, the caller is 0 and worker
w is w + 1; participant p takes blocks p, p + P, p + 2P ... first, and only then any block
still left (a late or descheduled worker's blocks are taken by whoever is free). The caller
posts the job with its block 0 already taken. So on two threads the caller computes the even
blocks and the worker, there within a microsecond, the odd ones, job after job. The blocks of
a layer's products cut its weight the same way (``zoo.kernels.blas.partition``), and a
trainer's optimizer update follows those cuts (``zoo.kernels.optim.chunk_plans``), so each
thread keeps reading and writing the same part of the weight, of its gradient and of its
optimizer state, and finds it in its own core's L2 cache instead of fetching it from the
other's. Only the speed depends on who runs a block, never the bits.
"""

from __future__ import annotations

import atexit
import itertools
import os
import threading

import numpy as np
from llvmlite import ir
from numba import carray, cfunc, types
from numba.extending import intrinsic

from zoo.kernels import atomics, cblas, fpenv, sgemm
from zoo.kernels._jit import njit

# How long (ns) a worker keeps watching for the next job after its last one before it sleeps.
SPIN_NS = 200_000
# How long (ns) a caller whose own blocks are done spins for the others' before it naps, and
# how long each nap is: a worker on a core of its own ends within a few microseconds of the
# caller; one that waits for a core (a busy machine) is better waited for asleep, leaving the
# caller's core to it.
WAIT_SPIN_NS = 100_000
NAP_NS = 50_000
# Most workers (the mailbox has a line for each); thread counts above this use this many.
MAX_WORKERS = 63

# The mailbox: an int64 array; each word a thread writes often on a cache line of its own.
_TAKE = 0  # the current job, one word: see _word()
_DONE = 8  # blocks of the current native job finished
_DESC = 16  # the current native job (below), 32 words
_KEEP_AWAKE = 48  # how many ``awake`` scopes are open: workers do not sleep while > 0
_STATE = 56  # worker w's state at _STATE + 8 * w
_SIZE = _STATE + 8 * MAX_WORKERS
AWAKE, ASLEEP = 0, 1

# A native job's description, at _DESC (32 words). Every kind: what it is, the poster's float
# mode, a function's address, and the block bounds from D_CUTS.
D_KIND, D_MODE, D_FN = 0, 1, 2
KIND_GEMM, KIND_CALL, KIND_TILED = 0, 1, 2
# A gemm (KIND_GEMM, D_FN BLAS's GEMM; or KIND_TILED, D_FN sgemm_block_address()): every
# block is C[rows, cols] = op(A) @ op(B), all row-major, along D_AXIS (0: rows, 1: columns);
# or, along 2 (the inner dimension), block i's part of the sum over k: block 0 into C, block
# i > 0 into the (M, N) array i - 1 at D_SCRATCH, for the caller to add in order. Along
# AXIS_LIST the blocks are independent whole products (a layer's weight and input gradients):
# block i is the one described by the GEMM_WORDS words at D_SCRATCH + i * GEMM_WORDS words,
# in the order A, B, C, LDA, LDB, LDC, TA, TB, M, K, N.
D_DTYPE, D_A, D_B, D_C, D_LDA, D_LDB, D_LDC, D_TA, D_TB, D_M, D_K, D_N, D_AXIS = range(3, 16)
AXIS_LIST = 3
GEMM_WORDS = 11
# A call (KIND_CALL): block i is ``fn(address of the description, i)``, a numba cfunc that
# finds its own arguments in the words from D_ARGS (``run_call``).
D_ARGS = 3
D_CUTS = 16
DESC_WORDS = 32
D_SCRATCH = DESC_WORDS - 1  # a gemm split along k (D_AXIS 2): where blocks 1... write
CALL_ARGS = D_CUTS - D_ARGS
MAX_NATIVE_BLOCKS = DESC_WORDS - D_CUTS - 2  # 14: fits the job word's 16 bits
MAX_GEMM_BLOCKS = MAX_NATIVE_BLOCKS

# The job word: seq << 32 | helpers << 24 | python << 23 | blocks << 16 | the taken blocks'
# bits (bit i: block i is taken; a native job has at most 16 blocks)
_SEQ_MASK = 0x7FFFFFFF
_TAKEN_MASK = 0xFFFF


def _word(seq: int, helpers: int, python: bool, blocks: int) -> int:
    return ((seq & _SEQ_MASK) << 32) | (helpers << 24) | (int(python) << 23) | (blocks << 16)


# -- the float mode, inside kernels ----------------------------------------------------------
@intrinsic
def _float_mode(typingctx):
    """This thread's floating-point mode as ``zoo.kernels.fpenv.current_mode`` reads it."""
    def codegen(context, builder, signature, args):
        if not fpenv.SUPPORTED:
            return ir.Constant(ir.IntType(64), 0)
        return builder.zext(builder.and_(fpenv.read_csr(builder), ir.Constant(
            ir.IntType(32), ~fpenv.STATUS_BITS & 0xFFFFFFFF)), ir.IntType(64))

    return types.int64(), codegen


@intrinsic
def _set_float_mode(typingctx, mode):
    """Set this thread's mode to ``mode`` (from ``_float_mode``), keeping its status flags."""
    def codegen(context, builder, signature, args):
        if fpenv.SUPPORTED:
            i32 = ir.IntType(32)
            status = builder.and_(fpenv.read_csr(builder), ir.Constant(i32, fpenv.STATUS_BITS))
            fpenv.write_csr(builder, builder.or_(builder.trunc(args[0], i32), status))
        return context.get_dummy_value()

    return types.void(types.int64), codegen


# -- gemm blocks, without the GIL ------------------------------------------------------------
@njit
def _block_operands(desc, i):
    """``(ta, tb, a, lda, b, ldb, c, ldc, m, n, k)`` of block ``i`` of the gemm job ``desc``:
    the transposes, addresses, row strides and sizes of its product."""
    if desc[D_AXIS] == AXIS_LIST:
        d = carray(atomics.pointer(desc[D_SCRATCH] + i * GEMM_WORDS * 8, np.int64(0)),
                   GEMM_WORDS)
        return d[6], d[7], d[0], d[3], d[1], d[4], d[2], d[5], d[8], d[10], d[9]
    lo, hi = desc[D_CUTS + i], desc[D_CUTS + i + 1]
    size = 4 if desc[D_DTYPE] == 0 else 8
    a, b, c = desc[D_A], desc[D_B], desc[D_C]
    lda, ldb, ldc = desc[D_LDA], desc[D_LDB], desc[D_LDC]
    m, k, n = desc[D_M], desc[D_K], desc[D_N]
    if desc[D_AXIS] == 1:  # columns lo:hi of C and B
        b += lo * size * (ldb if desc[D_TB] else 1)
        c += lo * size
        n = hi - lo
    elif desc[D_AXIS] == 0:  # rows lo:hi of C and A
        a += lo * size * (1 if desc[D_TA] else lda)
        c += lo * size * ldc
        m = hi - lo
    else:  # inner lo:hi: block 0 into C, block i > 0 into its own (m, n) part of the scratch
        a += lo * size * (lda if desc[D_TA] else 1)
        b += lo * size * (1 if desc[D_TB] else ldb)
        k = hi - lo
        if i:
            c = desc[D_SCRATCH] + (i - 1) * m * n * size
            ldc = n
    return desc[D_TA], desc[D_TB], a, lda, b, ldb, c, ldc, m, n, k


@njit
def describe_listed(words, a, ta, b, tb, c):
    """``c = op(a) @ op(b)`` as an AXIS_LIST job's ``GEMM_WORDS`` words for one block
    (``a``, ``b``, ``c`` C-contiguous as stored, ``op`` a transpose where ``ta``/``tb``)."""
    words[0], words[1], words[2] = a.ctypes.data, b.ctypes.data, c.ctypes.data
    words[3], words[4], words[5] = a.shape[1], b.shape[1], c.shape[1]
    words[6], words[7] = ta, tb
    words[8], words[9] = c.shape[0], a.shape[0] if ta else a.shape[1]
    words[10] = c.shape[1]


@njit
def _gemm_block(desc, i, width):
    """Block ``i`` of a BLAS gemm job: one call of BLAS's GEMM (``width``: a sample of BLAS's
    integer type)."""
    ta, tb, a, lda, b, ldb, c, ldc, m, n, k = _block_operands(desc, i)
    cblas.gemm_at(desc[D_FN], width, ta, tb, m, n, k, a, lda, b, ldb, c, ldc,
                  desc[D_DTYPE] != 0)


def _sgemm_job_block(desc, i):
    """Block ``i`` of a float32 gemm job, one ``sgemm`` product: the body of
    ``sgemm_block_address``'s cfunc (``desc``: a pointer to the description)."""
    ta, tb, a, lda, b, ldb, c, ldc, m, n, k = _block_operands(carray(desc, DESC_WORDS), i)
    sgemm.gemm_at(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, False)


_SGEMM_BLOCK: list = []  # the cfunc, made on first use


def sgemm_block_address() -> int:
    """The address of a cfunc computing block ``i`` of a float32 gemm job: workers call it by
    its address (``atomics.call_block``), so ``sgemm``'s large code is compiled once, not
    again into every kernel that can run a block."""
    if not _SGEMM_BLOCK:
        _SGEMM_BLOCK.append(cfunc(types.void(types.CPointer(types.int64), types.int64),
                                  cache=True)(_sgemm_job_block))
    return _SGEMM_BLOCK[0].address


@njit
def _run_block(desc, i, width):
    if desc[D_KIND] == KIND_GEMM:
        _gemm_block(desc, i, width)
    else:  # a call job, or a tiled gemm job (D_FN: sgemm_block_address())
        atomics.call_block(desc[D_FN], desc.ctypes.data, i)


@njit
def _next_block(word, me):
    """The block thread ``me`` (0: the caller, w + 1: worker w) takes next in the job ``word``:
    its own first (blocks me, me + P, me + 2P ... of P participants), then any other not yet
    taken; -1 when every block is taken (or the job is a Python one)."""
    blocks = (word >> 16) & 127
    taken = word & _TAKEN_MASK
    if (word >> 23) & 1 or taken == (1 << blocks) - 1:
        return -1
    participants = ((word >> 24) & 255) + 1
    for i in range(me, blocks, participants):
        if not (taken >> i) & 1:
            return i
    for i in range(blocks):
        if not (taken >> i) & 1:
            return i
    return -1


@njit
def _take_blocks(box, width, mode, me):
    """Take and compute blocks of the current native job until none is left (``me``: this
    thread's place, see ``_next_block``); returns this thread's float mode after (a worker
    adopts the poster's)."""
    desc = box[_DESC:_DESC + DESC_WORDS]
    while True:
        word = atomics.load(box, _TAKE)
        i = _next_block(word, me)
        if i < 0:
            return mode
        if atomics.compare_and_swap(box, _TAKE, word, word | (1 << i)):
            # Taken: the job cannot end before this block does, so its description holds.
            if desc[D_MODE] != mode:
                mode = desc[D_MODE]
                _set_float_mode(mode)
            _run_block(desc, i, width)
            atomics.add(box, _DONE, 1)


@njit
def _serve(box, w, width, clock, spin_ns, python_seen):
    """Worker ``w``'s loop without the GIL: computes native jobs; returns the number of a Python
    job to run (not ``python_seen``), or -1 to sleep: after ``spin_ns`` without a job, once
    ASLEEP (or claimed by a caller that releases its lock: the sleep then ends at once)."""
    timespec = np.empty(2, np.int64)
    timed = clock[0] != 0
    deadline = atomics.now_ns(clock, timespec) + spin_ns if timed else 0
    mode = _float_mode()
    spins = 0
    while True:
        word = atomics.load(box, _TAKE)
        if _for_worker(word, w, python_seen):
            if (word >> 23) & 1:
                return word >> 32
            mode = _take_blocks(box, width, mode, w + 1)
            if timed:
                deadline = atomics.now_ns(clock, timespec) + spin_ns
            continue
        atomics.pause()
        spins += 1
        if spins & 31 == 0 and (not timed or atomics.now_ns(clock, timespec) > deadline):
            if atomics.load(box, _KEEP_AWAKE) > 0:  # a training step runs: its next job is near
                deadline = atomics.now_ns(clock, timespec) + spin_ns if timed else 0
                continue
            state = _STATE + 8 * w
            atomics.compare_and_swap(box, state, AWAKE, ASLEEP)
            # A job posted just before ASLEEP was visible to its caller: serve it after all,
            # unless that caller claimed this worker first (its release then wakes it).
            word = atomics.load(box, _TAKE)
            if not _for_worker(word, w, python_seen) or \
                    not atomics.compare_and_swap(box, state, ASLEEP, AWAKE):
                return -1


@njit
def _for_worker(word, w, python_seen):
    """Whether the job ``word`` has something for worker ``w``."""
    if w >= (word >> 24) & 255:
        return False
    if (word >> 23) & 1:
        return word >> 32 != python_seen
    return _next_block(word, w + 1) >= 0


@njit
def _wait_done(box, blocks, clock, spin_ns, nap_ns):
    """Until ``blocks`` blocks of the current native job are done: spin, then nap."""
    timespec = np.empty(2, np.int64)
    sleeper = np.empty(2, np.int64)
    timed = clock[0] != 0
    deadline = atomics.now_ns(clock, timespec) + spin_ns if timed else 0
    spins = 0
    while atomics.load(box, _DONE) < blocks:
        spins += 1
        if timed and spins & 31 == 0 and atomics.now_ns(clock, timespec) > deadline:
            atomics.sleep_ns(clock, sleeper, nap_ns)
        else:
            atomics.pause()


@njit
def _claim_asleep(box, helpers):
    """Claim AWAKE the first ``helpers`` workers that are asleep; returns their mask (for
    ``_Pool.wake``)."""
    claimed = 0
    for w in range(helpers):
        if atomics.compare_and_swap(box, _STATE + 8 * w, ASLEEP, AWAKE):
            claimed |= 1 << w
    return claimed


@njit
def _post(box, word, helpers):
    """Publish the job ``word``; returns the mask of the first ``helpers`` workers that were
    ASLEEP, now claimed AWAKE: the caller releases their locks."""
    atomics.store(box, _TAKE, word)
    return _claim_asleep(box, helpers)


@njit
def _describe(desc, kind, fn, mode, cuts, axis, a, ta, b, tb, c, scratch):
    """Write the gemm job ``c = op(a) @ op(b)`` in the blocks ``cuts`` along ``axis`` into
    ``desc`` (op: transposed where ``ta``/``tb``)."""
    desc[D_KIND], desc[D_MODE], desc[D_FN] = kind, mode, fn
    desc[D_DTYPE] = 0 if c.itemsize == 4 else 1
    desc[D_A], desc[D_B], desc[D_C] = a.ctypes.data, b.ctypes.data, c.ctypes.data
    desc[D_LDA], desc[D_LDB], desc[D_LDC] = a.shape[1], b.shape[1], c.shape[1]
    desc[D_TA], desc[D_TB] = ta, tb
    desc[D_M], desc[D_K], desc[D_N] = c.shape[0], (a.shape[0] if ta else a.shape[1]), c.shape[1]
    desc[D_AXIS] = axis
    desc[D_SCRATCH] = scratch.ctypes.data
    for j in range(cuts.size):
        desc[D_CUTS + j] = cuts[j]


@njit
def _describe_call(desc, fn, mode, args, cuts):
    desc[D_KIND], desc[D_MODE], desc[D_FN] = KIND_CALL, mode, fn
    for j in range(args.size):
        desc[D_ARGS + j] = args[j]
    for j in range(cuts.size):
        desc[D_CUTS + j] = cuts[j]


@njit
def _gemm_post(box, word, helpers, kind, fn, mode, cuts, axis, a, ta, b, tb, c, scratch):
    """Describe the gemm job in the mailbox and post it (``_post``)."""
    _describe(box[_DESC:_DESC + DESC_WORDS], kind, fn, mode, cuts, axis, a, ta, b, tb, c,
              scratch)
    box[_DONE] = 0
    return _post(box, word, helpers)  # its store publishes the description


@njit
def _call_post(box, word, helpers, fn, mode, args, cuts):
    """Describe the call job in the mailbox and post it (``_post``)."""
    _describe_call(box[_DESC:_DESC + DESC_WORDS], fn, mode, args, cuts)
    box[_DONE] = 0
    return _post(box, word, helpers)


@njit
def _work_and_wait(box, width, blocks, clock):
    """The caller's part of the posted native job: block 0 (posted as taken), then blocks
    until none is left, then the wait."""
    _run_block(box[_DESC:_DESC + DESC_WORDS], 0, width)
    atomics.add(box, _DONE, 1)
    _take_blocks(box, width, _float_mode(), 0)
    _wait_done(box, blocks, clock, WAIT_SPIN_NS, NAP_NS)


@njit
def _gemm_alone(width, kind, fn, mode, cuts, axis, a, ta, b, tb, c, scratch):
    """The gemm job computed by the calling thread alone: the same calls, in turn."""
    desc = np.empty(DESC_WORDS, np.int64)
    _describe(desc, kind, fn, mode, cuts, axis, a, ta, b, tb, c, scratch)
    for i in range(cuts.size - 1):
        _run_block(desc, i, width)


@njit
def _call_alone(fn, mode, args, cuts):
    """The call job computed by the calling thread alone: the same calls, in turn."""
    desc = np.empty(DESC_WORDS, np.int64)
    _describe_call(desc, fn, mode, args, cuts)
    for i in range(cuts.size - 1):
        atomics.call_block(fn, desc.ctypes.data, i)


# -- Python jobs -----------------------------------------------------------------------------
class _Job:
    """One call of ``run_blocks``: the blocks not yet taken, and a lock released when all end."""

    def __init__(self, fn, blocks: int, wrap):
        self.fn = fn
        self.blocks = blocks
        self.wrap = wrap  # a context manager factory each participant runs its blocks in
        self.take = itertools.count().__next__  # atomic under the GIL
        self.left = blocks
        self.count_lock = threading.Lock()
        self.finished = threading.Lock()
        self.finished.acquire()
        self.error: BaseException | None = None

    def work(self, own: bool = False) -> None:
        """Take and run blocks until none is left (``own``: the posting thread, which needs
        no ``wrap``)."""
        i = self.take()
        if i >= self.blocks:
            return
        with _Unwrapped() if own else self.wrap():
            while i < self.blocks:
                try:
                    self.fn(i)
                except BaseException as exc:  # noqa: BLE001 (the caller raises it)
                    self.error = exc
                with self.count_lock:
                    self.left -= 1
                    if self.left == 0:
                        self.finished.release()
                i = self.take()


class _Unwrapped:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# -- the pool --------------------------------------------------------------------------------
class _Pool:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.box = np.zeros(_SIZE, np.int64)
        self.clock = atomics.clock_functions()
        self.width = cblas.gemm_function(np.float32)[1]  # BLAS's integer type, as a sample
        self.wakers: list[threading.Lock] = []  # worker w sleeps on wakers[w]
        self.workers: list[threading.Thread] = []
        self.post = threading.Lock()  # one job at a time: the mailbox has room for one
        self.seq = 0
        self.job: _Job | None = None  # the Python job last posted
        self.stopping = False  # set at exit: workers end their threads

    def grow(self, workers: int) -> None:
        while len(self.workers) < workers:
            w = len(self.workers)
            waker = threading.Lock()
            waker.acquire()
            self.wakers.append(waker)
            thread = threading.Thread(target=_work, args=(self, w), daemon=True,
                                      name=f"zoo-worker-{w + 1}")
            self.workers.append(thread)
            thread.start()

    def wake(self, claimed: int) -> None:
        """Release the locks of the workers in the mask ``claimed`` (``_post``)."""
        w = 0
        while claimed:
            if claimed & 1:
                self.wakers[w].release()
            claimed >>= 1
            w += 1

    def stop(self, timeout: float = 1.0) -> None:
        """End every worker's thread (at exit; a stopped pool takes no more jobs)."""
        if not self.workers or not self.post.acquire(timeout=timeout):
            return  # no workers, or a job still runs in another thread
        self.stopping = True
        self.job = None
        workers = len(self.workers)
        self.wake(_post(self.box, self.next_word(workers, True, 0), workers))
        for thread in self.workers:
            thread.join(timeout=timeout)

    def next_word(self, helpers: int, python: bool, blocks: int) -> int:
        self.seq = (self.seq + 1) & _SEQ_MASK or 1
        return _word(self.seq, helpers, python, blocks)


def _work(pool: _Pool, w: int) -> None:
    from zoo.kernels import threads

    threads.hold_blas_in_worker()
    box, waker = pool.box, pool.wakers[w]
    python_seen = 0
    while not pool.stopping:
        seq = _serve(box, w, pool.width, pool.clock, SPIN_NS, python_seen)
        if seq < 0:
            waker.acquire()  # until a caller claims this worker AWAKE and releases it
            continue
        python_seen = seq
        job = pool.job
        if job is not None:
            job.work()


_POOL: list[_Pool] = []


def _pool() -> _Pool:
    # Threads do not survive a fork: a child process starts a pool of its own.
    if not _POOL or _POOL[0].pid != os.getpid():
        _POOL[:] = [_Pool()]
    return _POOL[0]


@atexit.register
def _stop_workers() -> None:
    """At exit, before the interpreter frees what they read: every worker out of its kernel
    and its thread ended (a worker spinning without the GIL would otherwise read the mailbox
    while it is freed)."""
    pool = _POOL[0] if _POOL else None
    if pool is not None and pool.pid == os.getpid():
        pool.stop()


@njit
def _add_awake(box, delta):
    atomics.add(box, _KEEP_AWAKE, delta)


class awake:  # lower case: used as ``with awake():``
    """Inside, this process's idle workers keep watching the mailbox instead of going to sleep
    ``SPIN_NS`` after their last job; they sleep ``SPIN_NS`` after the last such scope ends.

    For a training step on more than one thread (``zoo.training.loop.Trainer.train_step``):
    the elementwise work, the loss and the small layers between its products take 100-300 us,
    longer than a worker spins when nothing says more work is coming, and a sleeping worker
    takes about 55 us to wake, so every product after such a gap started on one core.
    Measured on the autoencoder workload, two threads, interleaved runs: 3.37 -> 2.75 ms a
    step. The spin lasts only as long as the scope, and scopes nest (a count, not a flag).
    Where no worker exists yet, the scope does nothing.
    """

    __slots__ = ("box",)

    def __enter__(self):
        pool = _POOL[0] if _POOL else None
        self.box = pool.box if pool is not None and pool.pid == os.getpid() else None
        if self.box is not None:
            _add_awake(self.box, 1)
        return self

    def __exit__(self, *exc):
        if self.box is not None:
            _add_awake(self.box, -1)
        return False


# -- gemm jobs a kernel posts itself -----------------------------------------------------------
# A ticket (an int64 array, ``kernel_jobs``) carries the pool's job number in and out of a
# kernel, the workers a post claimed from sleep (to wake when the kernel returns) and the
# thread count.
_TICKET_SEQ, _TICKET_CLAIMED, _TICKET_THREADS = 0, 1, 2


@njit
def gemm_in_kernel(box, ticket, clock, kind, fn, width, cuts, axis, a, ta, b, tb, c, scratch):
    """``run_gemm``'s job, posted and computed from inside a kernel: the same blocks, the same
    calls (``kind``, ``fn``, ``width``: ``gemm_block_function``), so the same bits. ``box``,
    ``ticket``, ``clock``: a ``kernel_jobs`` scope's."""
    blocks = cuts.size - 1
    helpers = _kernel_helpers(ticket, blocks)
    mode = _float_mode()
    if helpers == 0:
        _gemm_alone(width, kind, fn, mode, cuts, axis, a, ta, b, tb, c, scratch)
        return
    word = _kernel_word(ticket, helpers, blocks)
    ticket[_TICKET_CLAIMED] |= _gemm_post(box, word, helpers, kind, fn, mode, cuts, axis,
                                          a, ta, b, tb, c, scratch)
    _work_and_wait(box, width, blocks, clock)


@njit
def call_in_kernel(box, ticket, clock, width, fn, args, cuts):
    """``run_call``'s job, posted and computed from inside a kernel (``width``: any sample of
    BLAS's integer type, unused by a call); as ``gemm_in_kernel``."""
    blocks = cuts.size - 1
    helpers = _kernel_helpers(ticket, blocks)
    mode = _float_mode()
    if helpers == 0:
        _call_alone(fn, mode, args, cuts)
        return
    word = _kernel_word(ticket, helpers, blocks)
    ticket[_TICKET_CLAIMED] |= _call_post(box, word, helpers, fn, mode, args, cuts)
    _work_and_wait(box, width, blocks, clock)


@njit
def _kernel_helpers(ticket, blocks):
    return max(0, min(ticket[_TICKET_THREADS], blocks, MAX_WORKERS + 1) - 1)


@njit
def _kernel_word(ticket, helpers, blocks):
    """The next job's word, numbered after the ticket's last (as ``_Pool.next_word``), posted
    with block 0 taken: the caller's ("Each thread its own blocks")."""
    seq = (ticket[_TICKET_SEQ] + 1) & _SEQ_MASK
    seq = seq if seq else 1
    ticket[_TICKET_SEQ] = seq
    return (seq << 32) | (helpers << 24) | (blocks << 16) | 1


class kernel_jobs:  # lower case: used as ``with kernel_jobs(threads) as jobs:``
    """Inside, a kernel may post gemm jobs itself (``gemm_in_kernel`` with ``jobs.box``,
    ``jobs.ticket``, ``jobs.clock``) on up to ``threads`` threads: this thread holds the pool
    for the scope, as ``run_gemm`` holds it for one job.

    For a training step computed in one kernel call (``zoo.kernels.dense_stack``): the Python
    between its products is gone, and with it the Python of posting each job. Sleeping
    workers are woken on entry, so they watch the mailbox by the first product. A worker a
    post claims from sleep inside the kernel is woken on exit (a kernel cannot release a
    lock); that job's blocks are computed by whoever is awake. Where the pool is busy (another
    thread of this process posts) or ``threads`` is 1, every job runs on this thread alone.
    """

    __slots__ = ("threads", "pool", "box", "ticket", "clock")

    def __init__(self, threads: int):
        self.threads = threads
        self.pool = None
        # One thread until entered: what a kernel that posts nothing is given (no workers).
        self.ticket = np.array([0, 0, 1], np.int64)
        self.box, self.clock = self.ticket, _NO_CLOCK

    def __enter__(self):
        helpers = _helpers(self.threads, MAX_WORKERS + 1)
        pool = _pool() if helpers else None
        if pool is not None and not pool.post.acquire(blocking=False):
            pool = None
        self.pool = pool
        if pool is None:
            return self
        try:
            pool.grow(helpers)
            pool.wake(_claim_asleep(pool.box, helpers))
        except BaseException:
            pool.post.release()
            raise
        self.ticket = np.array([pool.seq, 0, helpers + 1], np.int64)
        self.box, self.clock = pool.box, pool.clock
        return self

    def __exit__(self, *exc):
        pool = self.pool
        if pool is not None:
            self.pool = None
            pool.seq = int(self.ticket[_TICKET_SEQ])
            try:
                pool.wake(int(self.ticket[_TICKET_CLAIMED]))
            finally:
                pool.post.release()
        return False


_NO_CLOCK = np.zeros(3, np.int64)  # a scope without workers waits for nothing


def _helpers(threads: int, blocks: int) -> int:
    return max(0, min(threads, blocks, MAX_WORKERS + 1) - 1)


def run_blocks(fn, blocks: int, threads: int, wrap) -> None:
    """Call ``fn(i)`` for every block ``i`` in ``range(blocks)`` on up to ``threads`` threads.

    ``wrap()`` is entered by each worker around the blocks it runs (zoo holds BLAS to one
    thread there, in the caller's float mode); the caller runs its own blocks as it is. The
    first exception a block raises is raised here, after every block ended.
    """
    if blocks < 1:
        return
    helpers = _helpers(threads, blocks)
    pool = _pool() if helpers else None
    if pool is None or not pool.post.acquire(blocking=False):
        # One thread, or another thread of this process has the pool: the blocks in turn.
        error = None
        for i in range(blocks):
            try:
                fn(i)
            except BaseException as exc:  # noqa: BLE001 (raised after every block ran)
                error = error or exc
        if error is not None:
            raise error
        return
    job = _Job(fn, blocks, wrap)
    try:
        pool.grow(helpers)
        pool.job = job
        pool.wake(_post(pool.box, pool.next_word(helpers, True, 0), helpers))
        job.work(own=True)
        job.finished.acquire()
    finally:
        pool.job = None
        pool.post.release()
    if job.error is not None:
        raise job.error


def gemm_supported(dtype) -> bool:
    """Whether ``run_gemm`` can compute BLAS products of ``dtype``: float32 or float64 where
    numpy's BLAS was found and checked (``zoo.kernels.cblas``). Tiled (``sgemm``) float32
    products need no BLAS."""
    dtype = np.dtype(dtype)
    return dtype.char in "fd" and cblas.gemm_function(dtype)[0] != 0


_BLOCK_FUNCTIONS: dict = {}  # {(dtype, tiled): (kind, address, width)}, found on first use


def gemm_block_function(dtype, tiled: bool = False) -> tuple:
    """``(kind, address, width)`` a gemm job of ``dtype`` is described with: the ``sgemm``
    block cfunc for a tiled float32 job (``KIND_TILED``), else BLAS's GEMM (``KIND_GEMM``,
    ``cblas.gemm_function``)."""
    found = _BLOCK_FUNCTIONS.get((dtype, tiled))
    if found is None:
        fn, width = cblas.gemm_function(dtype)
        kind = KIND_GEMM
        if tiled and np.dtype(dtype) == np.float32:
            kind, fn = KIND_TILED, sgemm_block_address()
        found = _BLOCK_FUNCTIONS[(dtype, tiled)] = (kind, fn, width)
    return found


def run_gemm(cuts: np.ndarray, axis: int, a, ta: int, b, tb: int, out, threads: int,
             mode: int, tiled: bool = False, parts=None) -> None:
    """``out = op(a) @ op(b)`` in the blocks ``cuts`` (an int64 array of bounds) along ``axis``
    (0: rows, 1: columns), on up to ``threads`` threads, in float mode ``mode``. Along 2 (the
    inner dimension) block 0's part of the sum goes to ``out`` and block i's to
    ``parts[i - 1]`` (a C-contiguous ``(blocks - 1, m, n)`` array): the caller adds them.

    ``a``, ``b``, ``out`` are C-contiguous arrays of one dtype: float32 with ``tiled`` (each
    block an ``sgemm`` product), else one ``gemm_supported`` (each block a BLAS call);
    ``op(x)`` is ``x.T`` where the flag is 1. BLAS must be held to one thread by the caller.
    """
    blocks = cuts.size - 1
    kind, fn, width = gemm_block_function(out.dtype, tiled)
    scratch = out if parts is None else parts  # its address is only read along axis 2
    _run_native(threads, blocks, width,
                lambda box, word, helpers: _gemm_post(box, word, helpers, kind, fn, mode, cuts,
                                                      axis, a, ta, b, tb, out, scratch),
                lambda: _gemm_alone(width, kind, fn, mode, cuts, axis, a, ta, b, tb, out,
                                    scratch))


def run_call(fn: int, args: np.ndarray, cuts: np.ndarray, threads: int, mode: int) -> None:
    """Call the numba cfunc at address ``fn`` as ``fn(description, i)`` for every block ``i``
    of the bounds ``cuts`` (an int64 array), on up to ``threads`` threads, in float mode
    ``mode``. The description (``CALL_ARGS`` words from ``D_ARGS``: ``args``, an int64 array;
    the bounds from ``D_CUTS``) is all a block may read; blocks write disjoint outputs."""
    _run_native(threads, cuts.size - 1, None,
                lambda box, word, helpers: _call_post(box, word, helpers, fn, mode, args, cuts),
                lambda: _call_alone(fn, mode, args, cuts))


def _run_native(threads: int, blocks: int, width, post, alone) -> None:
    """A native job of ``blocks`` blocks on up to ``threads`` threads: ``post(box, word,
    helpers)`` describes and posts it (returning the workers to wake), then the caller takes
    blocks too (``width``: BLAS's integer sample, or None for the pool's) and waits; with no
    free pool (one thread, or another job posting) ``alone()`` computes every block."""
    helpers = _helpers(threads, blocks)
    pool = _pool() if helpers else None
    if pool is not None and pool.post.acquire(blocking=False):
        try:
            pool.grow(helpers)
            # Posted with block 0 taken: the caller's ("Each thread its own blocks").
            pool.wake(post(pool.box, pool.next_word(helpers, False, blocks) + 1, helpers))
            _work_and_wait(pool.box, pool.width if width is None else width, blocks,
                           pool.clock)
        finally:
            pool.post.release()
    else:
        alone()
