"""Progress: a live line that fits the terminal, a compiling phase, training-only speed, an
ETA, quiet when piped, epoch lines with verbose, and a display in a real Jupyter notebook."""

import io
import os
import re
import subprocess
import sys
import textwrap

import pytest

from zoo.training import progress
from zoo.training.progress import ProgressBar, fit_line, format_duration


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self):
        return True


def live_lines(text):
    """What a terminal shows at each redraw: the segments between carriage returns."""
    return [s.replace("\x1b[K", "").rstrip("\n") for s in re.split(r"\r", text) if s.strip()]


def test_fit_line_drops_fields_before_it_wraps():
    fields = [(0, "epoch 13/500"), (3, "120/230"), (1, "loss 0.4321"), (2, "ETA 1:02:03"),
              (4, "12,345 steps/s")]
    for width in (10, 20, 40, 60, 80, 200):
        line = fit_line(fields, width, (120, 230))
        assert len(line) <= width - 1
        assert line.startswith("epoch 13/500"[:width - 1])
    wide = fit_line(fields, 200, (120, 230))
    assert "[" in wide and "12,345 steps/s" in wide and "ETA 1:02:03" in wide
    narrow = fit_line(fields, 40, (120, 230))
    assert "loss 0.4321" in narrow and "steps/s" not in narrow  # the least useful goes first


def test_format_duration():
    assert [format_duration(s) for s in (0, 42, 61, 3723)] == ["0:00", "0:42", "1:01",
                                                                "1:02:03"]


def test_speed_leaves_compilation_out_and_eta_follows_the_budget(monkeypatch):
    clock = {"t": 100.0}
    compiled = {"s": 5.0}
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock["t"])
    monkeypatch.setattr("zoo.kernels.compile_seconds", lambda: compiled["s"])

    class Engine:
        criteria = [type("C", (), {"name": "max_epochs", "epochs": 10})()]

    class Trainer:
        engine, step, epoch, batch_index, batches_per_epoch, last_loss = Engine(), 0, 0, 0, 10, 1.0

    shown = progress._Progress()
    trainer = Trainer()
    shown.begin(trainer)
    assert shown.fields(trainer)[0][1][1].startswith("compiling kernels")
    # The first step: 4 s compiling, 0.01 s computing.
    clock["t"] += 4.01
    compiled["s"] += 4.0
    trainer.step = trainer.batch_index = 1
    shown.observe(trainer)
    assert shown.compiling
    assert shown.steps_per_second(trainer) == pytest.approx(100, rel=1e-6)
    # Nine more steps, 0.01 s each, nothing compiled.
    clock["t"] += 0.09
    trainer.step = trainer.batch_index = 10
    shown.observe(trainer)
    assert not shown.compiling
    rate = shown.steps_per_second(trainer)
    assert rate == pytest.approx(100, rel=1e-6)  # not 10 / 4.1 s
    assert shown.eta(trainer, rate) == pytest.approx(90 / 100)  # 90 steps of the budget left
    texts = [t for _, t in shown.fields(trainer)[0]]
    assert "epoch 1/10" in texts and "100 steps/s" in texts and "ETA 0:01" in texts


def xor_run(callbacks, epochs=3):
    from zoo.run import Run, RunConfig

    run = Run(RunConfig(arch="mlp", dataset="xor", epochs=epochs, options={"hidden": "8"}),
              callbacks=callbacks)
    run.fit()
    return run


def test_the_live_line_fits_a_narrow_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setattr(progress, "REDRAW_SECONDS", 0.0)  # draw every step
    screen = Terminal()
    xor_run([ProgressBar(stream=screen)])
    text = screen.getvalue()
    lines = live_lines(text)
    assert lines[0].startswith("epoch 1/3")
    steps = [s for s in lines if "loss" in s and "train_loss" not in s]
    assert steps and all(len(s) <= 39 for s in steps), max(steps, key=len)
    assert any(s.startswith("epoch 3/3") for s in steps)
    assert text.endswith("\r\x1b[K")  # the live line is cleared at the end


def test_quiet_when_piped_and_one_line_per_epoch_with_verbose():
    piped = io.StringIO()
    xor_run([ProgressBar(stream=piped)])
    assert piped.getvalue() == ""
    logged = io.StringIO()
    xor_run([ProgressBar(stream=logged, verbose=True)])
    lines = logged.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert all("\r" not in line and "val_loss" in line for line in lines)


THREE_LINES = """
from zoo import Sequential; from zoo.layers import Dense, ReLU
model = Sequential([Dense(16), ReLU(), Dense(3)])
model.fit(x, y, epochs=3, verbose=True)
"""
DATA = """
import numpy as np
rng = np.random.default_rng(0)
y = rng.integers(0, 3, 300)
x = rng.normal(scale=0.3, size=(300, 4)) + np.eye(4)[y] * 3
"""


def _env():
    return {k: v for k, v in os.environ.items() if k not in ("ZOO_DEBUG", "ZOO_LOAD_PLUGINS")}


@pytest.mark.slow  # two fresh processes: each loads (or, on a cold cache, compiles) kernels
def test_a_notebook_style_script_trains_in_three_lines_and_shows_progress():
    script = DATA + THREE_LINES + "print(model.predict(x[:3]).tolist())\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    err = done.stderr.splitlines()
    assert err[0].startswith("zoo: y holds integers: task classify (3 classes)")
    epochs = [line for line in err if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]
    assert len(eval(done.stdout)) == 3  # labels of three examples

    # Forced onto a 40-column "terminal" (stderr is a pipe here): every redraw fits.
    forced = script.replace("verbose=True", "progress=True")
    done = subprocess.run([sys.executable, "-c", forced], capture_output=True,
                          env={**_env(), "COLUMNS": "40"}, timeout=300)
    err = done.stderr.decode()  # bytes: text mode would turn each \r into a newline
    assert done.returncode == 0, err
    shown = live_lines(err.split("\n", 1)[1])
    assert shown[0].startswith("epoch 1/3  compiling kernels")
    redraws = [s for s in shown if "train_loss" not in s]  # the epoch lines are permanent
    assert len(redraws) >= 2 and all(len(s) <= 39 for s in redraws), redraws


@pytest.mark.slow
def test_an_executed_jupyter_notebook_shows_a_progress_display(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(textwrap.dedent(DATA)),
                      nbformat.v4.new_code_cell(THREE_LINES.strip()),
                      nbformat.v4.new_code_cell("model.evaluate(x, y)['accuracy']")]
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=_env())
    outputs = notebook.cells[1].outputs
    displays = [o for o in outputs if o.output_type == "display_data"]
    assert len(displays) == 1, outputs  # one display, updated in place
    html, plain = displays[0].data["text/html"], displays[0].data["text/plain"]
    assert "<progress" in html
    lines = plain.splitlines()
    assert lines[0].startswith("epoch 3/3  done in") and "compile" in lines[0]
    assert [line.split()[1] for line in lines[1:]] == ["1/3", "2/3", "3/3"]
    streams = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "task classify" in streams and "epoch 1/3" not in streams  # no terminal lines
    accuracy = float(notebook.cells[2].outputs[0].data["text/plain"])
    assert 0 <= accuracy <= 1
