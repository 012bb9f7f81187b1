"""``zoo runs export | delete | diff | plot``: managing the run store from the command line."""

import csv
import io
import json

import pytest
from click.testing import CliRunner

from zoo.cli.main import cli
from zoo.runstore import RunStore


def result(arch, seed, accuracy, lr=0.01, epochs=3, restored=None):
    history = [{"epoch": e, "step": 10 * e, "time": 0.1 * e, "train_loss": 1.0 / e,
                "val_loss": 1.1 / e, "val_accuracy": accuracy - 0.1 / e}
               for e in range(1, epochs + 1)]
    notes = [f"early_stopping: restored the weights of epoch {restored}, the best val_loss"] \
        if restored else []
    return {"arch": arch, "dataset": "xor", "task": "classify", "params": 58, "epochs": epochs,
            "steps": 10 * epochs, "stop_reason": "max_epochs: reached 3 epochs",
            "train_loss": 0.3, "val": {"loss": 0.4, "accuracy": accuracy},
            "test": {"loss": 0.5, "accuracy": accuracy}, "train_time_s": 1.5,
            "compile_time_s": 0.5, "seed": seed, "options": {"hidden": [16]}, "lr": lr,
            "optimizer": "adam", "batch_size": 32, "history": history, "notes": notes}


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "runs.db"
    with RunStore(path) as s:
        s.record(result("mlp", 0, 0.75), {"arch": "mlp", "seed": 0, "lr": 0.01,
                                          "stop": [], "options": {"hidden": "16"}})
        s.record(result("mlp", 1, 0.80, lr=0.003, restored=2),
                 {"arch": "mlp", "seed": 1, "lr": 0.003, "stop": ["max_epochs=3"],
                  "options": {"hidden": "16"}})
        s.record(result("cnn", 0, 0.90), {"arch": "cnn", "seed": 0}, group="g1")
    return str(path)


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_export_csv_has_one_flat_row_per_run_oldest_first(store):
    out = run("runs", "export", "--store", store)
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [(r["id"], r["arch"], r["seed"]) for r in rows] == [
        ("1", "mlp", "0"), ("2", "mlp", "1"), ("3", "cnn", "0")]
    assert rows[1]["lr"] == "0.003" and rows[1]["test_accuracy"] == "0.8"
    assert rows[1]["val_loss"] == "0.4" and rows[1]["stop"] == "max_epochs=3"
    assert json.loads(rows[0]["options"]) == {"hidden": [16]}
    only = list(csv.DictReader(io.StringIO(run("runs", "export", "--store", store,
                                               "--group", "g1").stdout)))
    assert [r["arch"] for r in only] == ["cnn"]


def test_export_json_to_a_file_has_every_run_in_full(store, tmp_path):
    target = tmp_path / "runs.json"
    out = run("runs", "export", "--format", "json", "--out", str(target), "--store", store)
    assert out.exit_code == 0, out.output
    data = json.loads(target.read_text())
    assert [r["id"] for r in data["runs"]] == [1, 2, 3]
    assert len(data["runs"][0]["history"]) == 3 and data["runs"][1]["config"]["lr"] == 0.003
    bad = run("runs", "export", "--out", str(tmp_path / "no" / "x.csv"), "--store", store)
    assert bad.exit_code == 2 and "does not exist" in bad.output


def test_delete_removes_the_run_and_its_epochs_and_refuses_unknown_ids(store):
    out = run("runs", "delete", "2", "--store", store)
    assert out.exit_code == 0 and "deleted run 2" in out.output
    with RunStore(store, create=False) as s:
        assert [r["id"] for r in s.list(None)] == [3, 1]
        assert s._conn.execute("SELECT COUNT(*) FROM epochs WHERE run_id = 2").fetchone()[0] == 0
    out = run("runs", "delete", "1", "9", "--store", store)
    assert out.exit_code == 2 and "no run 9" in out.output
    with RunStore(store, create=False) as s:  # all or nothing: run 1 is still there
        assert s.count() == 2


def test_diff_lists_what_differs_side_by_side(store):
    out = run("runs", "diff", "1", "2", "--store", store)
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0].startswith("run 1 vs run 2: ")
    assert any(line.split() == ["*", "config.lr", "0.01", "0.003"] for line in lines)
    assert any(line.split() == ["*", "test.accuracy", "0.75", "0.8"] for line in lines)
    assert not any("arch" in line.split() for line in lines)  # equal: shown with --all only
    assert any(line.split()[:2] == ["arch", "mlp"] for line in
               run("runs", "diff", "1", "2", "--all", "--store", store).stdout.splitlines())
    data = json.loads(run("runs", "diff", "1", "3", "--json", "--store", store).stdout)
    by_key = {r["key"]: r for r in data["rows"]}
    assert by_key["arch"] == {"key": "arch", "a": "mlp", "b": "cnn", "same": False}
    assert by_key["dataset"]["same"] is True


def test_plot_writes_one_runs_learning_curves(store, tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "run2.png"
    out = run("runs", "plot", "2", "--out", str(target), "--store", store)
    assert out.exit_code == 0, out.output
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run("runs", "plot", "7", "--store", store).exit_code == 2
