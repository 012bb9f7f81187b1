"""The example plugin examples/zoo-resmlp, installed as CI installs it, used through zoo.

CI's ``.ci/run`` installs it next to zoo (``pip install -e ".[test]" ./examples/zoo-resmlp``),
so these tests run there; they are skipped only where the example is not installed.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "zoo-resmlp"

pytestmark = pytest.mark.skipif(
    not any(ep.name == "resmlp" for ep in metadata.entry_points(group="zoo")),
    reason="the example plugin is not installed: pip install ./examples/zoo-resmlp "
           "(.ci/run does)")


def zoo(*args, cwd):
    env = {k: v for k, v in os.environ.items()
           if k not in ("ZOO_DEBUG", "ZOO_LOAD_PLUGINS", "ZOO_STRICT_PLUGINS")}
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300, check=False)


def test_zoo_train_arch_resmlp(tmp_path):
    result = zoo("train", "--arch", "resmlp", "--dataset", "xor", "--epochs", "3",
                 "-o", "blocks=1", "-o", "width=32", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "plugin resmlp" not in result.stderr
    out = json.loads(result.stdout)
    assert out["arch"] == "resmlp" and out["epochs"] == 3
    # stem 2->32, one block of two 32->32 layers, head 32->2
    assert out["params"] == (2 * 32 + 32) + 2 * (32 * 32 + 32) + (32 * 2 + 2)
    assert out["test"]["accuracy"] > 0.75  # XOR is not linearly separable: the blocks learn


def test_zoo_plugins_lists_resmlp(tmp_path):
    result = zoo("plugins", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}["resmlp"]
    assert record == {"name": "resmlp", "version": "0.1.0", "module": "zoo_resmlp",
                      "builtin": False, "hooks": ["register_architectures"],
                      "registered": {"architectures": ["resmlp"]}, "error": None}


@pytest.mark.skipif(importlib.util.find_spec("zoo.cli.compare") is None,
                    reason="zoo compare is not part of this zoo yet")
def test_zoo_compare_includes_resmlp(tmp_path, monkeypatch):
    from zoo.cli.main import cli

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["compare", "--arch", "mlp,resmlp", "--dataset", "xor",
                                      "--epochs", "1", "--seeds", "1", "--jobs", "1",
                                      "-o", "resmlp.width=16", "--out", str(tmp_path / "out"),
                                      "--no-store", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["failed"] == 0
    rows = {row["arch"]: row for row in out["rows"]}
    assert set(rows) == {"mlp", "resmlp"}
    assert rows["resmlp"]["status"] == "ok" and rows["resmlp"]["options"]["width"] == 16


def test_the_example_passes_its_own_tests(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(EXAMPLE)], capture_output=True, text=True, cwd=tmp_path,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b6 passed\b", result.stdout), result.stdout
