import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_host(monkeypatch):
    """A plugin host loaded from scratch for this test, forgotten afterwards."""
    from zoo import plugins

    monkeypatch.delenv("ZOO_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("ZOO_STRICT_PLUGINS", raising=False)
    plugins.reset_host()
    yield plugins
    plugins.reset_host()


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path where a test writes plugin modules."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("fake_zoo_")]:
        del sys.modules[name]


@pytest.fixture
def subprocess_env():
    """Environment for running ``zoo`` in a subprocess (no debug, no plugin filters)."""
    return {k: v for k, v in os.environ.items()
            if k not in ("ZOO_DEBUG", "ZOO_LOAD_PLUGINS", "ZOO_STRICT_PLUGINS")}


@pytest.fixture(autouse=True)
def _temporary_run_store(tmp_path_factory, monkeypatch):
    """Runs the CLI records during tests go to a temporary store, never ./zoo-runs.db."""
    monkeypatch.setenv("ZOO_STORE", str(tmp_path_factory.getbasetemp() / "zoo-runs.db"))
