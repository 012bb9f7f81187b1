"""Cold start: ``zoo --help``, and ``zoo train`` on an empty and on a warm numba cache.

- ``zoo --help``: wall time of ``--help-runs`` runs (it must never import numpy's heavy parts
  or numba; the target is under 0.3 s).
- ``zoo train --arch A --json --no-store`` for each ``--arch`` (default mlp and cnn, on the
  default dataset and settings), first with ``ZOO_CACHE_DIR`` an empty temporary directory
  (every kernel compiles), then again with the same directory (every kernel loads from the
  cache). For each: the wall time from the command to its result, and the ``compile_time_s``
  (compiles and cache loads) and ``train_time_s`` the command reports, plus which kernels the
  cold run compiled.

    python benchmarks/coldstart.py                 # print and rewrite docs/benchmarks.md
    python benchmarks/coldstart.py --arch cnn --runs 3 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import _docs

ZOO = os.path.join(os.path.dirname(sys.executable), "zoo")


def wall(argv, env=None) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    return time.perf_counter() - t0, done


def help_times(runs: int) -> list[float]:
    wall([ZOO, "--help"])  # the files in the page cache, like any second invocation
    return [wall([ZOO, "--help"])[0] for _ in range(runs)]


def kernels_in(cache: str) -> list[str]:
    """The kernels a cache directory holds, as ``module.function`` names."""
    names = set()
    for _, _, files in os.walk(cache):
        for f in files:
            if f.endswith(".nbi"):
                names.add(f.split("-")[0])
    return sorted(names)


def train(arch: str, cache: str, extra) -> dict:
    env = dict(os.environ, ZOO_CACHE_DIR=cache)
    env.pop("NUMBA_CACHE_DIR", None)
    seconds, done = wall([ZOO, "train", "--arch", arch, "--json", "--no-store", *extra], env)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"zoo train --arch {arch} failed (exit {done.returncode}): {tail}")
    result = json.loads(done.stdout)
    return {"wall_s": seconds, "compile_s": result["compile_time_s"],
            "train_s": result["train_time_s"], "steps": result["steps"],
            "dataset": result["dataset"], "test": result.get("test")}


def cold_and_warm(arch: str, runs: int, extra) -> dict:
    cold, warm, compiled = [], [], []
    for _ in range(runs):
        cache = tempfile.mkdtemp(prefix="zoo-coldstart-")
        try:
            cold.append(train(arch, cache, extra))
            compiled = kernels_in(cache)
            warm.append(train(arch, cache, extra))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    return {"cold": cold, "warm": warm, "compiled": compiled}


def med(rows, key) -> float:
    return statistics.median(r[key] for r in rows)


def accuracy(rows) -> str:
    """The runs' test accuracy (the same seed: the same for every run), or n/a."""
    values = sorted({round(100 * r["test"]["accuracy"], 2) for r in rows
                     if (r.get("test") or {}).get("accuracy") is not None})
    return " / ".join(f"{v:.1f}%" for v in values) or "n/a"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", help="architectures (default: mlp, cnn)")
    parser.add_argument("--runs", type=int, default=2, help="cold+warm pairs per architecture")
    parser.add_argument("--help-runs", type=int, default=10, help="timed 'zoo --help' runs")
    parser.add_argument("--no-write", action="store_true", help="leave docs/benchmarks.md alone")
    parser.add_argument("--doc", default=_docs.DOC, help="the generated document")
    parser.add_argument("train_args", nargs="*", help="extra arguments for zoo train "
                        "(after --), e.g. -- --epochs 5")
    args = parser.parse_args(argv)
    archs = args.arch or ["mlp", "cnn"]
    if not os.path.exists(ZOO):
        raise SystemExit(f"no zoo command beside {sys.executable}; install zoo in this env")

    load_before = _docs.load()
    helps = help_times(args.help_runs)
    results = {arch: cold_and_warm(arch, args.runs, args.train_args) for arch in archs}
    load_after = _docs.load()

    lines = [(f"zoo --help: median {statistics.median(helps):.3f} s, min {min(helps):.3f} s, "
             f"max {max(helps):.3f} s ({len(helps)} runs)")]
    rows = [("| command | cache | wall to result (s) | compile + cache loads (s) | "
            "training (s) | steps | test accuracy |"), "|---|---|---|---|---|---|---|"]
    for arch, r in results.items():
        for kind in ("cold", "warm"):
            rs = r[kind]
            what = "empty" if kind == "cold" else "warm (second run)"
            rows.append(f"| `zoo train --arch {arch}` ({rs[0]['dataset']}) | {what} | "
                        f"{med(rs, 'wall_s'):.2f} | {med(rs, 'compile_s'):.2f} | "
                        f"{med(rs, 'train_s'):.2f} | {rs[0]['steps']:,} | {accuracy(rs)} |")
        lines.append(f"zoo train --arch {arch}: cold {med(r['cold'], 'wall_s'):.2f} s "
                     f"(compile {med(r['cold'], 'compile_s'):.2f} s), warm "
                     f"{med(r['warm'], 'wall_s'):.2f} s (cache loads "
                     f"{med(r['warm'], 'compile_s'):.2f} s); compiled {len(r['compiled'])} "
                     f"kernels: {', '.join(r['compiled'])}")
    print("\n".join(lines))
    if args.no_write:
        return
    extra = f" -- {' '.join(args.train_args)}" if args.train_args else ""
    body = ["## Cold start", "",
            (f"`python benchmarks/coldstart.py --runs {args.runs}{extra}`: wall time of the "
            f"command to its result (medians of {args.runs} cold + warm pairs); the cold run "
            f"uses an empty `ZOO_CACHE_DIR`, the warm run the cache the cold one left. "
            f"`compile` is `compile_time_s` of `zoo train --json` (numba compiles, and cache "
            f"loads on a warm run); it is part of the wall time."), "",
            *_docs.machine_lines(load_before, load_after),
            "- versions: " + ", ".join(f"{k} {v}" for k, v in _docs.versions().items()), "",
            (f"- `zoo --help`: median {statistics.median(helps):.3f} s (min {min(helps):.3f}, "
            f"max {max(helps):.3f}, {len(helps)} runs)"), "", *rows, ""]
    for arch, r in results.items():
        body.append(f"- `{arch}` compiles {len(r['compiled'])} kernels on an empty cache: "
                    f"{', '.join(f'`{k}`' for k in r['compiled'])}")
    _docs.write_section("coldstart", "\n".join(body), args.doc)
    print(f"wrote {os.path.relpath(args.doc)}", file=sys.stderr)


if __name__ == "__main__":
    main()
