"""zoo against PyTorch and JAX on the six canonical workloads, interleaved, medians and ratios.

Each of ``--runs`` rounds runs, one after the other in this job and one workload at a time,
``steps.py`` (zoo), ``peer_torch.py`` and ``peer_jax.py`` (the peers, with ``--peer-python``,
an interpreter that has torch and jax; the peers are never dependencies of zoo). The peers run
twice per round: as they come (their own thread pools) and restricted to one thread, since on
a busy 2-core machine either can be the faster; the best peer is the best of the four. Then
it prints the medians and rewrites the ``steps`` section of docs/benchmarks.md
(``steps-haswell`` with ``--coretype Haswell``: every contender runs with
``OPENBLAS_CORETYPE=Haswell``, which selects zoo's OpenBLAS kernel family; the peers' own
libraries, oneDNN/MKL and XLA/Eigen, choose theirs as they do):

    python benchmarks/compare_peers.py --runs 5
    python benchmarks/compare_peers.py --runs 5 --coretype Haswell
    python benchmarks/compare_peers.py mlp cnn --runs 3 --no-write

``--threads`` instead measures zoo alone with its large GEMMs on one BLAS thread, on two,
and as the governor chooses (``ZOO_BLAS_THREADS=1``, ``2``, ``auto``), interleaved, and
rewrites the ``threads`` section. ``--busy`` runs either while another process keeps one
core busy (a Python busy loop started here), as on a shared machine, and writes the
``-busy`` section instead:

    python benchmarks/compare_peers.py --runs 3 --busy
    python benchmarks/compare_peers.py --threads --runs 3 --busy

``--isa avx2`` runs every contender as on a CPU without AVX-512, the commonest kind, on one
that has it: zoo's kernels compiled for AVX2 (``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES``,
``zoo.kernels.sgemm.avx2_target``), OpenBLAS's Haswell kernels, PyTorch's ATen, MKL and
oneDNN capped at AVX2 (``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS``,
``ONEDNN_MAX_CPU_ISA``) and XLA's code generation too (``--xla_cpu_max_isa``); it writes the
``-avx2`` sections:

    python benchmarks/compare_peers.py --runs 5 --isa avx2

``--machine NAME`` appends ``-NAME`` to the section it writes, so that a second machine's
tables (another CPU vendor, say) stand beside the first's instead of replacing them:

    python benchmarks/compare_peers.py --runs 5 --machine epyc
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
import _workloads

STEPS = os.path.join(_docs.HERE, "steps.py")
WORKLOADS = tuple(_workloads.WORKLOADS)
# zoo / best peer wanted: 2x on mlp-small, 1.5x on the others.
TARGET = {"mlp-small": 2.0}
DEFAULT_TARGET = 1.5
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
ONE_THREAD = {**{name: "1" for name in THREAD_VARIABLES},
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}


CORETYPE = [None]  # --coretype, for every contender
ISA_ENV = [{}]  # --isa's environment, for every contender


def isa_environment(isa: str | None) -> dict:
    """The environment that caps every contender at ``isa`` (only ``avx2``), or {}."""
    if isa is None:
        return {}
    from zoo.kernels import sgemm

    target = sgemm.avx2_target()
    if target is None:
        raise SystemExit("--isa avx2: this CPU has no AVX-512; its own tables are AVX2's")
    return {**target, "OPENBLAS_CORETYPE": "Haswell", "ATEN_CPU_CAPABILITY": "avx2",
            "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
            "XLA_FLAGS": "--xla_cpu_max_isa=AVX2"}


def environment(env_changes=None) -> dict:
    """This process's environment with ``env_changes``, ``--isa``'s and ``--coretype``'s (the
    XLA flags of both kept)."""
    env = dict(os.environ)
    for changes in (ISA_ENV[0], env_changes or {}):
        for name, value in changes.items():
            if name == "XLA_FLAGS" and env.get(name):
                value = f"{env[name]} {value}"
            env[name] = value
    if CORETYPE[0]:
        env["OPENBLAS_CORETYPE"] = CORETYPE[0]
    return env


def run_lines(argv, env_changes=None, label=None) -> dict:
    """``{workload: steps_per_s}`` from a script printing the bench README's JSON lines."""
    env = environment(env_changes)
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


def measure_peak() -> dict:
    """``{threads: peak.py's row}``: the limit (``gflops``), numpy's SGEMM in this kernel
    family and zoo's sgemm, in GFLOP/s."""
    env = environment()
    done = subprocess.run([sys.executable, os.path.join(_docs.HERE, "peak.py")],
                          capture_output=True, text=True, env=env, check=False)
    peak = {}
    for line in done.stdout.splitlines():
        try:
            row = json.loads(line)
            peak[int(row["threads"])] = {key: float(row[key])
                                         for key in ("gflops", "numpy", "zoo")}
        except (ValueError, KeyError, TypeError):
            continue
    return peak


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
            argv = [args.peer_python, os.path.join(_docs.HERE, f"peer_{name}.py"),
                    "--seconds", str(args.seconds)]
            out.append((name, argv, {}))
            if not args.no_single_thread_peers:
                out.append((f"{name}, 1-thread flags", argv, ONE_THREAD))
    return out


def warm_numba_cache(workloads) -> None:
    """One short untimed run of each workload on one and on two threads, so that numba's
    cache holds every kernel a round can call: a kernel compiled inside a timed run (the
    two-thread path, once the governor tries it) cost a first round up to 99% of its steps."""
    for count in ("1", "2"):
        run_lines([sys.executable, STEPS, "--seconds", "0.2", *workloads],
                  {"ZOO_BLAS_THREADS": count}, f"warm-up on {count} thread(s)")


def measure(args) -> tuple[dict, dict]:
    """Every contender on one workload after the other, round after round.

    Returns ``{contender: {workload: [steps/s per round]}}`` and, per workload, zoo's ratio to
    the best peer of each round. The load of a shared machine drifts over minutes, so the
    contenders of a workload run within seconds of each other, in an order rotated every
    round (no one always runs right after the same neighbour).
    """
    plan = contenders(args)
    warm_numba_cache(args.workloads)
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


def steps_table(results: dict, workloads, ratios, limit=None) -> tuple[list[str], list[str]]:
    """Markdown rows and a plain summary line per workload. ``limit``: the machine's fp32
    GFLOP/s on all cores, for zoo's share of it (products only, ``PRODUCT_FLOPS``)."""
    names = list(results)
    peers = [n for n in names if n != "zoo"]
    head = ["workload", *[f"{n} (steps/s)" for n in names], "best peer", "zoo / best peer",
            "zoo / best peer, per round", "zoo GFLOP/s (products)", "of the fp32 limit",
            "target"]
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
        target = TARGET.get(w, DEFAULT_TARGET)
        gflops = zoo * _workloads.PRODUCT_FLOPS[w] / 1e9 if zoo else None
        share = gflops / limit if gflops and limit else None
        met = "met" if zoo and best_v and zoo / best_v >= target else "**not met**"
        if met != "met" and share is not None and share >= 0.9:
            met = "within 10% of the fp32 limit"
        rows.append("| " + " | ".join([w, *[fmt(med[n]) for n in names],
                                       f"{best_n} {fmt(best_v)}", f"**{ratio}**", per_round,
                                       fmt(gflops), f"{share:.0%}" if share else "n/a",
                                       f"{target:g}x: {met}"]) + " |")
        summary.append(f"{w}: zoo {fmt(zoo)}, best peer {best_n} {fmt(best_v)}: {ratio} "
                       f"(per round: {per_round})")
    return rows, summary


def threads_table(results: dict, workloads, ratios=None) -> tuple[list[str], list[str]]:
    one, two, auto = list(results)
    rows = [("| workload | 1 thread (steps/s) | 2 threads (steps/s) | auto (steps/s) "
             "| auto / best of 1 and 2 |"), "|---|---|---|---|---|"]
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


def section_name(args) -> str:
    """The docs/benchmarks.md section a run writes: ``steps`` or ``threads``, then what
    sets it apart (``-haswell``, ``-busy``, ``-epyc``...)."""
    return (("threads" if args.threads else "steps")
            + (f"-{args.coretype.lower()}" if args.coretype else "")
            + (f"-{args.isa}" if args.isa else "")
            + ("-busy" if args.busy else "")
            + (f"-{args.machine.lower()}" if args.machine else ""))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD",
                        help=f"some of {', '.join(WORKLOADS)} (default: all)")
    parser.add_argument("--runs", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="zoo's timed seconds per workload (the peers' scripts use 2)")
    parser.add_argument("--peer-python",
                        default=os.environ.get("ZOO_PEER_PYTHON", "/work/peers-venv/bin/python"),
                        help="an interpreter with torch and jax ('' for zoo alone; default "
                             "$ZOO_PEER_PYTHON or /work/peers-venv/bin/python)")
    parser.add_argument("--coretype", default=None, metavar="FAMILY",
                        help="OPENBLAS_CORETYPE for every contender (Haswell, SkylakeX...)")
    parser.add_argument("--isa", default=None, choices=["avx2"],
                        help="every contender capped at AVX2 on an AVX-512 CPU (zoo's kernels "
                             "compiled for it, the peers' libraries told so)")
    parser.add_argument("--no-single-thread-peers", action="store_true",
                        help="run the peers only as they come, not also with one thread")
    parser.add_argument("--threads", action="store_true",
                        help="zoo alone: 1, 2 and auto BLAS threads (the 'threads' section)")
    parser.add_argument("--busy", action="store_true",
                        help="keep one core busy with another process while measuring "
                             "(the '-busy' sections)")
    parser.add_argument("--machine", default=None, metavar="NAME",
                        help="a short name for this machine, for a second machine's tables "
                             "beside the first's (the sections end in '-NAME')")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--doc", default=_docs.DOC, help="the generated document")
    args = parser.parse_args(argv)
    args.workloads = args.workloads or list(WORKLOADS)
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; expected some of "
                     f"{', '.join(WORKLOADS)}")
    if args.machine is not None and not (args.machine.isascii() and args.machine.isalnum()):
        parser.error(f"--machine expects letters and digits (a section name); received "
                     f"{args.machine!r}")
    if args.peer_python and not os.path.exists(args.peer_python):
        parser.error(f"--peer-python {args.peer_python} does not exist; pass '' for zoo alone")

    CORETYPE[0] = args.coretype
    ISA_ENV[0] = isa_environment(args.isa)
    with busy_core(args.busy):
        load_before = _docs.load()
        peak = measure_peak() if not args.threads else {}
        results, ratios = measure(args)
        load_after = _docs.load()

    if args.threads:
        rows, summary = threads_table(results, args.workloads, ratios)
    else:
        rows, summary = steps_table(results, args.workloads, ratios,
                                    max(row["gflops"] for row in peak.values()) if peak else None)
    print("\n".join(summary))
    if args.no_write:
        return
    ours = _docs.versions(modules=("numpy", "numba"))
    environ = environment()
    lines = _docs.machine_lines(load_before, load_after, environ)
    if args.isa:
        lines.insert(3, "- instruction set: every contender capped at AVX2 (`--isa avx2`): zoo's "
                        "kernels compiled for it, OpenBLAS's Haswell kernels, "
                        "`ATEN_CPU_CAPABILITY=avx2`, `MKL_ENABLE_INSTRUCTIONS=AVX2`, "
                        "`ONEDNN_MAX_CPU_ISA=AVX2`, XLA's `--xla_cpu_max_isa=AVX2`")
    lines.append("- zoo side: " + ", ".join(f"{k} {v}" for k, v in ours.items()))
    busy = ((f" --coretype {args.coretype}" if args.coretype else "")
            + (f" --isa {args.isa}" if args.isa else "")
            + (" --busy" if args.busy else "")
            + (f" --machine {args.machine}" if args.machine else ""))
    on = f", machine {args.machine}" if args.machine else ""
    while_busy = (", while another process keeps one core busy (`--busy`: a Python busy "
                  "loop)" if args.busy else "")
    if args.threads:
        title = ("## Threads: zoo's blocks on one, on two, and as measured"
                 + (f", OpenBLAS kernel family {args.coretype}" if args.coretype else "")
                 + (", one core busy" if args.busy else "") + on)
        what = (f"`python benchmarks/compare_peers.py --threads --runs {args.runs}{busy}`: "
                f"`benchmarks/steps.py` with `ZOO_BLAS_THREADS` set to 1, 2 and `auto` (the "
                f"default: the trainer's governor chooses from the step times), interleaved"
                f"{while_busy}; medians of {args.runs} runs of {args.seconds:g} s per "
                f"workload, each run a fresh process that starts its choice from nothing.")
    else:
        title = ("## Training steps per second: zoo against PyTorch and JAX"
                 + (f", OpenBLAS kernel family {args.coretype}" if args.coretype else "")
                 + (", AVX2 only" if args.isa else "")
                 + (", one core busy" if args.busy else "") + on)
        if peak:
            lines.append("- fp32 limit (`benchmarks/peak.py`, SGEMM 2048^3, best of 5; the larger "
                         "of numpy's on all cores and zoo's `sgemm` on one core times the "
                         "cores): " + ", ".join(
                             f"{row['gflops']:,.0f} GFLOP/s on {t} core{'s' * (t > 1)} "
                             f"(numpy {row['numpy']:,.0f}, zoo {row['zoo']:,.0f})"
                             for t, row in sorted(peak.items())))
        if args.peer_python:
            theirs = _docs.versions(args.peer_python, ("torch", "jax", "numpy"))
            lines.append("- peer side: " + ", ".join(f"{k} {v}" for k, v in theirs.items()))
        what = (f"`python benchmarks/compare_peers.py --runs {args.runs}{busy}`: per run"
                f"{while_busy}, `benchmarks/steps.py` (zoo's `Trainer.train_step` as "
                f"`zoo train` runs it: BLAS on one thread, zoo's blocked products and recurrent "
                f"loops on one or two threads as the governor measures), `peer_torch.py` and "
                f"`peer_jax.py` as they come and with one thread (`OMP_NUM_THREADS=1`; for JAX "
                f"`XLA_FLAGS` without the multi-threaded Eigen, which XLA's CPU runtime does "
                f"not fully honour), one workload at a time, in an order rotated every round; "
                f"medians of {args.runs} rounds, 5 warm-up steps then {args.seconds:g} s each. "
                f"One step = forward + loss + backward + SGD-momentum update, float32 "
                f"(`benchmarks/_workloads.py`). 'Per round' is zoo's ratio to the best peer of "
                f"the same round (the load drifts less within a round). 'zoo GFLOP/s' counts "
                f"the step's matrix products only (`PRODUCT_FLOPS`), against the fp32 limit "
                f"on all cores. Target: 2x the best peer on mlp-small, 1.5x on the others, or "
                f"within 10% of the fp32 limit.")
    body = "\n".join([title, "", what, "", *lines, "", *rows])
    _docs.write_section(section_name(args), body, args.doc)
    print(f"wrote {os.path.relpath(args.doc)}", file=sys.stderr)


if __name__ == "__main__":
    main()
