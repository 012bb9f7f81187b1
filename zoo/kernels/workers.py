"""A small pool of persistent threads that run the blocks of one job with the calling thread.

``run_blocks(fn, blocks, threads)`` calls ``fn(0) ... fn(blocks - 1)``, each exactly once, and
returns when all have returned. Which thread runs which block is decided at run time (each
takes the next block not yet taken), and is all the thread count decides: the caller cuts the
work into blocks from the sizes alone, so the result is the same on one thread and on many
(``zoo.kernels.threads`` has the whole policy). Blocks must write disjoint outputs.

Why not ``concurrent.futures``: a job here is a few hundred microseconds of BLAS, and a
``ThreadPoolExecutor`` round trip (a future, a queue, a condition per result) costs tens of
microseconds of Python under the GIL. Here a job is handed to each worker with one
``SimpleQueue.put`` (a C lock release) and the caller waits on one lock. A worker that wakes
late, after the caller and the others have taken every block, finds nothing left and goes
back to sleep: the caller never waits for a thread that has no block, which is what keeps a
descheduled worker on a busy core from stalling a step that did not need it.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading


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

    def work(self) -> None:
        i = self.take()
        if i >= self.blocks:
            return
        with self.wrap():
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


class _Pool:
    def __init__(self):
        self.pid = os.getpid()
        self.queues: list[queue.SimpleQueue] = []

    def grow(self, workers: int) -> None:
        while len(self.queues) < workers:
            q: queue.SimpleQueue = queue.SimpleQueue()
            threading.Thread(target=_serve, args=(q,), daemon=True,
                             name=f"zoo-worker-{len(self.queues) + 1}").start()
            self.queues.append(q)


def _serve(q: queue.SimpleQueue) -> None:
    while True:
        q.get().work()


_POOL: list[_Pool] = []


def _pool() -> _Pool:
    # Threads do not survive a fork: a child process starts a pool of its own.
    if not _POOL or _POOL[0].pid != os.getpid():
        _POOL[:] = [_Pool()]
    return _POOL[0]


def run_blocks(fn, blocks: int, threads: int, wrap) -> None:
    """Call ``fn(i)`` for every block ``i`` in ``range(blocks)`` on up to ``threads`` threads.

    ``wrap()`` is entered once by each thread around the blocks it runs (zoo holds BLAS to one
    thread there). The first exception a block raises is raised here, after every block ended.
    """
    if blocks < 1:
        return
    helpers = min(threads, blocks) - 1
    job = _Job(fn, blocks, wrap)
    if helpers > 0:
        pool = _pool()
        pool.grow(helpers)
        for q in pool.queues[:helpers]:
            q.put(job)
    job.work()
    job.finished.acquire()
    if job.error is not None:
        raise job.error
