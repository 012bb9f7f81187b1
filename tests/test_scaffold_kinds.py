"""``zoo new-plugin NAME --kind K`` for every kind besides architectures (whose package is
pip-installed in test_plugin_install.py): each package imports, registers through its entry
point, passes the conformance kit and its own tests, and is usable from the command line."""

import importlib
import inspect
import sys
from importlib.metadata import EntryPoint

import pytest
from click.testing import CliRunner

from zoo.cli.main import cli

USE = {
    "optimizer": ["train", "--arch", "mlp", "--dataset", "xor", "--epochs", "1",
                  "--optimizer", "fake_zoo_opt(momentum=0.5)", "-o", "hidden=8"],
    "loss": ["train", "--arch", "mlp", "--dataset", "sine", "--epochs", "1",
             "--loss", "fake_zoo_loss(scale=2)", "-o", "hidden=8"],
    "dataset": ["train", "--arch", "mlp", "--dataset", "fake_zoo_data(classes=4)",
                "--epochs", "1", "-o", "hidden=8"],
    "criterion": ["train", "--arch", "mlp", "--dataset", "xor", "--epochs", "2",
                  "--stop", "fake_zoo_stop(ceiling=0)", "-o", "hidden=8"],
    "schedule": ["train", "--arch", "mlp", "--dataset", "xor", "--epochs", "1",
                 "--schedule", "fake_zoo_lr(end_factor=0.1)", "-o", "hidden=8"],
}
NAMES = {"optimizer": "fake_zoo_opt", "loss": "fake_zoo_loss", "dataset": "fake_zoo_data",
         "criterion": "fake_zoo_stop", "schedule": "fake_zoo_lr"}


@pytest.mark.parametrize("kind", list(USE))
def test_each_kind_scaffolds_a_package_that_conforms(kind, tmp_path, fresh_host, monkeypatch):
    name = NAMES[kind]
    folder = tmp_path / "pkg"
    result = CliRunner().invoke(cli, ["new-plugin", name, "--kind", kind, "--dir", str(folder)])
    assert result.exit_code == 0, result.output
    assert f"({kind})" in result.output
    pyproject = (folder / "pyproject.toml").read_text()
    assert f'{name} = "zoo_{name}"' in pyproject and f"The {name} {kind} for zoo" in pyproject

    # "Install" it: its folder on sys.path and its entry point among the installed ones.
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.syspath_prepend(str(folder / "tests"))
    ep = EntryPoint(name=name, value=f"zoo_{name}", group="zoo")
    original = fresh_host.PluginHost._entry_points
    monkeypatch.setattr(fresh_host.PluginHost, "_entry_points",
                        lambda self: [*original(self), ep])
    fresh_host.reset_host()  # new-plugin loaded one before the entry point existed
    try:
        host = fresh_host.get_host()
        record = host.records[name]
        assert record.error is None, record.error
        assert sum(record.registered.values(), []) == [name]

        tests = importlib.import_module(f"test_zoo_{name}")
        functions = [f for n, f in inspect.getmembers(tests, inspect.isfunction)
                     if n.startswith("test_")]
        assert len(functions) == 2
        for function in functions:  # the package's own tests, the kit among them
            function()

        result = CliRunner().invoke(cli, [*USE[kind], "--no-store", "--json"])
        assert result.exit_code == 0, result.output
        if kind == "criterion":
            assert '"stop_reason": "fake_zoo_stop: the training loss' in result.stdout
    finally:
        for module in (f"zoo_{name}", f"test_zoo_{name}"):
            sys.modules.pop(module, None)


def test_a_bad_kind_or_a_taken_name_is_refused(tmp_path):
    result = CliRunner().invoke(cli, ["new-plugin", "x", "--kind", "metric"])
    assert result.exit_code == 2 and "Invalid value for '--kind'" in result.output
    result = CliRunner().invoke(cli, ["new-plugin", "sgd", "--kind", "optimizer",
                                      "--dir", str(tmp_path / "p")])
    assert result.exit_code == 2
    assert "an optimizer named 'sgd' is already installed" in result.output
    result = CliRunner().invoke(cli, ["new-plugin", "my-opt", "--kind", "optimizer",
                                      "--dir", str(tmp_path / "q")])
    assert result.exit_code == 2 and "take letters, digits and '_'" in result.output
    assert not (tmp_path / "p").exists() and not (tmp_path / "q").exists()
