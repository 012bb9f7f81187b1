"""The run store: round trip, the ``zoo runs`` commands, and concurrent writers."""

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from zoo.cli.main import cli
from zoo.errors import ConfigError
from zoo.runstore import RunStore, headline_metric

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("ZOO_DEBUG", "ZOO_LOAD_PLUGINS", "ZOO_STRICT_PLUGINS")}
    env.update(extra)
    return env


def fake_result(arch="mlp", seed=0, accuracy=0.75, epochs=3):
    history = [{"epoch": e, "step": 10 * e, "time": 0.1 * e, "train_loss": 1.0 / e,
                "val_loss": 1.1 / e, "val_accuracy": accuracy - 0.1 / e}
               for e in range(1, epochs + 1)]
    return {"arch": arch, "dataset": "xor", "task": "classify", "params": 58, "epochs": epochs,
            "steps": 10 * epochs, "stop_reason": "max_epochs: reached 3 epochs",
            "train_loss": 0.3, "val": {"loss": 0.4, "accuracy": accuracy},
            "test": {"loss": float("nan"), "accuracy": accuracy}, "train_time_s": 1.5,
            "compile_time_s": 0.5, "checkpoint": None, "seed": seed,
            "options": {"hidden": (16,)}, "samples_per_s": 1000.0, "history": history,
            "zoo_version": "0.1.0"}


def test_round_trip_keeps_config_result_history_and_versions(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    config = {"arch": "mlp", "dataset": "xor", "seed": 0, "epochs": 3, "stop": []}
    run_id = store.record(fake_result(), config, versions={"zoo": "0.1.0", "mlp": "0.1.0"},
                          started_at="2026-01-01T00:00:00+00:00")
    run = store.get(run_id)
    assert run["kind"] == "train" and run["status"] == "ok" and run["grp"] is None
    assert (run["arch"], run["dataset"], run["seed"], run["epochs"]) == ("mlp", "xor", 0, 3)
    assert (run["metric_name"], run["metric"]) == ("accuracy", 0.75)
    assert run["config"] == config
    assert run["result"]["test"] == {"loss": None, "accuracy": 0.75}  # NaN stored as null
    assert run["result"]["options"] == {"hidden": [16]}
    assert "history" not in run["result"]
    assert [h["epoch"] for h in run["history"]] == [1, 2, 3]
    assert run["history"][1]["val_accuracy"] == pytest.approx(0.7)
    assert run["versions"] == {"zoo": "0.1.0", "mlp": "0.1.0"}
    assert run["started_at"] == "2026-01-01T00:00:00+00:00" and run["finished_at"]
    assert store.path.exists() and store.count() == 1
    # WAL is a property of the file: a later connection sees it.
    assert sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_list_filters_and_failed_rows(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    store.record(fake_result("mlp", 0), {"arch": "mlp"})
    failed = {"status": "failed", "arch": "cnn", "seed": 1, "dataset": "xor",
              "error": "ConfigError: Conv1D: kernel_size must be a positive integer"}
    store.record(failed, {"arch": "cnn", "seed": 1}, group="g1")
    store.record(fake_result("mlp", 1), {"arch": "mlp", "seed": 1}, group="g1")
    runs = store.list()
    assert [r["id"] for r in runs] == [3, 2, 1]  # most recent first
    assert [r["kind"] for r in runs] == ["compare", "compare", "train"]
    assert [r["id"] for r in store.list(group="g1")] == [3, 2]
    assert [r["id"] for r in store.list(arch="cnn")] == [2]
    assert len(store.list(limit=1)) == 1
    bad = store.get(2)
    assert bad["status"] == "failed" and bad["error"].startswith("ConfigError: Conv1D")
    assert bad["metric"] is None and bad["history"] == []
    with pytest.raises(ConfigError, match="no run 99 in"):
        store.get(99)


def test_headline_metric_prefers_accuracy_then_probe_then_r2():
    assert headline_metric("classify", {"loss": 1.0, "accuracy": 0.5}) == ("accuracy", 0.5)
    assert headline_metric("reconstruct", {"mse": 0.1, "r2": 0.8, "probe_accuracy": 0.7}) \
        == ("probe_accuracy", 0.7)
    assert headline_metric("regress", {"mse": 0.1, "r2": float("nan")}) == ("mse", 0.1)


def test_readers_never_create_a_store_and_reject_foreign_files(tmp_path):
    with pytest.raises(ConfigError, match="no run store at"):
        RunStore(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(ConfigError, match="not a zoo run store"):
        RunStore(other, create=False)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(ConfigError, match="cannot use run store"):
        RunStore(junk)
    newer = tmp_path / "newer.db"
    sqlite3.connect(newer).execute("PRAGMA user_version = 99")
    with pytest.raises(ConfigError, match="newer zoo"):
        RunStore(newer)
    with pytest.raises(ConfigError, match="does not exist"):
        RunStore(tmp_path / "no" / "such" / "dir.db")


def test_zoo_runs_list_and_show(tmp_path):
    path = tmp_path / "runs.db"
    store = RunStore(path)
    first = store.record(fake_result("mlp", 0, 0.75), {"arch": "mlp", "seed": 0})
    store.record(fake_result("cnn", 2, 0.9), {"arch": "cnn", "seed": 2}, group="g7")
    runner = CliRunner()

    result = runner.invoke(cli, ["runs", "list", "--store", str(path), "--json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    assert [r["arch"] for r in listing["runs"]] == ["cnn", "mlp"]
    assert listing["runs"][0]["grp"] == "g7"

    result = runner.invoke(cli, ["runs", "list", "--store", str(path), "--group", "g7"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["id", "finished", "kind", "arch"]
    assert len(lines) == 3 and "cnn" in lines[2] and "accuracy 0.9000" in lines[2]

    result = runner.invoke(cli, ["runs", "show", str(first), "--store", str(path)])
    assert result.exit_code == 0, result.output
    assert "mlp on xor (classify), seed 0" in result.stdout
    assert "options: hidden=16" in result.stdout
    assert "stopped: max_epochs" in result.stdout
    assert "val_accuracy" in result.stdout  # the per-epoch table

    result = runner.invoke(cli, ["runs", "show", str(first), "--store", str(path), "--json"])
    shown = json.loads(result.stdout)
    assert shown["id"] == first and len(shown["history"]) == 3

    # ZOO_STORE names the default store.
    result = runner.invoke(cli, ["runs", "list", "--json"], env={"ZOO_STORE": str(path)})
    assert len(json.loads(result.stdout)["runs"]) == 2


def test_zoo_runs_errors_are_one_line_exit_2(tmp_path):
    path = tmp_path / "runs.db"
    RunStore(path).record(fake_result(), {"arch": "mlp"})
    proc = subprocess.run([sys.executable, "-m", "zoo", "runs", "show", "42", "--store",
                           str(path)], capture_output=True, text=True, env=subprocess_env(),
                          cwd=ROOT, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"zoo: error: no run 42 in {path}"
    result = CliRunner().invoke(cli, ["runs", "list", "--store", str(tmp_path / "none.db")])
    assert result.exit_code == 0 and "no runs recorded" in result.stdout
    assert not (tmp_path / "none.db").exists()


WRITER = """
import sys, time
from zoo.runstore import RunStore
path, tag, n, start, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), \
    float(sys.argv[5])
while time.time() < start:
    time.sleep(0.001)
t0 = time.time()
store = RunStore(path, timeout=timeout)   # both processes may create the file at once
for i in range(n):
    time.sleep(0.002)  # a little work between records, as real writers have
    history = [{"epoch": e, "train_loss": 1.0 / e, "tag": tag} for e in range(1, 21)]
    store.record({"arch": tag, "seed": i, "task": "classify", "test": {"accuracy": i / n},
                  "history": history}, {"arch": tag, "seed": i}, versions={"zoo": "test"})
print(t0, time.time())
"""


@pytest.mark.parametrize("timeout", [30.0, 0.001])
def test_two_processes_writing_at_once_lose_nothing(tmp_path, timeout):
    """Both writers start at the same instant on a store neither has created; with a tiny
    busy timeout the retry loop has to do the waiting."""
    path = tmp_path / "runs.db"
    n = 150
    start = time.time() + 1.5  # both interpreters are up by then
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag, str(n), str(start),
                               str(timeout)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=subprocess_env(), cwd=ROOT)
             for tag in ("a", "b")]
    spans = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        spans.append([float(t) for t in out.split()])
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, "the two writers did not run at the same time"
    store = RunStore(path, create=False)
    runs = store.list(limit=None)
    assert len(runs) == 2 * n
    for tag in ("a", "b"):
        assert sorted(r["seed"] for r in runs if r["arch"] == tag) == list(range(n))
    # The writes interleaved, and each record is whole.
    tags = [r["arch"] for r in sorted(runs, key=lambda r: r["id"])]
    assert sum(a != b for a, b in itertools.pairwise(tags)) > 1
    epochs = store._conn.execute("SELECT run_id, COUNT(*) FROM epochs GROUP BY run_id")
    assert {count for _, count in epochs} == {20}
    assert store.get(runs[0]["id"])["history"][-1]["tag"] == runs[0]["arch"]


@pytest.mark.slow
def test_two_zoo_train_processes_at_once_are_both_recorded(tmp_path):
    path = tmp_path / "runs.db"
    env = subprocess_env(ZOO_STORE=str(path))
    procs = [subprocess.Popen([sys.executable, "-m", "zoo", "train", "--arch", "mlp",
                               "--dataset", "xor", "--epochs", "2", "-o", "hidden=8",
                               "--seed", str(seed), "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env, cwd=tmp_path)
             for seed in (0, 1)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        assert "recorded as run" in err
        outputs.append(json.loads(out))
    store = RunStore(path, create=False)
    runs = sorted(store.list(), key=lambda r: r["seed"])
    assert [(r["kind"], r["arch"], r["seed"], r["status"]) for r in runs] == [
        ("train", "mlp", 0, "ok"), ("train", "mlp", 1, "ok")]
    for run, printed in zip(runs, outputs):
        full = store.get(run["id"])
        assert full["result"]["test"] == printed["test"]
        assert full["config"]["options"] == {"hidden": "8"}
        assert len(full["history"]) == 2 and full["versions"]["mlp"]
        assert full["started_at"] <= full["finished_at"]
