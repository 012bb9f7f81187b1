"""How budgets given on resume combine with the checkpoint's, through the CLI.

A checkpoint stores its run's criteria spelled out; ``--epochs N`` and ``--stop`` specs given
with ``--resume`` replace the saved criterion of the same name or add a budget
(``max_epochs``, ``max_steps``, ``max_time``), and the resumed run ends exactly where a run
given those budgets from the start ends.
"""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from zoo.checkpoints.checkpoint import load_checkpoint
from zoo.checkpoints.format import read_checkpoint
from zoo.cli.main import cli

BASE = ["--arch", "mlp", "--dataset", "xor", "-o", "hidden=4", "--batch-size", "90",
        "--no-store"]  # 720 training examples: 8 steps per epoch


def _zoo(*args, code=0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def _train(*args) -> dict:
    return json.loads(_zoo("train", *args, "--json").stdout)


def _weights(path) -> dict:
    return {k: np.array(v) for k, v in read_checkpoint(path).tensors.items()
            if k.startswith("model.")}


def _same_weights(a, b) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_epochs_extends_a_budget_given_with_stop(tmp_path):
    """The reported bug: --stop max_epochs=2, then --resume --epochs 4."""
    run = tmp_path / "m.ckpt"
    first = _train(*BASE, "--stop", "max_epochs=2", "--save", run)
    assert first["epochs"] == 2
    resumed = _train("--resume", run, "--epochs", "4", "--no-store")
    assert resumed["epochs"] == 4 and resumed["steps"] == 32
    assert resumed["stop_reason"] == "max_epochs: reached the limit of 4 epochs"
    _train(*BASE, "--stop", "max_epochs=4", "--save", tmp_path / "straight.ckpt")
    assert _same_weights(run, tmp_path / "straight.ckpt")
    # ... and --stop max_epochs=N on resume does the same.
    again = _train("--resume", run, "--stop", "max_epochs=6", "--no-store")
    assert again["epochs"] == 6
    assert [c for c in load_checkpoint(run).config["stop"] if "max_epochs" in c] == \
        ["max_epochs(epochs=6)"]


def test_a_step_budget_is_added_and_the_saved_criteria_keep_their_state(tmp_path):
    run = tmp_path / "m.ckpt"
    _train(*BASE, "--epochs", "2", "--save", run)  # the default early stopping is on
    saved = load_checkpoint(run).config["stop"]
    assert saved[0] == "max_epochs(epochs=2)" and saved[1].startswith("early_stopping(")
    resumed = _train("--resume", run, "--epochs", "10", "--stop", "max_steps=28", "--no-store")
    assert resumed["steps"] == 28 and resumed["stop_reason"].startswith("max_steps")
    stop = load_checkpoint(run).config["stop"]
    assert stop == ["max_epochs(epochs=10)", saved[1], "max_steps(steps=28)"]
    # The same budgets from the start: the same weights.
    _train(*BASE, "--epochs", "10", "--stop", saved[1], "--stop", "max_steps=28",
           "--save", tmp_path / "straight.ckpt")
    assert _same_weights(run, tmp_path / "straight.ckpt")


def test_a_time_budget_is_kept_or_replaced(tmp_path):
    run = tmp_path / "m.ckpt"
    _train(*BASE, "--stop", "max_time=1h", "--epochs", "1", "--save", run)
    _train("--resume", run, "--epochs", "2", "--no-store")
    assert "max_time(seconds=3600.0)" in load_checkpoint(run).config["stop"]
    _train("--resume", run, "--epochs", "3", "--stop", "max_time=2h", "--no-store")
    stop = load_checkpoint(run).config["stop"]
    assert "max_time(seconds=7200.0)" in stop and "max_time(seconds=3600.0)" not in stop
    assert load_checkpoint(run).epoch == 3


@pytest.mark.parametrize("args, message", [
    (["--epochs", "4", "--stop", "max_epochs=2"],
     "the epoch budget is given twice: --epochs 4 and --stop max_epochs(epochs=2); give one"),
])
def test_a_new_run_refuses_two_epoch_budgets(tmp_path, args, message):
    result = _zoo("train", *BASE, *args, code=2)
    assert result.stderr.strip() == f"zoo: error: {message}"


def test_resume_refuses_conflicting_budgets_and_new_stateful_criteria(tmp_path):
    run = tmp_path / "m.ckpt"
    _train(*BASE, "--stop", "max_epochs=1", "--save", run)
    before = run.read_bytes()
    result = _zoo("train", "--resume", run, "--epochs", "5", "--stop", "max_epochs=6", code=2)
    assert result.stderr.strip().startswith("zoo: error: the epoch budget is given twice")
    result = _zoo("train", "--resume", run, "--epochs", "5", "--stop", "loss_below(0.1)", code=2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "stopping criteria do not match the checkpoint" in lines[0]
    assert "add budgets, not add or drop others" in lines[0]
    result = _zoo("train", "--resume", run, code=2)  # the saved budget is spent
    assert "nothing to resume" in result.stderr and "give a larger budget" in result.stderr
    assert run.read_bytes() == before


def test_a_file_without_budget_marks_is_refused_for_resume_only(tmp_path):
    from zoo.checkpoints.format import write_checkpoint

    run = tmp_path / "m.ckpt"
    _train(*BASE, "--epochs", "1", "--save", run)
    tensors, metadata = read_checkpoint(run)
    for criterion in metadata["stopping"]["criteria"]:
        del criterion["budget"]
    write_checkpoint(tmp_path / "old.ckpt", dict(tensors), metadata)
    result = _zoo("train", "--resume", tmp_path / "old.ckpt", "--epochs", "3", code=2)
    assert "older layout of the stopping state" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    _zoo("evaluate", tmp_path / "old.ckpt")
