"""zoo against PyTorch and JAX on DESIGN.md's six workloads, back to back, as medians and ratios.

Each of ``--runs`` rounds runs, one after the other in this job and one workload at a time,
``benchmarks/steps.py`` (zoo), ``../shared/bench/torch_ref.py`` and ``jax_ref.py`` (the peers,
with ``--peer-python``, an interpreter that has torch and jax; the peers are never dependencies
of zoo). The peers run twice per round: as they come (their own thread pools) and restricted to
one thread, since on a busy 2-core machine either can be the faster; the best peer is the best
of the four. Then it prints the medians and rewrites the ``steps`` section of
docs/benchmarks.md:

    python benchmarks/compare_peers.py --runs 5
    python benchmarks/compare_peers.py mlp cnn --runs 3 --no-write

``--threads`` instead measures zoo alone with its large GEMMs on one BLAS thread, on two,
and as the governor chooses (``ZOO_BLAS_THREADS=1``, ``2``, ``auto``), interleaved, and
rewrites the ``threads`` section. ``--busy`` runs either while another process keeps one
core busy (a Python busy loop started here), as on a shared machine, and writes the
``-busy`` section instead:

    python benchmarks/compare_peers.py --runs 3 --busy
    python benchmarks/compare_peers.py --threads --runs 3 --busy
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys

import _docs

STEPS = os.path.join(_docs.HERE, "steps.py")
WORKLOADS = ("mlp-small", "mlp", "cnn", "rnn", "lstm", "autoencoder")
# The best peer per workload measured on this machine when DESIGN.md was written (steps/s).
DESIGN_BEST = {"mlp-small": ("jax", 13253), "mlp": ("jax", 579), "cnn": ("torch", 85),
               "rnn": ("jax", 204), "lstm": ("torch", 88), "autoencoder": ("jax", 335)}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
ONE_THREAD = {**{name: "1" for name in THREAD_VARIABLES},
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}


def run_lines(argv, env_changes=None, label=None) -> dict:
    """``{workload: steps_per_s}`` from a script printing the bench README's JSON lines."""
    env = dict(os.environ)
    env.update(env_changes or {})
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    out = {}
    for line in done.stdout.splitlines():
        try:
            row = json.loads(line)
            out[row["workload"]] = float(row["steps_per_s"])
        except (ValueError, KeyError, TypeError):
            continue
    if done.returncode != 0 or not out:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"{label or argv[1]}: exit {done.returncode}: {tail}", file=sys.stderr)
    return out


def contenders(args) -> list[tuple[str, list, dict]]:
    """``(name, argv without workloads, environment changes)`` of everyone to run."""
    zoo = ("zoo", [sys.executable, STEPS, "--seconds", str(args.seconds)], {})
    if args.threads:
        return [("zoo, 1 thread", zoo[1], {"ZOO_BLAS_THREADS": "1"}),
                ("zoo, 2 threads", zoo[1], {"ZOO_BLAS_THREADS": "2"}),
                ("zoo, auto", zoo[1], {"ZOO_BLAS_THREADS": "auto"})]
    out = [zoo]
    if args.peer_python:
        for name in ("torch", "jax"):
            argv = [args.peer_python, os.path.join(args.peer_dir, f"{name}_ref.py")]
            out.append((name, argv, {}))
            if not args.no_single_thread_peers:
                out.append((f"{name}, 1-thread flags", argv, ONE_THREAD))
    return out


def measure(args) -> tuple[dict, dict]:
    """Every contender on one workload after the other, round after round.

    Returns ``{contender: {workload: [steps/s per round]}}`` and, per workload, zoo's ratio to
    the best peer of each round. The load of a shared machine drifts over minutes, so the
    contenders of a workload run within seconds of each other, in an order rotated every
    round (no one always runs right after the same neighbour).
    """
    plan = contenders(args)
    results = {name: {w: [] for w in args.workloads} for name, _, _ in plan}
    ratios = {w: [] for w in args.workloads}
    for r in range(args.runs):
        for w in args.workloads:
            k = r % len(plan)
            got = {}
            for name, argv, env in plan[k:] + plan[:k]:
                value = run_lines(argv + [w], env, f"{name} {w}").get(w)
                if value is not None:
                    got[name] = value
                    results[name][w].append(value)
            peers = [v for n, v in got.items() if not n.startswith("zoo")]
            if "zoo" in got and peers:
                ratios[w].append(got["zoo"] / max(peers))
            print(f"round {r + 1}/{args.runs} {w}: "
                  + ", ".join(f"{n} {v:.0f}" for n, v in got.items()), file=sys.stderr,
                  flush=True)
    return results, ratios


def median(values):
    return statistics.median(values) if values else None


def fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def steps_table(results: dict, workloads, ratios) -> tuple[list[str], list[str]]:
    """Markdown rows and a plain summary line per workload."""
    names = list(results)
    peers = [n for n in names if n != "zoo"]
    head = ["workload", *[f"{n} (steps/s)" for n in names], "best peer", "zoo / best peer",
            "zoo / best peer, per round", "DESIGN.md's best peer"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    summary = []
    for w in workloads:
        med = {n: median(results[n][w]) for n in names}
        zoo = med.get("zoo")
        measured = [(med[n], n) for n in peers if med[n] is not None]
        best_v, best_n = max(measured) if measured else (None, "n/a")
        ratio = f"{zoo / best_v:.2f}x" if zoo and best_v else "n/a"
        rounds = ratios.get(w) or []
        per_round = (f"median {median(rounds):.2f}x, min {min(rounds):.2f}x"
                     if rounds else "n/a")
        design_name, design_v = DESIGN_BEST[w]
        rows.append("| " + " | ".join([w, *[fmt(med[n]) for n in names],
                                       f"{best_n} {fmt(best_v)}", f"**{ratio}**", per_round,
                                       f"{design_name} {design_v:,}"]) + " |")
        summary.append(f"{w}: zoo {fmt(zoo)}, best peer {best_n} {fmt(best_v)}: {ratio} "
                       f"(per round: {per_round})")
    return rows, summary


def threads_table(results: dict, workloads, ratios=None) -> tuple[list[str], list[str]]:
    one, two, auto = list(results)
    rows = ["| workload | 1 thread (steps/s) | 2 threads (steps/s) | auto (steps/s) "
            "| auto / best of 1 and 2 |", "|---|---|---|---|---|"]
    summary = []
    for w in workloads:
        a, b, c = (median(results[n][w]) for n in (one, two, auto))
        best = max(v for v in (a, b) if v) if a or b else None
        ratio = f"{c / best:.2f}x" if c and best else "n/a"
        rows.append(f"| {w} | {fmt(a)} | {fmt(b)} | {fmt(c)} | {ratio} |")
        summary.append(f"{w}: 1 thread {fmt(a)}, 2 threads {fmt(b)}, auto {fmt(c)}: "
                       f"{ratio} of the better fixed count")
    return rows, summary


@contextlib.contextmanager
def busy_core(busy: bool):
    """With ``busy``, a child process spinning on one core for the duration of the block."""
    if not busy:
        yield
        return
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        hog.kill()
        hog.wait()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD",
                        help=f"some of {', '.join(WORKLOADS)} (default: all)")
    parser.add_argument("--runs", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="zoo's timed seconds per workload (the peers' scripts use 2)")
    parser.add_argument("--peer-python", default="/tmp/peers/bin/python",
                        help="an interpreter with torch and jax ('' for zoo alone)")
    parser.add_argument("--peer-dir", default=_docs.PEER_BENCH,
                        help="where torch_ref.py and jax_ref.py are")
    parser.add_argument("--no-single-thread-peers", action="store_true",
                        help="run the peers only as they come, not also with one thread")
    parser.add_argument("--threads", action="store_true",
                        help="zoo alone: 1, 2 and auto BLAS threads (the 'threads' section)")
    parser.add_argument("--busy", action="store_true",
                        help="keep one core busy with another process while measuring "
                             "(the '-busy' sections)")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--doc", default=_docs.DOC, help="the generated document")
    args = parser.parse_args(argv)
    args.workloads = args.workloads or list(WORKLOADS)
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; expected some of "
                     f"{', '.join(WORKLOADS)}")
    if args.peer_python and not os.path.exists(args.peer_python):
        parser.error(f"--peer-python {args.peer_python} does not exist; pass '' for zoo alone")

    with busy_core(args.busy):
        load_before = _docs.load()
        results, ratios = measure(args)
        load_after = _docs.load()

    table = threads_table if args.threads else steps_table
    rows, summary = table(results, args.workloads, ratios)
    print("\n".join(summary))
    if args.no_write:
        return
    ours = _docs.versions(modules=("numpy", "numba"))
    lines = _docs.machine_lines(load_before, load_after)
    lines.append("- zoo side: " + ", ".join(f"{k} {v}" for k, v in ours.items()))
    busy = " --busy" if args.busy else ""
    while_busy = (", while another process keeps one core busy (`--busy`: a Python busy "
                  "loop)" if args.busy else "")
    if args.threads:
        title = "## BLAS threads: zoo's large GEMMs on one, on two, and as measured"
        what = (f"`python benchmarks/compare_peers.py --threads --runs {args.runs}{busy}`: "
                f"`benchmarks/steps.py` with `ZOO_BLAS_THREADS` set to 1, 2 and `auto` (the "
                f"default: the trainer's governor chooses from the step times), interleaved"
                f"{while_busy}; medians of {args.runs} runs of {args.seconds:g} s per "
                f"workload, each run a fresh process that starts its choice from nothing.")
    else:
        title = ("## Training steps per second: zoo against PyTorch and JAX"
                 + (", one core busy" if args.busy else ""))
        if args.peer_python:
            theirs = _docs.versions(args.peer_python, ("torch", "jax", "numpy"))
            lines.append("- peer side: " + ", ".join(f"{k} {v}" for k, v in theirs.items()))
        what = (f"`python benchmarks/compare_peers.py --runs {args.runs}{busy}`: per run"
                f"{while_busy}, `benchmarks/steps.py` (zoo's `Trainer.train_step` as "
                f"`zoo train` runs it: one OpenBLAS thread, the large GEMMs on one or two as "
                f"the governor measures), `torch_ref.py` and `jax_ref.py` as they come and with "
                f"one "
                f"thread (`OMP_NUM_THREADS=1`; for JAX `XLA_FLAGS` without the multi-threaded "
                f"Eigen, which XLA's CPU runtime does not fully honour: it still used ~1.3 "
                f"cores), one "
                f"workload at a time, in an order rotated every round; medians of "
                f"{args.runs} rounds, 5 warm-up steps then 2 s each. One step = forward + loss "
                f"+ backward + SGD-momentum update, float32 (DESIGN.md section 5). 'Per round' "
                f"is zoo's ratio to the best peer of the same round (the load drifts less "
                f"within a round). The last column is the best peer DESIGN.md measured on a "
                f"quieter day.")
    body = "\n".join([title, "", what, "", *lines, "", *rows])
    section = ("threads" if args.threads else "steps") + ("-busy" if args.busy else "")
    _docs.write_section(section, body, args.doc)
    print(f"wrote {os.path.relpath(args.doc)}", file=sys.stderr)


if __name__ == "__main__":
    main()
