"""zoo compare --tune on a real Dask cluster, started with the ``dask`` command line (a
scheduler and two single-threaded worker processes on localhost), gives the same trials, the
same chosen settings and the same per-seed results as a local pool of processes."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from zoo.cli.main import cli

pytest.importorskip("distributed")

TUNE = ["compare", "--arch", "mlp,cnn", "--tune", "8", "--seeds", "3", "--dataset", "xor",
        "--epochs", "2", "--batch-size", "32", "--no-store", "--json"]


def dask_command() -> str:
    """The ``dask`` script of the Python running the tests (its venv's), else the PATH's."""
    beside = Path(sys.executable).parent / "dask"
    found = str(beside) if beside.exists() else shutil.which("dask")
    if found is None:
        pytest.skip("the dask command line is not installed")
    return found


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def dask_cluster(tmp_path):
    """``dask scheduler`` and ``dask worker --nworkers 2 --nthreads 1`` on localhost; yields
    the scheduler's address and stops both (and the workers they started) afterwards."""
    from distributed import Client

    dask = dask_command()
    info = tmp_path / "scheduler.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    logs = open(tmp_path / "dask.log", "wb")
    common = {"env": env, "stdout": logs, "stderr": subprocess.STDOUT, "cwd": tmp_path}
    processes = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                   "--no-dashboard", "--scheduler-file", str(info)], **common)]
    try:
        deadline = time.monotonic() + 60
        while not info.exists() or not info.read_text().strip():
            if processes[0].poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dask scheduler did not start: "
                            f"{(tmp_path / 'dask.log').read_text()[-2000:]}")
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        processes.append(subprocess.Popen(
            [dask, "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard",
             "--host", "127.0.0.1", "--local-directory", str(tmp_path / "workers"),
             "--death-timeout", "30"], **common))
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        for process in reversed(processes):  # the workers first, then the scheduler
            stop(process)
        logs.close()


def fingerprint(r: dict) -> tuple:
    history = [{k: v for k, v in h.items() if k != "time"} for h in r["history"]]
    return (r["arch"], r["seed"], r["status"], r["options"], r["lr"], r["batch_size"],
            r["epochs"], r["train_loss"], json.dumps(r["val"], sort_keys=True),
            json.dumps(r["test"], sort_keys=True), json.dumps(history, sort_keys=True))


def trial_fingerprint(r: dict) -> tuple:
    return (r["arch"], r["trial"], json.dumps(r["setting"]), r["status"], r["epochs"],
            r["train_loss"], json.dumps(r["val"], sort_keys=True))


def run(tmp_path, name, *executor) -> dict:
    result = CliRunner().invoke(cli, [*TUNE, *executor, "--out", str(tmp_path / name)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
def test_tuning_on_a_dask_cluster_matches_local_processes(dask_cluster, tmp_path):
    on_dask = run(tmp_path, "dask", "--scheduler", dask_cluster)
    local = run(tmp_path, "local", "-j", "2")
    assert on_dask["tuning"]["executor"] == f"on the Dask cluster at {dask_cluster} (2 workers)"
    assert local["tuning"]["executor"] == "on a local pool of 2 processes"
    # 8 trials for each of the two architectures, then 3 seeds each.
    assert len(on_dask["tuning"]["rows"]) == 16 and on_dask["jobs"] == 6
    assert on_dask["tuning"]["archs"] == local["tuning"]["archs"]
    assert [trial_fingerprint(r) for r in on_dask["tuning"]["rows"]] == \
        [trial_fingerprint(r) for r in local["tuning"]["rows"]]
    assert [fingerprint(r) for r in on_dask["rows"]] == [fingerprint(r) for r in local["rows"]]
    # Every trial and job ran in a worker process of the cluster, none in this one.
    workers = {r["worker"] for r in [*on_dask["rows"], *on_dask["tuning"]["rows"]]}
    assert workers and not any(w.endswith(f":{os.getpid()}") for w in workers), workers
