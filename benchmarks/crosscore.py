"""What a core pays to read what another core has just written.

A two-thread training step moves data between the cores wherever one thread reads an array
the other wrote (an activation whose product was cut in blocks, a gradient updated by the
other thread, weights updated by one and read by both). How much that costs bounds what a
second thread can win. Two threads share one buffer: the writer fills it, both meet at a
barrier, the reader reads it (one vectorised pass, the same work as an optimizer's update of
that many values). Timed against the same pass by the thread that wrote it, on the same
buffer, in the same loop; the difference is the price of the crossing. Prints one JSON line
per size:

    {"bytes": 409600, "same_core_us": 35.8, "other_core_us": 82.1, "crossing_gb_per_s": 8.8}

A second run (``--runs``) shows how steady that is on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import numpy as np

from zoo.kernels import atomics
from zoo.kernels._jit import njit


@njit
def _barrier(flag, target):
    atomics.add(flag, 0, 1)
    while atomics.load(flag, 0) < target:
        atomics.pause()


@njit
def _rounds(me, flag, buf, out, rounds, reader, clock, spent):
    """Thread ``me`` (0 writes): per round, 0 writes ``buf``, both meet, ``reader`` reads it
    into ``out`` (timed into ``spent``), both meet."""
    timespec = np.empty(2, np.int64)
    two = buf.dtype.type(2)
    for r in range(rounds):
        if me == 0:
            value = buf.dtype.type(r)
            for i in range(buf.size):
                buf[i] = value
        _barrier(flag, 2 * (2 * r + 1))
        if me == reader:
            start = atomics.now_ns(clock, timespec)
            for i in range(buf.size):
                out[i] = buf[i] * two
            spent[r] = atomics.now_ns(clock, timespec) - start
        _barrier(flag, 2 * (2 * r + 2))


def measure(size: int, reader: int, rounds: int) -> float:
    """Median microseconds of the reader's pass over ``size`` float32 values."""
    buf = np.zeros(size, np.float32)
    out = np.zeros(size, np.float32)
    flag = np.zeros(1, np.int64)
    spent = np.zeros(rounds, np.int64)
    clock = atomics.clock_functions()
    other = threading.Thread(target=_rounds,
                             args=(1, flag, buf, out, rounds, reader, clock, spent))
    other.start()
    _rounds(0, flag, buf, out, rounds, reader, clock, spent)
    other.join()
    return statistics.median(spent[rounds // 5:]) / 1e3  # the first rounds warm up


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kib", type=int, nargs="*", default=[100, 400, 800, 1600],
                        help="buffer sizes in KiB (default: 100 400 800 1600)")
    parser.add_argument("--runs", type=int, default=1, help="lines per size")
    parser.add_argument("--rounds", type=int, default=300, help="passes per measurement")
    args = parser.parse_args(argv)
    if min(args.kib, default=1) < 1 or args.runs < 1 or args.rounds < 5:
        parser.error("expected --kib >= 1, --runs >= 1 and --rounds >= 5")
    measure(1024, 1, 10)  # compile
    time.sleep(0.1)
    for _ in range(args.runs):
        for kib in args.kib:
            size = kib * 1024 // 4
            same, other = measure(size, 0, args.rounds), measure(size, 1, args.rounds)
            extra = other - same
            print(json.dumps({"bytes": size * 4, "same_core_us": round(same, 1),
                              "other_core_us": round(other, 1),
                              "crossing_gb_per_s": round(size * 4 / extra / 1e3, 1)
                              if extra > 0 else None}), flush=True)


if __name__ == "__main__":
    main()
