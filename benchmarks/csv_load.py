"""CSV loading: wall time and peak memory of ``load_file`` on a large generated table.

Writes a table of ``--rows`` rows (default 10^7: two 4-decimal features and an integer label
0..9, about 160 MB) to a temporary folder, then loads it in a fresh process with
``zoo.data.files.load_file`` (the whole path: parse, checks, stratified split, Dataset) and
prints one JSON line: seconds, the process's peak resident memory, the Python-traced peak
(``--trace``; slower), and the size of the final arrays. The table is deleted afterwards.

    python benchmarks/csv_load.py                  # 10^7 rows
    python benchmarks/csv_load.py --rows 1000000 --trace
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

_CHILD = """
import json, resource, sys, time, tracemalloc
trace = sys.argv[2] == "1"
from zoo.data.files import load_file
if trace:
    tracemalloc.start()
start = time.perf_counter()
d = load_file(sys.argv[1])
seconds = time.perf_counter() - start
traced = tracemalloc.get_traced_memory()[1] if trace else None
final = sum(a.nbytes for a in (d.x_train, d.x_test, d.y_train, d.y_test))
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin"
                                                             else 1024)
print(json.dumps({"rows": len(d.x_train) + len(d.x_test), "seconds": round(seconds, 2),
                  "peak_rss_mb": round(rss / 2**20), "final_arrays_mb": round(final / 2**20),
                  "traced_peak_mb": None if traced is None else round(traced / 2**20)}))
"""


def write_table(path: str, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        f.write("a,b,label\n")
        for start in range(0, rows, 1_000_000):
            n = min(1_000_000, rows - start)
            values, labels = rng.random((n, 2)).tolist(), rng.integers(0, 10, n).tolist()
            f.write("".join(f"{a:.4f},{b:.4f},{k}\n" for (a, b), k in zip(values, labels)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--trace", action="store_true",
                        help="also measure the tracemalloc peak (slower)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zoo-csv-bench-") as folder:
        path = os.path.join(folder, "table.csv")
        start = time.perf_counter()
        write_table(path, args.rows)
        wrote = time.perf_counter() - start
        done = subprocess.run([sys.executable, "-c", _CHILD, path, "1" if args.trace else "0"],
                              capture_output=True, text=True, check=True)
        result = json.loads(done.stdout)
        result.update(file_mb=round(os.path.getsize(path) / 2**20), write_seconds=round(wrote, 1),
                      load_average=round(os.getloadavg()[0], 1), cpus=os.cpu_count())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
