"""The run store: every ``zoo train`` run and every ``zoo compare`` job, in one SQLite file.

Default ``./zoo-runs.db``; ``ZOO_STORE`` or ``--store PATH`` change it, ``--no-store`` skips it.
A record holds the configuration, the result, the per-epoch metrics, the stop reason, timings,
the zoo and plugin versions, timestamps and, for compare jobs, the comparison's group id.

Several processes may write at once (two ``zoo train`` in two terminals, a comparison next to
a training run): the database is in WAL mode, each write is one ``BEGIN IMMEDIATE``
transaction, SQLite waits on a busy lock (``timeout``) and a write that still finds the
database locked is retried with backoff, so no record is lost or half written.

Example:
    >>> store = RunStore("zoo-runs.db")
    >>> run_id = store.record(result.to_dict(), config.to_dict())
    >>> store.get(run_id)["result"]["test"]
"""

from __future__ import annotations

import builtins
import json
import math
import os
import random
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

from zoo.errors import ConfigError
from zoo.jsonable import jsonable
from zoo.plugins.host import resolve_host
from zoo.userfile import require_regular

DEFAULT_STORE = "zoo-runs.db"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
RETRY_SECONDS = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,              -- 'train' or 'compare'
    grp TEXT,                        -- comparison id for compare jobs
    status TEXT NOT NULL,            -- 'ok' or 'failed'
    arch TEXT,
    dataset TEXT,
    task TEXT,
    seed INTEGER,
    metric_name TEXT,                -- the headline test metric (accuracy, r2, mse...)
    metric REAL,
    epochs INTEGER,
    steps INTEGER,
    stop_reason TEXT,
    error TEXT,
    train_time_s REAL,
    compile_time_s REAL,
    started_at TEXT,
    finished_at TEXT,
    recorded_at TEXT NOT NULL,
    zoo_version TEXT,
    config TEXT NOT NULL,            -- JSON
    result TEXT NOT NULL,            -- JSON, without the per-epoch history
    versions TEXT NOT NULL           -- JSON: {"zoo": ..., plugin: version}
);
CREATE INDEX IF NOT EXISTS runs_grp ON runs (grp);
CREATE TABLE IF NOT EXISTS epochs (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    metrics TEXT NOT NULL,           -- JSON: the history row of that epoch
    PRIMARY KEY (run_id, epoch)
);
"""

# Training settings exported beside each run (the result's resolved value, else the config's).
EXPORT_SETTINGS = ("optimizer", "lr", "batch_size", "validation_split", "clip_norm", "dtype")

_SUMMARY_COLUMNS = ("id", "kind", "grp", "status", "arch", "dataset", "task", "seed",
                    "metric_name", "metric", "epochs", "steps", "stop_reason", "error",
                    "train_time_s", "compile_time_s", "started_at", "finished_at",
                    "recorded_at", "zoo_version")


def default_store_path() -> str:
    """``$ZOO_STORE`` if set, else ``./zoo-runs.db``."""
    return os.environ.get("ZOO_STORE") or DEFAULT_STORE


def now_iso() -> str:
    """The current time as an ISO 8601 UTC timestamp (what the store keeps)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def headline_metric(task: str | None, test: dict | None) -> tuple[str | None, float | None]:
    """The one number a run is ranked by: accuracy, else probe accuracy, else r2, else mse."""
    test = test or {}
    for name in ("accuracy", "probe_accuracy", "r2", "mse", "loss"):
        value = test.get(name)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return name, float(value)
    return None, None


def plugin_versions(host=None) -> dict:
    """``{"zoo": version, plugin: version}`` for the plugins loaded in this process."""
    import zoo

    versions = {"zoo": zoo.__version__}
    host = resolve_host(host)
    for name, record in host.records.items():
        if not record.builtin:
            versions[name] = record.version
    return versions


def _dumps(value) -> str:
    return json.dumps(jsonable(value), sort_keys=True)


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class RunStore:
    """A run store in the SQLite file at ``path``.

    Args:
        path: the database file (default ``$ZOO_STORE`` or ``./zoo-runs.db``).
        create: create the file and its tables when missing; with ``create=False`` a missing
            file raises ``ConfigError`` (readers never leave an empty database behind).
        timeout: seconds SQLite waits for another writer's lock before reporting it busy.
    """

    def __init__(self, path=None, *, create: bool = True, timeout: float = BUSY_TIMEOUT_S):
        self.path = Path(path if path is not None else default_store_path())
        self.timeout = timeout
        if not create and not self.path.exists():
            raise ConfigError(f"no run store at {self.path}; runs are recorded by "
                              "'zoo train' and 'zoo compare'")
        if self.path.is_dir():
            raise ConfigError(f"run store {self.path} is a folder; expected an SQLite file")
        # SQLite would wait forever reading a FIFO: only a regular file (or none yet)
        require_regular(self.path, f"run store {self.path}", ConfigError)
        if not self.path.parent.is_dir():
            raise ConfigError(f"cannot create run store {self.path}: folder "
                              f"{self.path.parent} does not exist")
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open run store {self.path}: {exc}") from None
        self._conn.row_factory = sqlite3.Row
        try:
            self._retry(lambda: self._setup(create))  # idempotent: safe to retry whole
        except (sqlite3.Error, UnicodeDecodeError) as exc:  # a damaged file's schema text
            self._conn.close()
            raise ConfigError(f"cannot use run store {self.path}: {exc}") from None
        except BaseException:
            self._conn.close()
            raise

    def _setup(self, create: bool) -> None:
        conn = self._conn
        conn.execute("PRAGMA foreign_keys = ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        self._check_not_foreign()
        if version > SCHEMA_VERSION:
            raise ConfigError(f"run store {self.path} was written by a newer zoo (schema "
                              f"{version}; this zoo reads up to {SCHEMA_VERSION})")
        if version == SCHEMA_VERSION:
            return
        if not create:
            raise ConfigError(f"{self.path} is not a zoo run store (no runs table)")
        # WAL lets readers and one writer work at once; it is a property of the file, so only
        # the creator sets it. It is not available everywhere (some network file systems):
        # then the default rollback journal with the busy timeout still serialises writers.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                # not executescript(): it would commit the open transaction first
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _check_not_foreign(self) -> None:
        """Refuse an SQLite file another program made: zoo never adds its tables to it, and
        never reads a ``runs`` table that is not its own."""
        tables = {row[0] for row in self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")} - {"sqlite_sequence"}
        if not tables:
            return
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(runs)")}
        if "epochs" in tables and set(_SUMMARY_COLUMNS) <= columns:
            return
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise ConfigError(f"{self.path} is an SQLite database of another program (tables: "
                          f"{shown}), not a zoo run store; give --store a new file")

    def _read(self, operation):
        """Run a reading ``operation``; a damaged database is one ConfigError, not a
        traceback."""
        try:
            return self._retry(operation)
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read run store {self.path}: {exc}; expected an intact "
                              f"zoo run store") from None

    def _retry(self, operation):
        """Run ``operation``, retrying with jittered backoff while the database stays locked
        beyond SQLite's own busy timeout (for up to ``RETRY_SECONDS``)."""
        deadline = time.monotonic() + RETRY_SECONDS
        attempt = 0
        while True:
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc) or time.monotonic() > deadline:
                    raise
                attempt += 1
                time.sleep(min(0.5, 0.01 * 2 ** attempt) * (0.5 + random.random()))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- writing -----------------------------------------------------------------------------
    def record(self, result: dict, config: dict, group: str | None = None, *,
               kind: str | None = None, started_at: str | None = None,
               finished_at: str | None = None, versions: dict | None = None) -> int:
        """Record one run in one transaction; returns its id.

        Args:
            result: a ``RunResult.to_dict()``, or a failed job's row (``{"error": ...}``).
            config: the ``RunConfig.to_dict()`` (or compare job) the run was made from.
            group: the comparison id for compare jobs.
            kind: ``"train"`` or ``"compare"`` (default: compare when ``group`` is given).
            started_at, finished_at: ISO timestamps (default: the result's, else now).
            versions: zoo and plugin versions (default: ``result["versions"]``, else this
                process's plugins).
        """
        result = dict(result)
        history = result.pop("history", None) or []
        versions = versions or result.pop("versions", None) or plugin_versions()
        result.pop("versions", None)
        failed = bool(result.get("error"))
        metric_name, metric = headline_metric(result.get("task"), result.get("test"))
        recorded = now_iso()
        row = {
            "kind": kind or ("compare" if group else "train"),
            "grp": group,
            "status": "failed" if failed else "ok",
            "arch": result.get("arch", config.get("arch")),
            "dataset": result.get("dataset", config.get("dataset")),
            "task": result.get("task"),
            "seed": result.get("seed", config.get("seed")),
            "metric_name": metric_name,
            "metric": metric,
            "epochs": result.get("epochs"),
            "steps": result.get("steps"),
            "stop_reason": result.get("stop_reason"),
            "error": result.get("error"),
            "train_time_s": result.get("train_time_s"),
            "compile_time_s": result.get("compile_time_s"),
            "started_at": started_at or result.get("started_at"),
            "finished_at": finished_at or result.get("finished_at") or recorded,
            "recorded_at": recorded,
            "zoo_version": result.get("zoo_version") or versions.get("zoo"),
            "config": _dumps(config),
            "result": _dumps(result),
            "versions": _dumps(versions),
        }
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        epochs = [(int(h.get("epoch", i + 1)), _dumps(h)) for i, h in enumerate(history)]

        def write():
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})",
                                   tuple(row.values()))
                run_id = cur.lastrowid
                conn.executemany("INSERT OR REPLACE INTO epochs (run_id, epoch, metrics) "
                                 "VALUES (?, ?, ?)", [(run_id, e, m) for e, m in epochs])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return run_id

        return self._retry(write)

    # -- reading -----------------------------------------------------------------------------
    def list(self, limit: int | None = 20, *, group: str | None = None,
             arch: str | None = None) -> list[dict]:
        """The most recent runs first: one summary dict per run (no config, no history)."""
        where: list[str] = []
        args: list[object] = []
        if group:
            where.append("grp = ?")
            args.append(group)
        if arch:
            where.append("arch = ?")
            args.append(arch)
        sql = f"SELECT {', '.join(_SUMMARY_COLUMNS)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [dict(r) for r in self._read(lambda: self._conn.execute(sql, args).fetchall())]

    def get(self, run_id: int) -> dict:
        """One run in full: the summary fields plus ``config``, ``result``, ``versions`` and
        ``history`` (the per-epoch metric rows). Raises ``ConfigError`` for an unknown id."""
        if isinstance(run_id, bool) or not isinstance(run_id, int) or not 0 < run_id < 2 ** 63:
            raise ConfigError(f"no run {run_id} in {self.path}; run ids are positive integers "
                              "(zoo runs list)")
        row = self._read(lambda: self._conn.execute(
            "SELECT * FROM runs WHERE id = ?", (int(run_id),)).fetchone())
        if row is None:
            raise ConfigError(f"no run {run_id} in {self.path}")
        run = dict(row)
        epochs = self._read(lambda: self._conn.execute(
            "SELECT metrics FROM epochs WHERE run_id = ? ORDER BY epoch",
            (int(run_id),)).fetchall())
        try:
            for key in ("config", "result", "versions"):
                run[key] = json.loads(run[key])
            run["history"] = [json.loads(e[0]) for e in epochs]
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            raise ConfigError(f"run {run_id} in {self.path} is damaged ({type(exc).__name__}: "
                              f"{str(exc)[:80]}); expected JSON records") from None
        return run

    def count(self) -> int:
        return self._read(lambda: self._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    def delete(self, run_id: int) -> None:
        """Delete one run and its per-epoch rows. Raises ``ConfigError`` for an unknown id."""

        def remove():
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM epochs WHERE run_id = ?", (int(run_id),))
                gone = conn.execute("DELETE FROM runs WHERE id = ?", (int(run_id),)).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return gone

        if not self._retry(remove):
            raise ConfigError(f"no run {run_id} in {self.path}")

    def export_rows(self, *, group: str | None = None,
                    arch: str | None = None) -> builtins.list[dict]:
        """Every matching run as one flat row, oldest first: the summary fields, the training
        settings, the options (JSON) and each test and validation metric (``test_accuracy``,
        ``val_loss``...). What ``zoo runs export --format csv`` writes."""
        rows = []
        for summary in reversed(self.list(None, group=group, arch=arch)):
            run = self.get(summary["id"])
            config, result = run["config"], run["result"]
            row = {k: run[k] for k in _SUMMARY_COLUMNS}
            for key in EXPORT_SETTINGS:
                row[key] = result.get(key, config.get(key))
            row["params"] = result.get("params")
            row["options"] = _dumps(result.get("options") or config.get("options") or {})
            row["stop"] = "; ".join(config.get("stop") or [])
            for split in ("test", "val"):
                for name, value in (result.get(split) or {}).items():
                    row[f"{split}_{name}"] = value
            rows.append(row)
        return rows
