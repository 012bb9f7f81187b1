"""The worker pool's hand-off (``zoo.kernels.workers``): jobs posted through the mailbox, picked
up by spinning or sleeping workers, every block exactly once, and no worker left busy.

Nothing here measures speed or depends on the machine: waits have generous time limits, and
products are compared with zoo's own single-thread results.
"""

import multiprocessing
import os
import threading
import time

import numpy as np
import pytest

from zoo.kernels import blas, fpenv, optim, sgemm, threads, workers

NATIVE = workers.gemm_supported(np.float32)
needs_native = pytest.mark.skipif(not NATIVE, reason="numpy's BLAS is not OpenBLAS: zoo cannot "
                                  "call its GEMM from numba, and Gemm uses np.matmul blocks")


@pytest.fixture(autouse=True)
def one_thread_after():
    yield
    threads.set_threads(1)


@pytest.fixture
def fresh_pool(monkeypatch):
    """A pool of this test's own (workers of earlier tests left alone, and forgotten after)."""
    monkeypatch.setattr(workers, "_POOL", [])
    yield
    if workers._POOL:
        workers._POOL[0].stop()
        assert not any(t.is_alive() for t in workers._POOL[0].workers)
    workers._POOL.clear()


def _operands(m, k, n, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype))


def _state(w: int) -> int:
    return int(workers._pool().box[workers._STATE + 8 * w])


def _wait_until(condition, seconds=20.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.001)
    return condition()


def _post_gemm_to_workers(gemm, a, b, out, helpers):
    """Post ``gemm``'s job and let the workers compute every block (the caller takes none),
    then add the parts of a split inner dimension as ``Gemm`` does."""
    pool = workers._pool()
    kind, fn, width = workers.gemm_block_function(out.dtype, gemm.tiled)
    parts = gemm._parts_of(out.dtype) if gemm.axis == 2 else out
    with pool.post, threads.single_threaded_blas():  # as threads.run_gemm holds it
        pool.grow(helpers)
        word = pool.next_word(helpers, False, gemm.blocks)
        pool.wake(workers._gemm_post(pool.box, word, helpers, kind, fn, fpenv.current_mode(),
                                     gemm._bounds, gemm.axis, a, 0, b, 0, out, parts))
        workers._wait_done(pool.box, gemm.blocks, pool.clock, 10**6, 10**5)
    return blas._add_parts(out, parts if gemm.axis == 2 else None)


# -- gemm jobs -------------------------------------------------------------------------------
@needs_native
@pytest.mark.parametrize("count", [2, 3, 8])
def test_a_gemm_job_computes_every_block_once_on_any_thread_count(count, fresh_pool):
    a, b = _operands(256, 600, 512)
    gemm = blas.Gemm(256, 600, 512)
    assert gemm.blocks == 4
    threads.set_threads(1)
    one = gemm(a, b, np.full((256, 512), np.nan, np.float32)).copy()
    threads.set_threads(count)
    for _ in range(20):  # jobs in quick succession: workers pick them up spinning
        many = gemm(a, b, np.full((256, 512), np.nan, np.float32))
        np.testing.assert_array_equal(many, one)  # no block missed (NaN), none changed


@needs_native
def test_workers_alone_compute_a_posted_gemm_job(fresh_pool):
    a, b = _operands(128, 784, 256, seed=3)
    gemm = blas.Gemm(128, 784, 256)
    one = gemm(a, b, np.empty((128, 256), np.float32)).copy()
    for _ in range(3):
        out = _post_gemm_to_workers(gemm, a, b, np.full((128, 256), np.nan, np.float32), 1)
        np.testing.assert_array_equal(out, one)
        # and again after the worker has gone to sleep: the post wakes it
        assert _wait_until(lambda: _state(0) == workers.ASLEEP)


@needs_native
@pytest.mark.parametrize("flush", [False, True])
def test_a_worker_computes_gemm_blocks_in_the_posting_threads_mode(flush, fresh_pool):
    a, b = _operands(128, 784, 256, seed=1)
    a *= np.float32(1e-12)
    a[:, ::5] *= np.float32(1e-28)  # denormal columns (~1e-40) times b's rows of ~1e30 ...
    b[::5] *= np.float32(1e30)  # ... add ~1e-10 to each sum: or nothing, flushed
    gemm = blas.Gemm(128, 784, 256)
    ieee_mode = fpenv.current_mode() & ~fpenv.FLUSH_BITS
    with fpenv.same_mode(ieee_mode):
        ieee = gemm(a, b, np.empty((128, 256), np.float32)).copy()
        with fpenv.flush_denormals():
            flushed = gemm(a, b, np.empty((128, 256), np.float32)).copy()
    if fpenv.SUPPORTED:
        assert not np.array_equal(ieee, flushed)
    for flushing in (flush, not flush, flush):  # the worker changes modes between jobs
        with fpenv.flush_denormals() if flushing else fpenv.same_mode(ieee_mode):
            out = _post_gemm_to_workers(gemm, a, b, np.empty((128, 256), np.float32), 1)
        np.testing.assert_array_equal(out, flushed if flushing else ieee)


@needs_native
def test_transposed_operands_and_float64_take_the_native_path(fresh_pool, monkeypatch):
    calls = []
    run = workers.run_gemm
    monkeypatch.setattr(workers, "run_gemm", lambda *args: calls.append(1) or run(*args))
    for dtype in (np.float32, np.float64):
        for layout in ("ab", "at", "bt"):
            a, b = _operands(128, 784, 256, dtype=dtype)
            if layout == "at":
                a = np.ascontiguousarray(a.T).T
            if layout == "bt":
                b = np.ascontiguousarray(b.T).T
            gemm = blas.Gemm(128, 784, 256)
            results = []
            for count in (1, 2):
                threads.set_threads(count)
                results.append(gemm(a, b, np.empty((128, 256), dtype)).copy())
            np.testing.assert_array_equal(results[0], results[1])
            np.testing.assert_allclose(results[0], a.astype(np.float64) @ b,
                                       rtol=1e-4, atol=1e-3)
    assert len(calls) == 12


def test_strided_operands_fall_back_to_numpy_blocks(monkeypatch):
    calls = []
    run = threads.run_blocks
    monkeypatch.setattr(threads, "run_blocks", lambda fn, n: calls.append(n) or run(fn, n))
    a, b = _operands(128, 784, 512)
    b = b[:, ::2]  # every other column: no BLAS layout
    gemm = blas.Gemm(128, 784, 256)
    out = gemm(a, b, np.empty((128, 256), np.float32))
    assert calls == [gemm.blocks]
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)


def test_operands_of_other_shapes_are_never_read_past():
    a, b = _operands(128, 784, 256)
    gemm = blas.Gemm(128, 784, 256)
    out = gemm(a[:, :700], b[:700], np.empty((128, 256), np.float32))  # numpy's way
    np.testing.assert_allclose(out, a[:, :700].astype(np.float64) @ b[:700], rtol=1e-4,
                               atol=1e-3)
    with pytest.raises(ValueError):
        gemm(a, b, np.empty((64, 256), np.float32))


# -- call jobs: the optimizers' updates in chunks ---------------------------------------------
def test_chunks_depend_on_the_size_alone():
    for size in (1, 1000, 2 * optim.CHUNK - 1, 2 * optim.CHUNK, 235_146, 10**7):
        bounds = optim.chunk_bounds(size)
        chunks = len(bounds) - 1
        assert bounds[0] == 0 and bounds[-1] == size and bounds == sorted(set(bounds))
        assert chunks & (chunks - 1) == 0 and chunks <= optim.MAX_CHUNKS
        assert all(b % optim.ALIGN == 0 for b in bounds[:-1])
        assert chunks == 1 or size >= chunks * optim.CHUNK
    assert len(optim.chunk_bounds(235_146)) - 1 == 2  # the mlp benchmark's parameters


def _three_updates(p, g, seed):
    rng = np.random.default_rng(seed)
    slots = [np.zeros_like(p) for _ in range(4)]
    for step in range(1, 4):
        g[:] = rng.standard_normal(g.size).astype(g.dtype)
        optim.sgd(p, g, slots[0], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
        optim.rmsprop(p, g, slots[1], slots[2], lr=0.01, momentum=0.5, weight_decay=0.1)
        optim.adam(p, g, slots[3], slots[1], lr=0.01, step=step, weight_decay=0.1,
                   decoupled=True)
    return p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunked_updates_give_the_same_bits_on_any_thread_count(dtype, fresh_pool,
                                                                monkeypatch):
    size = 235_146
    start = np.random.default_rng(0).standard_normal(size).astype(dtype)
    results = []
    for count in (1, 2, 3, 2):
        threads.set_threads(count)
        results.append(_three_updates(start.copy(), np.empty_like(start), seed=1))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    # every element got the arithmetic of an update in one piece
    monkeypatch.setattr(optim, "chunk_bounds", lambda n: [0, n])
    whole = _three_updates(start.copy(), np.empty_like(start), seed=1)
    np.testing.assert_array_equal(whole, results[0])


def test_a_chunk_plan_changes_no_bit(fresh_pool):
    # The trainer cuts its update where the products cut the weights (``chunk_plans``): any
    # ALIGN-multiple bounds, empty chunks included, give the bits of the update in one piece.
    size = 235_146
    start = np.random.default_rng(2).standard_normal(size).astype(np.float32)
    whole = _three_updates(start.copy(), np.empty_like(start), seed=3)
    for count in (1, 2):
        threads.set_threads(count)
        p = start.copy()
        plan = [0, 98_304, 98_304, 200_704, 217_088, size]
        with optim.chunk_plans({id(p): plan}):
            _three_updates(p, np.empty_like(p), seed=3)
        np.testing.assert_array_equal(p, whole)
    assert getattr(optim._PLANS, "plans", None) is None  # the scope ended


def test_owner_chunks_give_each_thread_the_rows_its_products_computed():
    from zoo.layers.dense import Dense
    from zoo.model import Sequential
    from zoo.training.flat import flatten_parameters, owner_chunks

    model = Sequential([Dense(256, activation="relu"), Dense(128, activation="relu"),
                        Dense(10)])
    model.build((784,), np.random.default_rng(0))
    values, _ = flatten_parameters(model)
    params = [p for _, p in model.named_parameters()]
    bounds = owner_chunks(values, params)
    # W0 (784 x 256): rows 0:384 (blas cuts 784 there), then the rest and b0; W1 (256 x 128)
    # from its start: rows 0:128, then the rest with b1 and the small W2, b2
    assert blas.cut_in_two(784) == 384 and blas.cut_in_two(256) == 128
    w1 = 784 * 256 + 256
    expected = [0, 384 * 256, w1, w1 + 128 * 128, values.size]
    assert bounds == [0] + [round(b / optim.ALIGN) * optim.ALIGN for b in expected[1:-1]] \
        + [values.size]
    assert all(b % optim.ALIGN == 0 for b in bounds[:-1]) and bounds == sorted(bounds)
    small = Sequential([Dense(64), Dense(10)])
    small.build((64,), np.random.default_rng(0))
    assert owner_chunks(flatten_parameters(small)[0],
                        [p for _, p in small.named_parameters()]) is None  # nothing to cut
    deep = Sequential([Dense(200) for _ in range(workers.MAX_NATIVE_BLOCKS // 2 + 1)])
    deep.build((200,), np.random.default_rng(0))
    assert owner_chunks(flatten_parameters(deep)[0],
                        [p for _, p in deep.named_parameters()]) is None  # too many chunks


def test_a_worker_alone_runs_every_chunk_of_a_posted_update(fresh_pool):
    p = np.arange(200_000, dtype=np.float32)
    g = np.ones_like(p)
    pool = workers._pool()
    args = np.empty(workers.CALL_ARGS, np.int64)
    hyper = np.array([0.5, 0.0, 0.0, 0.0])  # lr 0.5, no momentum, no decay: p -= 0.5 g
    optim._job_args(args, p, g, p, p, hyper)
    cuts = np.array(optim.chunk_bounds(p.size), np.int64)
    fn = optim.block_address("sgd", np.float32)
    with pool.post:
        pool.grow(1)
        word = pool.next_word(1, False, cuts.size - 1)
        pool.wake(workers._call_post(pool.box, word, 1, fn, fpenv.current_mode(), args, cuts))
        workers._wait_done(pool.box, cuts.size - 1, pool.clock, 10**6, 10**5)
    np.testing.assert_array_equal(p, np.arange(200_000, dtype=np.float32) - 0.5)


# -- a worker that never comes, two callers at once, a forked child --------------------------
def test_a_worker_that_never_wakes_does_not_stall_a_job(fresh_pool, monkeypatch):
    stuck = threading.Event()
    monkeypatch.setattr(workers, "_work", lambda pool, w: stuck.wait())
    try:
        threads.set_threads(2)
        ran = []
        threads.run_blocks(ran.append, 5)
        assert sorted(ran) == list(range(5))
        a, b = _operands(128, 784, 256)
        gemm = blas.Gemm(128, 784, 256)
        out = gemm(a, b, np.empty((128, 256), np.float32))
        threads.set_threads(1)
        np.testing.assert_array_equal(out, gemm(a, b, np.empty((128, 256), np.float32)))
    finally:
        stuck.set()


def test_two_threads_posting_at_once_both_get_their_results(fresh_pool):
    # BLAS on one thread for the whole process first, as the zoo command starts it: OpenBLAS
    # ignores a thread count set from a thread other than the main one, so only the main
    # thread can hold it (threads.single_threaded_blas) for products run in other threads.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        _post_from_three_threads()


def _post_from_three_threads():
    threads.set_threads(2)
    a, b = _operands(128, 784, 256)
    gemm = blas.Gemm(128, 784, 256)
    threads.set_threads(1)
    one = gemm(a, b, np.empty((128, 256), np.float32)).copy()
    threads.set_threads(2)
    failures = []

    def caller():
        out = np.empty((128, 256), np.float32)
        for _ in range(30):
            if not np.array_equal(gemm(a, b, out), one):
                failures.append(1)
            ran = []
            threads.run_blocks(ran.append, 3)
            if sorted(ran) != [0, 1, 2]:
                failures.append(2)

    callers = [threading.Thread(target=caller) for _ in range(3)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(60)
    assert not any(t.is_alive() for t in callers)
    assert failures == []


def _gemm_in_child(queue):
    threads.set_threads(2)
    a, b = _operands(128, 784, 256)
    queue.put(blas.Gemm(128, 784, 256)(a, b, np.empty((128, 256), np.float32)))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_a_forked_child_starts_a_pool_of_its_own():
    threads.set_threads(2)
    a, b = _operands(128, 784, 256)
    gemm = blas.Gemm(128, 784, 256)
    mine = gemm(a, b, np.empty((128, 256), np.float32)).copy()  # the parent's pool is up
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_gemm_in_child, args=(queue,))
    child.start()
    theirs = queue.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(theirs, mine)


# -- no busy core after a job ----------------------------------------------------------------
def _cpu_seconds(thread) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


@pytest.mark.skipif(not hasattr(time, "pthread_getcpuclockid"), reason="no per-thread clock")
def test_workers_sleep_within_the_bound_after_a_job(fresh_pool):
    threads.set_threads(3)
    a, b = _operands(128, 784, 256)
    gemm = blas.Gemm(128, 784, 256)
    for _ in range(5):
        gemm(a, b, np.empty((128, 256), np.float32))
        threads.run_blocks(lambda i: None, 4)
    pool = workers._pool()
    assert len(pool.workers) == 2
    # Asleep in SPIN_NS (0.2 ms) on a quiet machine; a busy one may delay them, not keep them.
    assert _wait_until(lambda: all(_state(w) == workers.ASLEEP for w in range(2)))
    before = [_cpu_seconds(t) for t in pool.workers]
    time.sleep(0.3)
    after = [_cpu_seconds(t) for t in pool.workers]
    assert all(y - x < 0.01 for x, y in zip(before, after)), (before, after)
    # and they still work
    threads.run_blocks(lambda i: None, 3)


@needs_native
def test_workers_stay_awake_inside_a_scope_and_sleep_after_it(fresh_pool):
    threads.set_threads(2)
    a, b = _operands(128, 784, 256)
    gemm = blas.Gemm(128, 784, 256)
    one = gemm(a, b, np.empty((128, 256), np.float32)).copy()  # the pool exists from here
    with threads.step_scope(), threads.step_scope():  # scopes nest
        np.testing.assert_array_equal(gemm(a, b, np.empty((128, 256), np.float32)), one)
        # Posted while the scope was open, the job left the worker AWAKE; it cannot sleep now
        # however long the gap to the next job (50 times SPIN_NS here).
        time.sleep(50 * workers.SPIN_NS / 1e9)
        assert _state(0) == workers.AWAKE
        np.testing.assert_array_equal(gemm(a, b, np.empty((128, 256), np.float32)), one)
    assert workers._pool().box[workers._KEEP_AWAKE] == 0
    assert _wait_until(lambda: _state(0) == workers.ASLEEP)


def test_a_scope_on_one_thread_keeps_no_worker_awake(fresh_pool):
    threads.set_threads(1)
    with threads.step_scope() as scope:
        assert scope.awake is None
    assert not workers._POOL  # and made no pool


@needs_native
def test_a_training_step_leaves_no_scope_open(fresh_pool, monkeypatch):
    from zoo.layers.dense import Dense
    from zoo.losses import MSE
    from zoo.model import Sequential
    from zoo.optimizers import SGD
    from zoo.training.loop import Trainer
    from zoo.training.stopping import StoppingEngine

    monkeypatch.setenv("ZOO_BLAS_THREADS", "2")
    rng = np.random.default_rng(0)
    model = Sequential([Dense(256, activation="relu"), Dense(784)])
    model.build((784,), rng)
    trainer = Trainer(model, MSE(), SGD(lr=0.01), StoppingEngine(), task="reconstruct",
                      batch_size=128, rng=rng)
    x = rng.random((128, 784), dtype=np.float32)
    for _ in range(3):
        trainer.train_step(x, x)
        assert workers._pool().box[workers._KEEP_AWAKE] == 0
    with pytest.raises(ValueError):  # a step that fails closes its scope too
        trainer.train_step(x[:, :5], x)
    assert workers._pool().box[workers._KEEP_AWAKE] == 0


# -- jobs a kernel posts itself (the fused Dense step) ----------------------------------------
def _in_kernel(jobs, gemm, a, b, out):
    """``gemm``'s job posted through ``gemm_in_kernel`` (as ``dense_stack`` posts it), parts
    of a split inner dimension added as ``Gemm`` adds them."""
    kind, fn, width = workers.gemm_block_function(out.dtype, gemm.tiled)
    m, _, n = gemm.shape
    scratch = np.full((gemm.blocks - 1) * m * n if gemm.axis == 2 else 1, np.nan, out.dtype)
    workers.gemm_in_kernel(jobs.box, jobs.ticket, jobs.clock, kind, fn, width, gemm._bounds,
                           gemm.axis, a, 0, b, 0, out, scratch)
    if gemm.axis == 2:
        blas._add_parts(out, scratch.reshape(gemm.blocks - 1, m, n))
    return out


SHAPES = [(128, 784, 256), (128, 256, 784), (784, 128, 256)]  # inner, columns, rows


@needs_native
@pytest.mark.parametrize("count", [1, 2, 3])
def test_a_kernel_posts_gemm_jobs_with_the_bits_of_a_gemm(count, fresh_pool):
    threads.set_threads(1)
    cases = []
    for m, k, n in SHAPES:
        gemm = blas.Gemm(m, k, n)
        a, b = _operands(m, k, n)
        cases.append((gemm, a, b, gemm(a, b, np.empty((m, n), np.float32)).copy()))
    assert {gemm.axis for gemm, *_ in cases} == {0, 1, 2}
    pool = workers._pool() if count > 1 else None
    seq = pool.seq if pool else 0
    with threads.single_threaded_blas(), workers.kernel_jobs(count) as jobs:
        assert jobs.ticket[2] == count
        for _ in range(5):
            for gemm, a, b, expected in cases:
                out = np.full(expected.shape, np.nan, np.float32)
                np.testing.assert_array_equal(_in_kernel(jobs, gemm, a, b, out), expected)
    if pool is not None:
        assert pool.seq == seq + 15 and len(pool.workers) == count - 1  # every job numbered
        assert pool.post.acquire(blocking=False)  # and the pool handed back
        pool.post.release()
    else:
        assert not workers._POOL  # one thread: no pool made


def _gemm_words(a, ta, b, tb, c):
    """``c = op(a) @ op(b)`` as a list job's ``GEMM_WORDS`` words (arrays as stored)."""
    return [a.ctypes.data, b.ctypes.data, c.ctypes.data, a.shape[1], b.shape[1], c.shape[1],
            ta, tb, c.shape[0], a.shape[0] if ta else a.shape[1], c.shape[1]]


@needs_native
@pytest.mark.parametrize("tiled", [False, True])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_a_list_job_computes_each_of_its_products_as_one_call(count, tiled, fresh_pool):
    # A layer's weight gradient x.T @ dz and input gradient dz @ w.T, as the fused step posts
    # them: each block the whole product, so each has the bits of the same call made alone.
    rng = np.random.default_rng(5)
    x, dz = rng.standard_normal((48, 40), np.float32), rng.standard_normal((48, 24), np.float32)
    w = rng.standard_normal((40, 24), np.float32)
    dw, dx = np.full((40, 24), np.nan, np.float32), np.full((48, 40), np.nan, np.float32)
    table = np.array(_gemm_words(x, 1, dz, 0, dw) + _gemm_words(dz, 0, w, 1, dx), np.int64)
    kind, fn, width = workers.gemm_block_function(np.float32, tiled)
    with threads.single_threaded_blas(), workers.kernel_jobs(count) as jobs:
        workers.gemm_in_kernel(jobs.box, jobs.ticket, jobs.clock, kind, fn, width,
                               np.array([0, 1, 2], np.int64), workers.AXIS_LIST, dz, 0, dz, 0,
                               dx, table)
        if tiled:
            expected = [sgemm.gemm(x.T, dz, np.empty_like(dw)),
                        sgemm.gemm(dz, w.T, np.empty_like(dx))]
        else:
            expected = [np.dot(x.T, dz), np.dot(dz, w.T)]
    np.testing.assert_array_equal(dw, expected[0])
    np.testing.assert_array_equal(dx, expected[1])


@needs_native
def test_a_worker_a_kernel_claims_from_sleep_is_woken_after_it(fresh_pool):
    threads.set_threads(2)
    gemm = blas.Gemm(128, 256, 784)
    a, b = _operands(128, 256, 784)
    expected = gemm(a, b, np.empty((128, 784), np.float32)).copy()  # the pool exists now
    pool = workers._pool()
    woken: list = []  # the masks of workers whose locks were released
    wake = pool.wake
    pool.wake = lambda claimed: (woken.append(claimed), wake(claimed))
    # (Its 200 us of spinning after a job could end at any moment: wait for its sleep, so
    # that what follows does not depend on how fast this thread gets there.)
    assert _wait_until(lambda: _state(0) == workers.ASLEEP)
    with threads.single_threaded_blas(), workers.kernel_jobs(2) as jobs:
        assert woken == [1]  # claimed and woken on entry
        assert _wait_until(lambda: _state(0) == workers.ASLEEP)  # no step keeps it awake
        out = _in_kernel(jobs, gemm, a, b, np.full((128, 784), np.nan, np.float32))
        np.testing.assert_array_equal(out, expected)  # its blocks computed by the caller
        assert jobs.ticket[1] == 1 and _state(0) == workers.AWAKE  # claimed, still asleep
    assert woken == [1, 1]  # woken on exit
    # It serves the next job and goes back to sleep.
    assert _wait_until(lambda: _state(0) == workers.ASLEEP)
    np.testing.assert_array_equal(gemm(a, b, np.empty((128, 784), np.float32)), expected)


@needs_native
def test_a_kernel_whose_pool_is_busy_computes_its_jobs_alone(fresh_pool):
    threads.set_threads(2)
    gemm = blas.Gemm(128, 784, 256)
    a, b = _operands(128, 784, 256)
    expected = gemm(a, b, np.empty((128, 256), np.float32)).copy()
    pool = workers._pool()
    seq = pool.seq
    with pool.post:  # another thread of this process is posting
        with threads.single_threaded_blas(), workers.kernel_jobs(2) as jobs:
            assert jobs.ticket[2] == 1
            out = _in_kernel(jobs, gemm, a, b, np.full((128, 256), np.nan, np.float32))
            np.testing.assert_array_equal(out, expected)
    assert pool.seq == seq


def test_the_job_word_keeps_its_fields_apart():
    word = workers._word(seq=0x7FFFFFFF, helpers=255, python=True, blocks=127)
    assert word >> 32 == 0x7FFFFFFF
    assert (word >> 24) & 255 == 255 and (word >> 23) & 1 == 1
    assert (word >> 16) & 127 == 127 and word & workers._TAKEN_MASK == 0
    assert 0 < word < 2**63
    word = workers._word(seq=5, helpers=1, python=False, blocks=8)
    assert (word >> 32, (word >> 24) & 255, (word >> 23) & 1, (word >> 16) & 127) == (5, 1, 0, 8)
    assert workers.MAX_NATIVE_BLOCKS <= 16  # the taken bits


def test_each_participant_takes_its_own_blocks_first_then_any_left():
    word = workers._word(seq=1, helpers=1, python=False, blocks=5)  # 2 participants
    assert [workers._next_block(word, me) for me in (0, 1)] == [0, 1]
    word |= 0b00101  # blocks 0 and 2 taken
    assert [workers._next_block(word, me) for me in (0, 1)] == [4, 1]
    word |= 0b10000  # and 4: participant 0 has none of its own left, so it takes 1
    assert [workers._next_block(word, me) for me in (0, 1)] == [1, 1]
    assert workers._next_block(word | 0b01010, 0) == -1  # all taken
    python = workers._word(seq=2, helpers=1, python=True, blocks=0)
    assert workers._next_block(python, 1) == -1  # a Python job has no native blocks
    assert blas.MAX_BLOCKS <= workers.MAX_GEMM_BLOCKS


def test_the_pool_is_per_process():
    pool = workers._pool()
    assert workers._pool() is pool and pool.pid == os.getpid()


STOP_AT_EXIT = """
import threading
import numpy as np
from zoo.kernels import blas, threads, workers
threads.set_threads(3)
a = np.ones((128, 784), np.float32)
b = np.ones((784, 256), np.float32)
blas.Gemm(128, 784, 256)(a, b, np.empty((128, 256), np.float32))
threads.run_blocks(lambda i: None, 3)
pool = workers._pool()
workers._stop_workers()
print(pool.stopping, [t.is_alive() for t in pool.workers])
"""


def test_workers_end_at_exit_before_the_interpreter_does(subprocess_env):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", STOP_AT_EXIT], capture_output=True, text=True,
                          env=subprocess_env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "True [False, False]"
