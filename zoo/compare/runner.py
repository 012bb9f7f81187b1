"""Compare architectures on one dataset: the same split, budget and stopping rules, several seeds.

A job is one (architecture, seed) pair described by value: a plain dict holding the
``RunConfig`` fields (the dataset by name or absolute path). ``run_job(job)`` builds everything
inside the process that runs it, so a job can be shipped to a pool worker or a Dask worker and,
re-run after a lost worker, gives the same result. It never raises: a job that fails comes back
as a row with ``status = "failed"`` and the reason.

The result summarises each architecture over its seeds (mean, std, 95% Student-t interval;
``zoo.compare.stats``) and compares the best two on their common seeds (paired t-test). Ctrl-C,
or an executor that breaks, keeps the finished jobs: the result lists the ``missing`` ones and
``save_results`` writes it like a complete one.

Executors: in the calling process (``workers=1``), a local pool of spawned processes (the
default), or Dask distributed (``scheduler="tcp://host:port"``, or ``"local"`` for a
``LocalCluster`` of single-threaded worker processes). Each worker process runs one job at a
time, so numba's parallel layer is never entered from two threads at once.

Example:
    >>> comparison = Comparison(["mlp", "cnn"], seeds=[0, 1, 2], dataset="mnist1d")
    >>> result = comparison.run()
    >>> [(s["arch"], s["metrics"]["accuracy"]["mean"]) for s in result["summary"]]
    >>> save_results(result, "zoo-compare-out")
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import socket
import threading
import time
import traceback
import warnings
from collections import Counter
from datetime import datetime
from pathlib import Path

from zoo import checks
from zoo.atomic import atomic_open
from zoo.compare import stats
from zoo.errors import ConfigError
from zoo.jsonable import jsonable
from zoo.kernels.threads import available_cpus, worker_environment
from zoo.runstore import now_iso, plugin_versions

# Job keys that are not RunConfig fields.
JOB_EXTRAS = ("group", "index")
# Test metrics summarised per architecture; the first present decides the ranking.
METRICS = ("accuracy", "probe_accuracy", "r2", "mse")
MAXIMISED = {"accuracy": True, "probe_accuracy": True, "r2": True, "mse": False}
# A job whose worker process dies while it runs alone is given up after this many deaths.
POOL_MAX_DEATHS = 2

# One zoo job at a time per process, whatever the executor's thread count: numba's parallel
# layer must not be entered from several threads at once (a Dask worker may have several).
_RUN_LOCK = threading.Lock()


# -- jobs ------------------------------------------------------------------------------------
def config_from_job(job: dict):
    """The ``RunConfig`` a job describes."""
    from zoo.run import RunConfig

    fields = {k: v for k, v in job.items() if k not in JOB_EXTRAS}
    fields["stop"] = tuple(fields.get("stop") or ())
    fields["options"] = dict(fields.get("options") or {})
    return RunConfig(**fields)


def failure_row(job: dict, error: str, details: str | None = None) -> dict:
    """The row of a job that did not produce a result."""
    return {"status": "failed", "arch": job.get("arch"), "seed": job.get("seed"),
            "dataset": job.get("dataset"), "options": dict(job.get("options") or {}),
            "error": error, "traceback": details}


def run_job(job: dict) -> dict:
    """Run one job and return its row: the ``RunResult`` dict plus status, timestamps and
    versions, or a failure row naming the reason. Never raises (except on Ctrl-C)."""
    with _RUN_LOCK:
        started, t0 = now_iso(), time.perf_counter()
        try:
            from zoo.run import train

            with warnings.catch_warnings():  # as in the CLI: checked, not printed
                warnings.simplefilter("ignore", RuntimeWarning)
                row = {"status": "ok", **train(config_from_job(job)).to_dict()}
        except Exception as exc:  # noqa: BLE001 - a bad option, a raising plugin: its row
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            row = failure_row(job, f"{type(exc).__name__}: {message}".rstrip(": "),
                              traceback.format_exc(limit=-8))
        row.update(started_at=started, finished_at=now_iso(),
                   wall_time_s=round(time.perf_counter() - t0, 4),
                   worker=f"{socket.gethostname()}:{os.getpid()}")
    try:
        row["versions"] = plugin_versions()
    except Exception:  # noqa: BLE001 - versions are a courtesy; never lose a result
        row["versions"] = {}
    return row


def interrupted(row: dict) -> bool:
    return str(row.get("stop_reason") or "").startswith("interrupted")


def complete_row(row: dict | None, job: dict, stopped_by_user: bool,
                 lost: str | None = None) -> dict:
    """A job's final row once the executor returned.

    A job that never reported is ``missing`` after Ctrl-C or when the executor itself broke
    (``lost`` says how), and ``failed`` otherwise; one that Ctrl-C stopped midway is
    ``interrupted``: its partial history is kept, but its numbers are not a finished run's and
    stay out of the statistics.
    """
    if row is None:
        if stopped_by_user or lost:
            reason = lost or "the comparison was interrupted"
            return dict(failure_row(job, f"not finished: {reason}"), status="missing")
        return failure_row(job, "the job did not report a result")
    if row["status"] == "ok" and interrupted(row):
        return dict(row, status="interrupted")
    return row


class Comparison:
    """A planned comparison: one job per (architecture, seed), checked before anything runs.

    Args:
        archs: architecture names (aliases resolve to the registered name).
        seeds: one job per seed and architecture.
        dataset: a registered dataset name or a path to user data.
        options: per-architecture options, ``{"mlp": {"hidden": "16"}}``.
        **training: the other ``RunConfig`` fields shared by every job (``epochs``,
            ``batch_size``, ``optimizer``, ``lr``, ``stop``, ``validation_split``,
            ``clip_norm``, ``dtype``).

    Raises ``ConfigError`` / ``DataError`` (the CLI's exit code 2) for anything that can be
    known without training: unknown names, options an architecture does not have or whose
    value does not parse, bad training values, malformed ``stop`` specs, a dataset that does not
    load, or an architecture that cannot take the dataset. What only building or training can
    tell (a layer refusing a value, a plugin that raises) fails that job's row instead.
    """

    def __init__(self, archs, seeds=(0, 1, 2), *, dataset=None, options=None, host=None,
                 group: str | None = None, **training):
        from zoo.data.load import load_dataset
        from zoo.plugins import resolve_host
        from zoo.run import DEFAULT_DATASET, RunConfig

        host = resolve_host(host)
        dataset = DEFAULT_DATASET if dataset is None else os.fspath(dataset)
        options = {k: dict(v) for k, v in (options or {}).items()}
        archs = [a.strip() for a in archs if a and a.strip()]
        if not archs:
            raise ConfigError("compare needs at least one architecture; received none")
        seeds = list(seeds)
        if not seeds:
            raise ConfigError("compare needs at least one seed; received none")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds must be distinct; received {seeds}")
        names = []
        for arch in archs:
            name = host.architectures.get(arch).name
            if name in names:
                raise ConfigError(f"architecture {name} is listed twice in --arch")
            names.append(name)
        for arch in options:
            if arch not in archs and arch not in names:
                raise ConfigError(f"options given for {arch}, which is not compared; "
                                  f"compared: {', '.join(names)}")
        options = {host.architectures.get(a).name: o for a, o in options.items()}

        # The data is loaded once here to check it and say what it is; each job loads it again
        # (by name or path, deterministically), so a job stays a small plain dict.
        self.data = load_dataset(dataset, host=host)
        if dataset not in host.datasets and os.path.exists(dataset):
            dataset = os.path.abspath(dataset)
        self.group = group or new_group_id()
        self.archs, self.seeds, self.dataset = names, seeds, dataset
        metric = training.get("metric")
        self.metric = metric[4:] if metric and metric.startswith("val_") else metric
        self.jobs = []
        for name in names:
            config = RunConfig(arch=name, dataset=dataset, options=options.get(name, {}),
                               seed=seeds[0], **training)
            self._check(config, host)
            for seed in seeds:
                job = dict(config.to_dict(), seed=seed, group=self.group, index=len(self.jobs))
                config_from_job(job).validate()
                self.jobs.append(job)

    def _check(self, config, host) -> None:
        from zoo.run import DEFAULT_OPTIMIZER
        from zoo.training.stopspec import parse_stop

        config.validate()
        arch = host.architectures.get(config.arch)
        try:
            arch.resolve_options(config.options)
        except ConfigError as exc:
            raise ConfigError(f"{arch.name}: {exc}") from None
        arch.task_for(self.data.task)
        if self.data.kind not in arch.data_kinds:
            raise ConfigError(f"architecture {arch.name} works on {', '.join(arch.data_kinds)} "
                              f"data; dataset {self.data.name} is {self.data.kind} data")
        for spec in config.stop:
            parse_stop(spec, host.criteria)
        from zoo import spec

        defaults = arch.training_defaults(arch.resolve_options(config.options))
        spec.parse_spec(config.optimizer or defaults.get("optimizer", DEFAULT_OPTIMIZER),
                        host.optimizers, spec.OPTIMIZER)
        for text, registry, kind in ((config.loss, host.losses, spec.LOSS),
                                     (config.schedule, host.schedules, spec.SCHEDULE)):
            if text is not None:
                spec.parse_spec(text, registry, kind).build(kind, text)
        if config.metric is not None:
            name = config.metric[4:] if config.metric.startswith("val_") else config.metric
            if name != "loss":
                spec.parse_spec(name, host.metrics, spec.METRIC)

    def run(self, *, workers: int | None = None, scheduler: str | None = None,
            store=None, on_result=None, executor=None) -> dict:
        """Run every job and return the whole result (what ``zoo compare --json`` prints).

        Args:
            workers: processes to use (``1`` runs in this process); default one per core, at
                most one per job. With ``scheduler="local"`` the number of Dask workers.
            scheduler: ``None`` for the local pool, ``"local"`` for a Dask ``LocalCluster``,
                or the address of a Dask scheduler (``tcp://host:port``).
            store: a ``RunStore`` that records each job as it finishes, or ``None``.
            on_result: ``on_result(row, done, total)``, called as each job finishes.
            executor: an executor object to use instead (``zoo.compare.tune`` passes one that
                runs nothing when Ctrl-C stopped the tuning).
        """
        rows: list[dict | None] = [None] * len(self.jobs)
        problems: list[str] = []
        store_ids: list[int] = []
        done = [0]

        def emit(index: int, row: dict) -> None:
            rows[index] = row
            done[0] += 1
            if store is not None:
                job = self.jobs[index]
                config = {k: v for k, v in job.items() if k not in JOB_EXTRAS}
                try:
                    store_ids.append(store.record(row, config, group=self.group,
                                                  kind="compare"))
                except Exception as exc:  # noqa: BLE001 - a lost record must not stop it
                    if not problems:
                        problems.append(f"could not record runs in {store.path}: "
                                        f"{type(exc).__name__}: {exc}")
            if on_result is not None:
                on_result(row, done[0], len(self.jobs))
            if interrupted(row):  # Ctrl-C reached a job (and stopped it cleanly): stop all
                raise KeyboardInterrupt

        executor = executor or make_executor(workers, scheduler, len(self.jobs))
        started, t0 = now_iso(), time.perf_counter()
        stopped_by_user, lost = False, None
        try:
            executor.run(self.jobs, emit)
        except KeyboardInterrupt:
            # Ctrl-C: keep what finished; the caller writes it and exits 130.
            stopped_by_user = True
        except Exception as exc:  # noqa: BLE001 - the executor itself broke (a lost cluster)
            lost = f"the executor stopped: {type(exc).__name__}: {exc}"
            problems.append(f"{lost}; the finished jobs are kept")
        rows = [complete_row(r, j, stopped_by_user, lost) for r, j in zip(rows, self.jobs)]
        missing = [f"{r['arch']} seed {r['seed']}" for r in rows
                   if r["status"] in ("missing", "interrupted")]
        return {
            "group": self.group,
            "dataset": self.data.name,
            "task": self.data.task,
            "archs": self.archs,
            "seeds": self.seeds,
            "config": self.shared_config(),
            "executor": executor.description,
            "started_at": started,
            "wall_time_s": round(time.perf_counter() - t0, 3),
            "jobs": len(rows),
            "failed": sum(r["status"] == "failed" for r in rows),
            "interrupted": stopped_by_user,
            "missing": missing,
            "summary": (summary := summarise(rows, self.archs, metric=self.metric)),
            "paired": compare_best_two(summary, rows),
            "rows": rows,
            "store": None if store is None else {"path": str(store.path), "ids": store_ids},
            "warnings": problems,
        }

    def shared_config(self) -> dict:
        """The settings every job shares (all job fields but arch, seed and options)."""
        first = self.jobs[0]
        return {k: v for k, v in first.items()
                if k not in ("arch", "seed", "options", *JOB_EXTRAS)}


def new_group_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S-") + os.urandom(2).hex()


def compare(archs, seeds=(0, 1, 2), *, dataset=None, options=None, workers=None,
            scheduler=None, out=None, store=None, on_result=None, **training) -> dict:
    """Plan, run and save a comparison in one call; returns the result with ``files`` added."""
    comparison = Comparison(archs, seeds, dataset=dataset, options=options, **training)
    result = comparison.run(workers=workers, scheduler=scheduler, store=store,
                            on_result=on_result)
    result["files"] = save_results(result, out)
    return result


# -- executors -------------------------------------------------------------------------------
def make_executor(workers: int | None, scheduler: str | None, n_jobs: int):
    """The executor for ``workers`` / ``scheduler`` (see ``Comparison.run``)."""
    if workers is not None:
        checks.positive_int(None, "jobs", workers)
    if scheduler:
        return DaskExecutor(scheduler, workers)
    workers = workers or min(available_cpus(), n_jobs)
    return InProcessExecutor() if workers == 1 else PoolExecutor(min(workers, n_jobs))


def check_scheduler(scheduler: str) -> None:
    """Reject a scheduler address zoo cannot use, and a missing Dask, before anything runs."""
    if scheduler != "local" and not re.fullmatch(r"[a-z0-9+.-]+://\S+|[\w.-]+:\d+", scheduler):
        raise ConfigError("scheduler must be 'local' or a Dask scheduler address such as "
                          f"tcp://host:8786; received {scheduler!r}")
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ConfigError("a Dask scheduler needs Dask distributed: "
                          "pip install 'archzoo[dask]'") from None


class _ThreadEnv:
    """Sets the thread-count variables for worker processes started inside the block.

    Worker processes read them when they import numpy and numba; this process has imported
    both already, so only the children are affected. Variables the user set are kept.
    """

    def __init__(self, workers: int):
        self.workers = workers
        self.saved: dict = {}

    def __enter__(self):
        # Each worker process's fixed share of the cores (zoo.kernels.threads).
        for name, value in worker_environment(self.workers).items():
            if name not in os.environ:
                self.saved[name] = None
                os.environ[name] = value
        return self

    def __exit__(self, *exc):
        for name in self.saved:
            os.environ.pop(name, None)
        return False


class InProcessExecutor:
    """Runs the jobs one after the other in this process."""

    description = "in this process"

    def run(self, jobs, emit) -> None:
        for index, job in enumerate(jobs):
            emit(index, run_job(job))


_START_QUEUE = None


def _pool_init(queue) -> None:
    global _START_QUEUE
    _START_QUEUE = queue


def _pool_job(index: int, job: dict) -> dict:
    # Tell the parent which job this process holds, so a dead process can be attributed.
    _START_QUEUE.put(index)
    return run_job(job)


class PoolExecutor:
    """A local pool of spawned worker processes, one job at a time each.

    Spawned rather than forked: a forked child inherits numba's threading layer and whatever
    threads the parent runs in an undefined state; a spawned one starts clean (and behaves the
    same on Linux, macOS and Windows). When a worker process dies, the pool breaks: jobs that
    had not started are simply resubmitted, and the jobs that were running are re-run alone,
    on one worker, so a job that kills its worker again is known for certain and, after
    ``POOL_MAX_DEATHS`` such deaths, reported in its row.
    """

    def __init__(self, workers: int):
        self.workers = workers
        self.description = f"on a local pool of {workers} processes"

    def run(self, jobs, emit) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        todo, suspects = list(range(len(jobs))), []
        with _ThreadEnv(self.workers):
            while todo:
                left, died, progressed = self._round(ctx, jobs, todo, self.workers, emit)
                if not progressed:  # workers die before starting anything: do not loop
                    for index in left:
                        emit(index, failure_row(jobs[index], "the worker processes died "
                                                "before starting any job"))
                    left = []
                todo, suspects = left, suspects + died
            # The jobs that were running when a worker died, one at a time on one worker:
            # a death now is the running job's own doing.
            deaths = Counter()
            while suspects:
                left, died, _ = self._round(ctx, jobs, suspects, 1, emit)
                for index in died:
                    deaths[index] += 1
                    if deaths[index] < POOL_MAX_DEATHS:
                        left.append(index)
                        continue
                    emit(index, failure_row(
                        jobs[index], "the worker process died while running this job "
                        f"{deaths[index] + 1} times (killed, out of memory or crashed); "
                        "given up"))
                suspects = left

    @staticmethod
    def _round(ctx, jobs, todo, workers, emit):
        """Run ``todo`` on a fresh pool. Returns the jobs that never started and the jobs that
        were running when a worker died (both empty unless one died), and whether any job
        started or finished."""
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        queue = ctx.SimpleQueue()
        started, broken = set(), []
        pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx,
                                   initializer=_pool_init, initargs=(queue,))
        try:
            futures = {pool.submit(_pool_job, i, jobs[i]): i for i in todo}
            for future in as_completed(futures):
                index = futures[future]
                while not queue.empty():
                    started.add(queue.get())
                try:
                    row = future.result()
                except BrokenProcessPool:
                    broken.append(index)
                    continue
                except Exception as exc:  # noqa: BLE001 - job not sent or row not returned
                    row = failure_row(jobs[index], f"could not run the job in a worker "
                                                   f"process: {type(exc).__name__}: {exc}")
                emit(index, row)
        except BaseException:
            # Ctrl-C: stop the workers now rather than wait for their jobs to end.
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        while not queue.empty():
            started.add(queue.get())
        queue.close()
        progressed = bool(started) or len(broken) < len(todo)
        return ([i for i in broken if i not in started], [i for i in broken if i in started],
                progressed)


class DaskExecutor:
    """Runs the jobs as Dask tasks, one per worker process at a time.

    ``"local"`` starts a ``LocalCluster`` of single-threaded worker processes (one per core,
    or ``workers``). A worker that dies is replaced and its task re-run by Dask (up to the
    scheduler's ``allowed-failures``); a task Dask gives up on is reported in its row.
    """

    def __init__(self, scheduler: str, workers: int | None):
        check_scheduler(scheduler)
        self.scheduler = scheduler
        self.workers = workers
        self.description = ("on a Dask LocalCluster" if scheduler == "local"
                            else f"on the Dask cluster at {scheduler}")

    def _connect(self):
        import logging

        from distributed import Client, LocalCluster

        if self.scheduler != "local":
            try:
                return Client(self.scheduler, timeout="15s"), None
            except OSError as exc:
                raise ConfigError(f"cannot reach the Dask scheduler at {self.scheduler}: "
                                  f"{exc}") from None
        n = self.workers or available_cpus()
        with warnings.catch_warnings():
            # "Port 8787 is already in use": another cluster's; any free port will do.
            warnings.filterwarnings("ignore", message="Port .* is already in use")
            # Failed and lost jobs are reported in their rows, not as log lines.
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.CRITICAL,
                                   env=worker_environment(n))
        return Client(cluster), cluster

    def run(self, jobs, emit) -> None:
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        client, cluster = self._connect()
        futures = {}
        try:
            n_workers = len(client.scheduler_info().get("workers", {}))
            self.description += f" ({n_workers} worker{'s' * (n_workers != 1)})"
            group = jobs[0].get("group", "zoo") if jobs else "zoo"
            futures = {client.submit(run_job, job, key=f"zoo-compare-{group}-{i}", pure=False): i
                       for i, job in enumerate(jobs)}
            for future in as_completed(futures):
                index = futures[future]
                try:
                    row = future.result()
                except KilledWorker as exc:
                    row = failure_row(jobs[index], "the Dask workers running this job died "
                                      f"repeatedly; Dask gave up ({exc})")
                except Exception as exc:  # noqa: BLE001 - whatever Dask raised goes in the row
                    row = failure_row(jobs[index], f"Dask could not run the job: "
                                                   f"{type(exc).__name__}: {exc}")
                emit(index, row)
        except BaseException:
            if futures:
                client.cancel(list(futures))
            raise
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


# -- aggregation -----------------------------------------------------------------------------
def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def stop_name(reason: str) -> str:
    """The criterion behind a stop reason: 'early_stopping: ...' -> 'early_stopping'."""
    match = re.match(r"\s*([A-Za-z_][\w-]*)", reason or "")
    return match.group(1) if match else (reason or "?")


def summarise(rows: list[dict], archs=None, metric: str | None = None) -> list[dict]:
    """One entry per architecture: metric mean/std over seeds and the run statistics, sorted
    best first (by ``metric`` when given, the ``--metric`` of the comparison; else accuracy or
    probe accuracy, else r2, else mse; failed architectures last)."""
    from zoo.training.metrics import is_maximised

    names = METRICS if metric in (None, *METRICS) else (metric, *METRICS)
    maximised = {**MAXIMISED, **({metric: is_maximised(metric)} if metric else {})}
    order = list(archs or dict.fromkeys(r["arch"] for r in rows))
    summary = []
    for arch in order:
        mine = [r for r in rows if r["arch"] == arch]
        ok = [r for r in mine if r["status"] == "ok"]
        metrics = {}
        for name in names:
            values = [r["test"][name] for r in ok if _finite(r.get("test", {}).get(name))]
            if values:
                metrics[name] = stats.describe(values)
        entry = {
            "arch": arch,
            "task": ok[0]["task"] if ok else None,
            "seeds": len(mine),
            "ok": len(ok),
            "failed": sum(r["status"] == "failed" for r in mine),
            "missing": sum(r["status"] in ("missing", "interrupted") for r in mine),
            "metric": metric if metric in metrics else next(
                (m for m in names if m in metrics), None),
            "metrics": metrics,
            "params": ok[0]["params"] if ok else None,
            "stop_reasons": dict(Counter(stop_name(r["stop_reason"]) for r in ok)),
            "errors": [f"seed {r['seed']}: {r['error']}" for r in mine
                       if r["status"] == "failed"],
        }
        for key in ("epochs", "steps", "train_time_s", "compile_time_s", "samples_per_s"):
            values = [r[key] for r in ok if _finite(r.get(key))]
            entry[key] = sum(values) / len(values) if values else None
        summary.append(entry)

    def rank(entry):
        metric = entry["metric"]
        if metric is None:
            return (len(names), 0.0)
        group = 0 if metric in ("accuracy", "probe_accuracy") else names.index(metric)
        mean = entry["metrics"][metric]["mean"]
        return (group, -mean if maximised[metric] else mean)

    return sorted(summary, key=rank)


def compare_best_two(summary: list[dict], rows: list[dict]) -> dict | None:
    """The paired t-test of the two best architectures on the ranking metric over the seeds
    both finished (``zoo.compare.stats.paired``), or ``None`` if there is no such pair."""
    ranked = [s for s in summary if s["metric"] is not None]
    if len(ranked) < 2 or ranked[0]["metric"] != ranked[1]["metric"]:
        return None
    metric = ranked[0]["metric"]

    def by_seed(arch):
        return {r["seed"]: r["test"][metric] for r in rows if r["arch"] == arch
                and r["status"] == "ok" and _finite((r.get("test") or {}).get(metric))}

    from zoo.training.metrics import is_maximised

    first, second = ranked[0]["arch"], ranked[1]["arch"]
    higher = MAXIMISED[metric] if metric in MAXIMISED else is_maximised(metric)
    result = stats.paired(first, by_seed(first), second, by_seed(second),
                          higher_is_better=higher)
    return None if result is None else {"metric": metric, **result}


# -- files -----------------------------------------------------------------------------------
ROW_FIELDS = ("arch", "seed", "status", "task", "params", "epochs", "steps", "stop_reason",
              "train_loss", "train_time_s", "compile_time_s", "samples_per_s", "wall_time_s",
              "worker", "error")


def default_out_dir() -> Path:
    base = Path(f"zoo-compare-{datetime.now():%Y%m%d-%H%M%S}")
    path, n = base, 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}")
    return path


def _write_atomic(path: Path, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def rows_csv(rows: list[dict]) -> str:
    """Per-seed rows: identity, test and validation metrics, statistics, error."""
    metric_names = []
    for r in rows:
        for split in ("test", "val"):
            for name in r.get(split) or {}:
                if f"{split}_{name}" not in metric_names:
                    metric_names.append(f"{split}_{name}")
    fields = [*ROW_FIELDS[:3], *metric_names, *ROW_FIELDS[3:]]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        flat = dict(r)
        for split in ("test", "val"):
            for name, value in (r.get(split) or {}).items():
                flat[f"{split}_{name}"] = value
        writer.writerow(flat)
    return buffer.getvalue()


PAIRED_FIELDS = ("metric", "b", "seeds", "mean_diff", "std_diff", "ci95_low", "ci95_high",
                 "t", "df", "p", "better", "significant")


def summary_csv(summary: list[dict], paired: dict | None = None) -> str:
    """The table: one line per architecture, mean, std and the 95% interval as separate
    columns; the first line also carries the paired test against the second (``paired_*``)."""
    names = [m for m in METRICS if any(m in s["metrics"] for s in summary)]
    fields = ["rank", "arch", "task", "seeds", "failed", "missing"]
    fields += [f"{m}_{k}" for m in names for k in ("mean", "std", "ci95_low", "ci95_high")]
    fields += ["params", "epochs", "steps", "stop_reasons", "train_time_s", "compile_time_s",
               "samples_per_s"]
    # The paired test of the best two rows, on the first row (against the second).
    fields += [f"paired_{k}" for k in PAIRED_FIELDS]
    # With --tune: the chosen setting, its validation score and the budget (zoo.compare.tune).
    tuned = any("tuned" in s for s in summary)
    fields += ["tuned", "tuned_val", "tune_trials"] if tuned else []
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for rank, s in enumerate(summary, 1):
        flat = dict(s, rank=rank, stop_reasons="; ".join(
            f"{k} x{v}" for k, v in s["stop_reasons"].items()))
        if tuned:
            from zoo.compare.tune import setting_text

            flat["tuned"] = setting_text(s["tuned"]) if s.get("tuned") else ""
        for m in names:
            if m in s["metrics"]:
                flat[f"{m}_mean"] = s["metrics"][m]["mean"]
                flat[f"{m}_std"] = s["metrics"][m]["std"]
                if s["metrics"][m].get("ci95"):
                    flat[f"{m}_ci95_low"], flat[f"{m}_ci95_high"] = s["metrics"][m]["ci95"]
        if rank == 1 and paired:
            flat.update({f"paired_{k}": paired[k] for k in PAIRED_FIELDS if k not in
                         ("seeds", "ci95_low", "ci95_high")})
            flat["paired_seeds"] = " ".join(map(str, paired["seeds"]))
            flat["paired_ci95_low"], flat["paired_ci95_high"] = paired["ci95"]
        writer.writerow(flat)
    return buffer.getvalue()


def save_results(result: dict, out=None) -> dict:
    """Write ``results.csv`` (per seed), ``summary.csv`` (the table), ``results.json``
    (everything) and ``curves.png`` into ``out`` (default ``./zoo-compare-<time>``).

    Returns ``{"dir", "results.csv", "summary.csv", "results.json", "curves.png", "note"}``;
    ``curves.png`` is ``None`` and ``note`` says why when matplotlib is not installed.
    """
    out = Path(out) if out is not None else default_out_dir()
    out.mkdir(parents=True, exist_ok=True)
    files = {"dir": str(out)}
    _write_atomic(out / "results.csv", rows_csv(result["rows"]).encode())
    _write_atomic(out / "summary.csv",
                  summary_csv(result["summary"], result.get("paired")).encode())
    files["results.csv"] = str(out / "results.csv")
    files["summary.csv"] = str(out / "summary.csv")
    files["results.json"] = str(out / "results.json")
    if result.get("tuning"):
        from zoo.compare.tune import trials_csv

        _write_atomic(out / "trials.csv", trials_csv(result["tuning"]).encode())
        files["trials.csv"] = str(out / "trials.csv")
    try:
        from zoo.compare.plot import plot_curves

        plot_curves(result, out / "curves.png")
        files["curves.png"], files["note"] = str(out / "curves.png"), None
    except ImportError:
        files["curves.png"] = None
        files["note"] = ("curves.png not written: matplotlib is not installed "
                         "(pip install 'archzoo[plot]')")
    payload = dict(result, files=files)
    _write_atomic(out / "results.json",
                  json.dumps(jsonable(payload), indent=1, default=str).encode())
    return files
