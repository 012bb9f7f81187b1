"""The kill test: a real ``zoo train`` process killed with SIGKILL, then resumed, ends with the
same weights as a run that was never interrupted.

Once at a random step (the run writes a checkpoint after every step), and once in the middle
of writing a checkpoint: a launcher runs the real ``zoo train`` with ``os.replace`` in the
writer paused just before the temporary file replaces the checkpoint, and the process is
killed there.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from zoo.checkpoints.checkpoint import load_checkpoint
from zoo.checkpoints.format import read_checkpoint, read_metadata
from zoo.errors import CheckpointError


def subprocess_env(**extra):
    """This environment without debug or plugin filters, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("ZOO_DEBUG", "ZOO_LOAD_PLUGINS", "ZOO_STRICT_PLUGINS")}
    env.update(extra)
    return env


pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

# xor: 720 training examples, batch 32 -> 23 steps per epoch, 230 steps in all.
TRAIN = ["train", "--arch", "mlp", "--dataset", "xor", "-o", "hidden=16", "-o", "dropout=0.1",
         "--epochs", "10", "--batch-size", "32", "--seed", "7", "--no-store"]
TOTAL_STEPS = 230

LAUNCHER = r'''
import os, sys, time, types
import zoo.atomic as writer

class PausingOS(types.ModuleType):
    """The os module, except that the N-th checkpoint replace waits to be killed."""
    def __getattr__(self, name):
        return getattr(os, name)

pause_at = int(os.environ["ZOO_TEST_PAUSE_AT"])
marker = os.environ["ZOO_TEST_MARKER"]
count = 0

def replace(src, dst):
    global count
    count += 1
    if count == pause_at:
        with open(marker + ".part", "w") as f:
            f.write(src)
        os.rename(marker + ".part", marker)
        time.sleep(600)
    return os.replace(src, dst)

proxy = PausingOS("os")
proxy.replace = replace
writer.os = proxy
from zoo.cli import main
sys.argv = ["zoo", *sys.argv[1:]]
main()
'''


def _zoo(*args, cwd, launcher=None, env=None, wait=True):
    command = ([sys.executable, str(launcher)] if launcher else
               [sys.executable, "-m", "zoo"]) + [str(a) for a in args]
    proc = subprocess.Popen(command, cwd=cwd, env=subprocess_env(**(env or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run's final checkpoint."""
    folder = tmp_path_factory.mktemp("straight")
    _zoo(*TRAIN, "--save", "straight.ckpt", cwd=folder)
    return folder / "straight.ckpt"


def _same_weights(a, b):
    ta, tb = read_checkpoint(a).tensors, read_checkpoint(b).tensors
    assert sorted(ta) == sorted(tb)
    assert any(name.startswith("model.") for name in ta)
    for name in ta:
        assert np.array_equal(ta[name], tb[name]), name
    assert load_checkpoint(a).step == load_checkpoint(b).step == TOTAL_STEPS


def _step(path):
    try:
        return read_metadata(path)["trainer"]["step"]
    except CheckpointError:  # not there yet
        return -1


def _kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_killed_at_a_random_step_then_resumed(straight, tmp_path):
    target = random.Random().randrange(5, TOTAL_STEPS - 100)
    proc = _zoo(*TRAIN, "--save", "run.ckpt", "--checkpoint-every", "1steps", cwd=tmp_path,
                wait=False)
    deadline = time.monotonic() + 240
    while _step(tmp_path / "run.ckpt") < target and proc.poll() is None:
        assert time.monotonic() < deadline, "the run did not reach the target step"
        time.sleep(0.002)
    assert proc.poll() is None, "the run ended before it could be killed"
    _kill(proc)
    killed_at = load_checkpoint(tmp_path / "run.ckpt").step
    assert target <= killed_at < TOTAL_STEPS, (target, killed_at)

    _zoo("train", "--resume", "run.ckpt", "--no-store", cwd=tmp_path)
    _same_weights(straight, tmp_path / "run.ckpt")


def test_killed_while_writing_a_checkpoint_then_resumed(straight, tmp_path):
    launcher = tmp_path / "launch_zoo.py"
    launcher.write_text(LAUNCHER)
    pause_at = random.Random().randrange(10, 60)
    marker = tmp_path / "paused"
    proc = _zoo(*TRAIN, "--save", "run.ckpt", "--checkpoint-every", "1steps", cwd=tmp_path,
                launcher=launcher, wait=False,
                env={"ZOO_TEST_PAUSE_AT": str(pause_at), "ZOO_TEST_MARKER": str(marker)})
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the writer never paused"
        time.sleep(0.01)
    temp = marker.read_text()
    assert os.path.getsize(temp) > 0  # the new checkpoint is complete, not yet in place
    _kill(proc)
    # The previous checkpoint is intact; the orphaned temporary file is never read.
    before = load_checkpoint(tmp_path / "run.ckpt")
    assert 0 < before.step < TOTAL_STEPS
    assert os.path.exists(temp)

    _zoo("train", "--resume", "run.ckpt", "--checkpoint-every", "50steps", "--no-store",
         cwd=tmp_path)
    _same_weights(straight, tmp_path / "run.ckpt")


@pytest.mark.slow
def test_ctrl_c_writes_a_final_checkpoint_then_resumed(straight, tmp_path):
    target = random.Random().randrange(5, TOTAL_STEPS - 100)
    proc = _zoo(*TRAIN, "--save", "run.ckpt", "--checkpoint-every", "1steps", "--json",
                cwd=tmp_path, wait=False)
    deadline = time.monotonic() + 240
    while _step(tmp_path / "run.ckpt") < target and proc.poll() is None:
        assert time.monotonic() < deadline, "the run did not reach the target step"
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err  # saved, reported, then the shell's Ctrl-C status
    result = json.loads(out)
    assert result["stop_reason"].startswith("interrupted") and result["steps"] < TOTAL_STEPS
    final = load_checkpoint(tmp_path / "run.ckpt")  # written after the clean stop
    assert final.stop_reason == result["stop_reason"] and final.step == result["steps"]
    assert result["checkpoint"] == "run.ckpt"

    _zoo("train", "--resume", "run.ckpt", "--checkpoint-every", "1", "--no-store", cwd=tmp_path)
    _same_weights(straight, tmp_path / "run.ckpt")
