"""Ctrl-C in ``zoo compare`` keeps the finished jobs: a real process, a real SIGINT."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

# linear on xor finishes in a second; the wide mlp would take minutes, so it is what Ctrl-C
# interrupts. The epoch budget is shared; the options make the difference.
ARGS = ["--arch", "linear,mlp", "--dataset", "xor", "--seed-list", "0,1", "--epochs", "3000",
        "-o", "mlp.hidden=512,512", "--no-store"]


def interrupt_after(command, env, marker, timeout=240):
    """Start ``command`` in its own process group, wait for ``marker`` on stderr, then send
    SIGINT to the group as a terminal's Ctrl-C does; return (exit code, stdout, stderr)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, start_new_session=True)
    seen, deadline = [], time.monotonic() + timeout
    try:
        for line in process.stderr:
            seen.append(line)
            if marker in line:
                break
            assert time.monotonic() < deadline, "".join(seen)
        time.sleep(1.0)  # let the slow jobs get going
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, out, "".join(seen) + err


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_writes_the_finished_jobs_and_names_the_missing_ones(jobs, tmp_path,
                                                                    subprocess_env):
    out = tmp_path / "out"
    code, stdout, stderr = interrupt_after(
        [sys.executable, "-m", "zoo", "compare", *ARGS, "--jobs", jobs, "--out", str(out)],
        subprocess_env, "linear seed 1:")
    assert code == 130, stderr
    assert "INTERRUPTED: 2 of 4 jobs finished" in stdout
    assert "missing (not finished): mlp seed 0, mlp seed 1" in stdout
    assert "zoo: interrupted; the finished jobs are saved" in stderr
    result = json.loads((out / "results.json").read_text())
    assert result["interrupted"] is True
    assert result["missing"] == ["mlp seed 0", "mlp seed 1"]
    statuses = {(r["arch"], r["seed"]): r["status"] for r in result["rows"]}
    assert statuses[("linear", 0)] == statuses[("linear", 1)] == "ok"
    assert {statuses[("mlp", 0)], statuses[("mlp", 1)]} <= {"missing", "interrupted"}
    linear = next(s for s in result["summary"] if s["arch"] == "linear")
    assert linear["ok"] == 2 and linear["metrics"]["accuracy"]["n"] == 2
    mlp = next(s for s in result["summary"] if s["arch"] == "mlp")
    assert mlp["ok"] == 0 and mlp["missing"] == 2 and mlp["metrics"] == {}
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("rank,arch,task,seeds,failed,missing")
    assert (out / "results.csv").read_text().count("\n") == 5  # header + 4 jobs
    if os.path.exists(out / "curves.png"):
        assert (out / "curves.png").stat().st_size > 0
