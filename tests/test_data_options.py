"""Data options on the command line: --label-column, --task and --standardize, through the CLI
into the run, the checkpoint and the run store; the label guess is stated, never silent."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from zoo.checkpoints.checkpoint import load_checkpoint
from zoo.cli.main import cli
from zoo.kit.gradcheck import check_layer
from zoo.layers.standardize import Standardize


def run(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def label_first(tmp_path):
    """``label,a,b``: the label first, a feature on a large scale last (as in the report)."""
    rng = np.random.default_rng(0)
    n = 300
    a, b = rng.normal(size=n), rng.normal(size=n) * 50 + 100
    label = (a * 3 + (b - 100) / 50 > 0).astype(int)
    path = tmp_path / "first.csv"
    path.write_text("label,a,b\n" + "".join(f"{label[i]},{a[i]:.5f},{b[i]:.5f}\n"
                                            for i in range(n)))
    return path


TRAIN = ("train", "--arch", "mlp", "-o", "hidden=16", "--json", "--no-store")


def test_a_label_in_the_first_column_trains_a_classifier(label_first):
    for column in ("0", "label"):
        result = run(*TRAIN, "--epochs", "3", "--dataset", str(label_first),
                     "--label-column", column)
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["task"] == "classify" and "accuracy" in report["test"]
        guess = [line for line in result.stderr.splitlines() if "guessed" in line]
        assert guess == [f"zoo: {label_first}: guessed task classify (integer or text "
                         f"labels; --task to choose)"]


def test_the_guess_is_stated_when_no_label_column_is_given(label_first):
    result = run(*TRAIN, "--dataset", str(label_first), "--stop", "max_epochs=1")
    assert result.exit_code == 0, result.output
    guess = [line for line in result.stderr.splitlines() if "guessed" in line]
    assert guess == [f"zoo: {label_first}: guessed label column 'b' (the last; --label-column "
                     f"NAME|INDEX to choose), task regress (decimal labels; --task to choose)"]


def test_task_and_label_column_given_leave_nothing_to_guess(label_first):
    result = run(*TRAIN, "--dataset", str(label_first), "--label-column", "-3",
                 "--task", "regress", "--stop", "max_epochs=1")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["task"] == "regress"
    assert "guessed" not in result.stderr


def test_bad_data_options_are_one_line(label_first, tmp_path):
    result = run(*TRAIN, "--dataset", str(label_first), "--label-column", "7")
    assert result.exit_code == 2
    assert "no column named '7' and no such index" in result.stderr
    assert "indexes 0 to 2" in result.stderr
    result = run(*TRAIN, "--dataset", "xor", "--label-column", "0")
    assert result.exit_code == 2
    assert "--label-column applies to data files" in result.stderr
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 2)), y=np.arange(20) % 2)
    result = run(*TRAIN, "--dataset", str(tmp_path / "d.npz"), "--label-column", "0")
    assert result.exit_code == 2 and "applies to .csv files only" in result.stderr
    result = run(*TRAIN, "--dataset", str(label_first), "--task", "sort")
    assert result.exit_code == 2 and "'sort' is not one of" in result.stderr


def test_standardize_is_saved_and_applied_by_evaluate_and_predict(label_first, tmp_path):
    ckpt = tmp_path / "s.ckpt"
    store = tmp_path / "runs.db"
    result = run("train", "--arch", "mlp", "-o", "hidden=16", "--epochs", "3", "--json",
                 "--dataset", str(label_first), "--label-column", "label", "--standardize",
                 "--save", str(ckpt), "--store", str(store))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)

    ck = load_checkpoint(ckpt)
    assert ck.config["label_column"] == "label" and ck.config["standardize"] is True
    from zoo.data.load import load_dataset

    data = load_dataset(str(label_first), label_column="label")
    x_train = data.split_validation(0.1, seed=0)[0]
    np.testing.assert_allclose(ck.model_state["0.mean"], x_train.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(ck.model_state["0.std"], x_train.std(axis=0), rtol=1e-5)

    evaluated = run("evaluate", str(ckpt), "--json")  # reads the CSV as the run did
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["metrics"]["accuracy"] == \
        pytest.approx(report["test"]["accuracy"])
    np.save(tmp_path / "x.npy", data.x_test)
    predicted = run("predict", str(ckpt), str(tmp_path / "x.npy"), "--out",
                    str(tmp_path / "p.npy"))
    assert predicted.exit_code == 0, predicted.output
    accuracy = np.mean(np.argmax(np.load(tmp_path / "p.npy"), axis=1) == data.y_test)
    assert accuracy == pytest.approx(report["test"]["accuracy"])

    shown = run("runs", "show", "1", "--store", str(store), "--json")
    config = json.loads(shown.stdout)["config"]
    assert (config["label_column"], config["task"], config["standardize"]) == \
        ("label", None, True)

    # Resume keeps them; changing one is refused.
    refused = run("train", "--resume", str(ckpt), "--label-column", "a", "--no-store")
    assert refused.exit_code == 2 and "label_column" in refused.stderr


def test_standardize_layer_matches_numpy_and_its_gradient():
    rng = np.random.default_rng(1)
    for shape, axes in (((5,), (0,)), ((4, 3), (0, 1)), ((2, 3, 3), (0, 2, 3))):
        x = rng.normal(loc=3, scale=4, size=(16, *shape))
        x[..., 0] = 7.0 if len(shape) != 3 else x[..., 0]  # a constant feature (not images)
        layer = Standardize()
        layer.build(shape, rng, dtype=np.float64)
        layer.adapt(x)
        mean = x.mean(axis=axes, keepdims=True)
        std = x.std(axis=axes, keepdims=True)
        std[std < 1e-8] = 1
        np.testing.assert_allclose(layer.forward(x), (x - mean) / std, rtol=1e-12)
        check_layer(layer, shape, x=x[:3])
