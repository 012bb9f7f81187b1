"""Plugin loading: each plugin on its own, broken ones reported by name, strict mode."""

import textwrap
from importlib.metadata import EntryPoint

import pytest

from zoo.errors import ConfigError, PluginError

GOOD = """
from zoo.architecture import Architecture
from zoo.hookspecs import hookimpl

@hookimpl
def register_architectures(register):
    register(Architecture(name="{name}", summary="a test architecture", tasks=("classify",),
                          build=lambda spec, options: None))
"""


def write_plugin(folder, module, source):
    (folder / f"{module}.py").write_text(textwrap.dedent(source))
    return EntryPoint(name=module.removeprefix("fake_zoo_"), value=module, group="zoo")


def host_with(plugins_module, monkeypatch, eps, **kwargs):
    """A host that sees the built-in entry points plus ``eps``."""
    original = plugins_module.PluginHost._entry_points

    def entry_points(self):
        return [*original(self), *eps]

    monkeypatch.setattr(plugins_module.PluginHost, "_entry_points", entry_points)
    return plugins_module.PluginHost(**kwargs)


def test_builtins_register_through_entry_points(fresh_host):
    host = fresh_host.get_host()
    assert host.problems == []
    assert "mlp" in host.architectures.names()
    assert host.records["mlp"].registered["architectures"] == ["mlp"]
    assert host.records["mlp"].error is None
    assert "register_architectures" in host.records["mlp"].hooks


def test_good_plugin_is_loaded(fresh_host, plugin_dir, monkeypatch):
    ep = write_plugin(plugin_dir, "fake_zoo_good", GOOD.format(name="goodnet"))
    host = host_with(fresh_host, monkeypatch, [ep])
    assert host.architectures.get("goodnet").plugin == "good"
    assert host.records["good"].registered == {"architectures": ["goodnet"]}


@pytest.mark.parametrize("source, reason", [
    ("raise RuntimeError('boom at import')", "failed to import: RuntimeError: boom at import"),
    ("from zoo.hookspecs import hookimpl\n@hookimpl\ndef register_architecture(register):\n"
     "    pass\n", "invalid hook"),
    ("from zoo.hookspecs import hookimpl\n@hookimpl\ndef register_architectures(register):\n"
     "    raise ValueError('bad registration')\n",
     "raised in register_architectures: ValueError: bad registration"),
    (GOOD.format(name="mlp"), "architecture 'mlp' is already registered by mlp"),
    ("ZOO_API = '99'\n", "needs zoo plugin API 99"),
])
def test_broken_plugin_is_reported_and_the_rest_works(fresh_host, plugin_dir, monkeypatch,
                                                       source, reason):
    bad = write_plugin(plugin_dir, "fake_zoo_bad", source)
    good = write_plugin(plugin_dir, "fake_zoo_good2", GOOD.format(name="othernet"))
    host = host_with(fresh_host, monkeypatch, [bad, good])
    assert reason in host.records["bad"].error
    assert "bad" in {r.name for r in host.problems}
    assert "good2" not in {r.name for r in host.problems}
    assert "othernet" in host.architectures.names()
    assert "mlp" in host.architectures.names()


def test_strict_mode_turns_a_broken_plugin_into_an_error(fresh_host, plugin_dir, monkeypatch):
    bad = write_plugin(plugin_dir, "fake_zoo_bad2", "raise ImportError('nope')")
    with pytest.raises(PluginError, match="plugin bad2: failed to import"):
        host_with(fresh_host, monkeypatch, [bad], strict=True, load=["bad2"])


def test_load_only_named_plugins(fresh_host, monkeypatch):
    monkeypatch.setenv("ZOO_LOAD_PLUGINS", "mlp")
    host = fresh_host.PluginHost()
    assert host.architectures.names() == ["mlp"]
    # core components are always there
    assert "adam" in host.optimizers.names()


def test_unknown_name_lists_installed(fresh_host):
    host = fresh_host.get_host()
    with pytest.raises(ConfigError, match=r"unknown architecture 'nope'; installed: .*mlp"):
        host.architectures.get("nope")
