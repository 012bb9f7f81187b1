"""The command line, through click's CliRunner and through a real subprocess."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from zoo.cli.main import cli

FIELDS = {"arch", "dataset", "task", "params", "epochs", "steps", "stop_reason", "train_loss",
          "val", "test", "train_time_s", "compile_time_s", "checkpoint"}


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_list_json_names_the_builtins():
    result = run("list", "--json")
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    names = {a["name"] for a in listing["architectures"]}
    assert {"mlp", "cnn", "rnn", "lstm", "gru", "autoencoder"} <= names
    assert {"mnist1d", "digits"} <= {d["name"] for d in listing["datasets"]}
    assert {"sgd", "adam", "adamw", "rmsprop"} <= {o["name"] for o in listing["optimizers"]}
    assert {"early_stopping", "max_epochs", "non_finite"} <= {c["name"]
                                                             for c in listing["criteria"]}


def test_info_shows_options_and_defaults():
    result = run("info", "mlp")
    assert result.exit_code == 0
    assert "hidden" in result.stdout and "classify" in result.stdout


def test_info_shows_the_model_built_for_a_dataset():
    default = run("info", "mlp")
    assert "model for mnist1d (input (40,), default options):" in default.stdout
    assert "0 Dense(256, activation='relu')  (N, 256)      10,496" in default.stdout
    assert default.stdout.rstrip().endswith("total parameters: 78,858")
    digits = run("info", "cnn", "--dataset", "digits", "--json")
    model = json.loads(digits.stdout)["model"]
    assert model["dataset"] == "digits" and model["input_shape"] == [1, 8, 8]
    assert model["output_shape"] == [10] and model["params"] > 0
    assert model["summary"].splitlines()[-1] == f"total parameters: {model['params']:,}"


def test_info_builds_within_the_parameter_budget(monkeypatch):
    monkeypatch.setenv("ZOO_MAX_PARAMS", "1000")
    result = run("info", "mlp")
    assert result.exit_code == 2 and result.stdout == ""
    assert "architecture mlp on mnist1d" in result.stderr


def test_train_json_prints_one_object_with_the_contract_fields():
    result = run("train", "--arch", "mlp", "--dataset", "xor", "--epochs", "2", "--json")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert FIELDS <= set(out)
    assert out["arch"] == "mlp" and out["epochs"] == 2
    assert out["stop_reason"].startswith("max_epochs")
    assert {"loss", "accuracy", "macro_f1", "weighted_f1"} <= set(out["test"])
    assert out["checkpoint"] is None


@pytest.mark.parametrize("args, message", [
    (["train", "--arch", "nope"], "unknown architecture 'nope'; installed:"),
    (["train", "--arch", "mlp", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["train", "--arch", "mlp", "--lr", "0"], "lr must be a positive finite number"),
    (["train", "--arch", "mlp", "--lr", "nan"], "lr must be a positive finite number"),
    (["train", "--arch", "mlp", "--batch-size", "0"], "batch_size must be a positive integer"),
    (["train", "--arch", "mlp", "--epochs", "-1"], "epochs must be a positive integer"),
    (["train", "--arch", "mlp", "--stop", "early_stopping(patience="], "--stop"),
    (["train", "--arch", "mlp", "--stop", "no_such_rule=3"], "no_such_rule"),
    (["train", "--arch", "mlp", "-o", "hidden"], "-o expects KEY=VALUE"),
    (["train", "--arch", "mlp", "-o", "depth=3"], "has no option 'depth'"),
    (["train", "--arch", "mlp", "-o", "hidden=a,b"], "option hidden expects"),
    (["train", "--arch", "mlp", "--epochs", "x"], "'x' is not a valid integer"),
    (["train"], "Missing option '--arch'"),
    (["info", "nope"], "unknown architecture 'nope'"),
    (["info", "mlp", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["info", "adam", "--dataset", "digits"], "--dataset shows the model an architecture "
                                              "builds; adam is not an architecture"),
    (["dataset", "nope"], "unknown dataset 'nope'"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, message):
    result = run(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("zoo: error:") and message in lines[0], lines[0]


def test_help_and_list_do_not_import_numba(subprocess_env):
    code = ("import sys\nfrom zoo.cli import main\nfor argv in (['zoo', '--help'], "
            "['zoo', 'list'], ['zoo', 'info', 'cnn']):\n"
            "    sys.argv = argv\n    try:\n        main()\n    except SystemExit as e:\n"
            "        assert e.code == 0, (argv, e.code)\n"
            "print('NUMBA' if 'numba' in sys.modules else 'NO-NUMBA', file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=subprocess_env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "NO-NUMBA"


def test_real_subprocess_error_has_no_traceback(subprocess_env):
    proc = subprocess.run([sys.executable, "-m", "zoo", "train", "--arch", "mlp", "--lr", "-1"],
                          capture_output=True, text=True, env=subprocess_env, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("zoo: error: lr must be a positive finite number; "
                                   "received lr=-1.0")
