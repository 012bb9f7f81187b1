"""Ctrl-C in ``zoo compare`` keeps the finished jobs: a real process, a real SIGINT."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

# linear on xor finishes in a second; the very wide mlp takes far longer, so it is what Ctrl-C
# interrupts (at least its second seed). The budget is shared; the options make the difference.
ARGS = ["--arch", "linear,mlp", "--dataset", "xor", "--seed-list", "0,1", "--epochs", "3000",
        "-o", "mlp.hidden=2048,2048", "--no-store"]


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
        time.sleep(0.3)  # let the slow jobs get going
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
    result = json.loads((out / "results.json").read_text())
    assert result["interrupted"] is True
    statuses = {(r["arch"], r["seed"]): r["status"] for r in result["rows"]}
    assert statuses[("linear", 0)] == statuses[("linear", 1)] == "ok"
    missing = [f"mlp seed {s}" for s in (0, 1) if statuses[("mlp", s)] != "ok"]
    assert missing and result["missing"] == missing
    assert {statuses[("mlp", s)] for s in (0, 1)} <= {"ok", "missing", "interrupted"}
    assert f"INTERRUPTED: {4 - len(missing)} of 4 jobs finished" in stdout
    assert f"missing (not finished): {', '.join(missing)}" in stdout
    assert "zoo: interrupted; the finished jobs are saved" in stderr
    linear = next(s for s in result["summary"] if s["arch"] == "linear")
    assert linear["ok"] == 2 and linear["metrics"]["accuracy"]["n"] == 2
    mlp = next(s for s in result["summary"] if s["arch"] == "mlp")
    assert mlp["ok"] == 2 - len(missing) and mlp["missing"] == len(missing)
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("rank,arch,task,seeds,failed,missing")
    assert (out / "results.csv").read_text().count("\n") == 5  # header + 4 jobs
    if os.path.exists(out / "curves.png"):
        assert (out / "curves.png").stat().st_size > 0
