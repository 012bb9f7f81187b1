"""Ctrl-C in ``zoo train``: a real process gets SIGINT, saves and reports, then exits 130."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from zoo.checkpoints.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGINT")


def test_ctrl_c_saves_reports_and_exits_130(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("ZOO_DEBUG", "ZOO_LOAD_PLUGINS")}
    ckpt = tmp_path / "run.ckpt"
    # A budget far beyond what the test waits for: only Ctrl-C ends this run.
    proc = subprocess.Popen(
        [sys.executable, "-m", "zoo", "train", "--arch", "mlp", "--dataset", "xor",
         "-o", "hidden=8", "--epochs", "100000", "--stop", "max_epochs=100000",
         "--save", str(ckpt), "--checkpoint-every", "1steps", "--json", "--no-store"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not ckpt.exists():  # the first step is done: the loop's handler is in place
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the run never wrote a checkpoint"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    result = json.loads(out)
    assert result["stop_reason"].startswith("interrupted")
    assert result["checkpoint"] == str(ckpt)
    final = load_checkpoint(ckpt)  # the final save, after the clean stop
    assert final.stop_reason == result["stop_reason"] and final.step == result["steps"]
    assert "Traceback" not in err
