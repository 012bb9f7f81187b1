"""Plugins installed for real, as users install them.

pip builds each package and installs it into a folder of its own (``pip install --target``);
``zoo`` then runs in a subprocess with that folder on ``PYTHONPATH``, where
``importlib.metadata`` finds the package's entry points exactly as in site-packages. The test
environment itself is never modified. Installs are shared through module-scoped fixtures.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from zoo.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "writing-plugins.md"
HAS_COMPARE = importlib.util.find_spec("zoo.cli.compare") is not None

BROKEN_PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "zoo-broken"
version = "0.2.0"

[project.entry-points.zoo]
broken = "zoo_broken"
misspelled = "zoo_misspelled"

[tool.setuptools]
py-modules = ["zoo_broken", "zoo_misspelled"]
"""

BROKEN_MODULE = '''\
"""A plugin whose import fails: it needs a library that is not installed."""
import libfoo_is_not_installed  # noqa: F401
'''

MISSPELLED_MODULE = '''\
"""A plugin with a misspelled hook name (no "s"): zoo must say so, not ignore it."""
from zoo.architecture import Architecture
from zoo.hookspecs import hookimpl


@hookimpl
def register_architecture(register):
    register(Architecture("ghost", "never registered", ("classify",), lambda s, o: None))
'''


def _build_isolation_needed() -> bool:
    """pip can build without an isolated environment only with a setuptools that has
    ``bdist_wheel`` (70.1+, or older ones with the ``wheel`` package); else it fetches one."""
    try:
        import setuptools
    except ImportError:
        return True
    major_minor = tuple(int(p) for p in re.findall(r"\d+", setuptools.__version__)[:2])
    return major_minor < (70, 1) and importlib.util.find_spec("wheel") is None


def pip_install(target: Path, *packages: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-input",
           "--disable-pip-version-check", "--target", str(target)]
    if not _build_isolation_needed():
        cmd.append("--no-build-isolation")
    done = subprocess.run(cmd + [str(p) for p in packages], capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, f"pip install failed:\n{done.stdout}\n{done.stderr}"


def run(args, *paths: Path, cwd: Path, timeout=300, **env) -> subprocess.CompletedProcess:
    """Run ``args`` (a list; ``zoo`` means ``python -m zoo``) with ``paths`` on PYTHONPATH."""
    if args[0] == "zoo":
        args = [sys.executable, "-m", "zoo", *args[1:]]
    pythonpath = [str(p) for p in paths]
    if os.environ.get("PYTHONPATH"):
        pythonpath.append(os.environ["PYTHONPATH"])
    clean = {k: v for k, v in os.environ.items()
             if k not in ("ZOO_DEBUG", "ZOO_LOAD_PLUGINS", "ZOO_STRICT_PLUGINS")}
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**clean, "PYTHONPATH": os.pathsep.join(pythonpath), **env},
                          check=False)


def problem_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("zoo: plugin ")]


# -- packages, each built and installed once per module ----------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("plugins")


@pytest.fixture(scope="module")
def scaffolded(work) -> tuple[Path, Path]:
    """``zoo new-plugin tinynet``, installed: (its source folder, the install folder)."""
    source = work / "zoo-tinynet"
    result = CliRunner().invoke(cli, ["new-plugin", "tinynet", "--dir", str(source)])
    assert result.exit_code == 0, result.output
    target = work / "site-tinynet"
    pip_install(target, source)
    return source, target


@pytest.fixture(scope="module")
def broken(work) -> Path:
    """A distribution with two broken plugins, installed: the install folder."""
    source = work / "zoo-broken"
    source.mkdir()
    (source / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (source / "zoo_broken.py").write_text(BROKEN_MODULE)
    (source / "zoo_misspelled.py").write_text(MISSPELLED_MODULE)
    target = work / "site-broken"
    pip_install(target, source)
    return target


# -- (a) a package written by `zoo new-plugin` --------------------------------------------------
def test_new_plugin_refuses_an_existing_folder_and_a_bad_name(scaffolded, work):
    source, _ = scaffolded
    before = sorted(p.name for p in source.rglob("*"))
    result = run(["zoo", "new-plugin", "tinynet", "--dir", str(source)], cwd=work)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"zoo: error: new-plugin: {source} already exists; choose another --dir "
        "(it is never overwritten)")
    assert sorted(p.name for p in source.rglob("*")) == before
    result = CliRunner().invoke(cli, ["new-plugin", "Tiny Net", "--dir", str(work / "x")])
    assert result.exit_code == 2
    assert "NAME must start with a lowercase letter" in result.output
    assert "received 'Tiny Net'" in result.output
    assert not (work / "x").exists()


def test_new_plugin_with_a_hyphenated_name(tmp_path):
    from zoo.testing import check_architecture

    result = CliRunner().invoke(cli, ["new-plugin", "wide-net", "--dir", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert 'wide-net = "zoo_wide_net"' in (tmp_path / "p" / "pyproject.toml").read_text()
    assert (tmp_path / "p" / "tests" / "test_zoo_wide_net.py").exists()
    path = tmp_path / "p" / "zoo_wide_net.py"
    spec = importlib.util.spec_from_file_location("zoo_wide_net", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.ARCHITECTURE.name == "wide-net" and module.ZOO_API == "1"
    check_architecture(module.ARCHITECTURE, kinds=["image"], tasks=["classify"],
                       checks=["shapes", "gradients"], options={"width": 8})


def test_scaffolded_plugin_passes_its_own_tests(scaffolded, work):
    source, target = scaffolded
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                  str(source / "tests")], target, cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b2 passed\b", result.stdout), result.stdout


def test_scaffolded_plugin_is_listed_and_trains(scaffolded, work):
    _, target = scaffolded
    result = run(["zoo", "plugins", "--json"], target, cwd=work)
    assert result.returncode == 0, result.stderr
    record = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}["tinynet"]
    assert record["version"] == "0.1.0" and record["error"] is None
    assert record["hooks"] == ["register_architectures"]
    assert record["registered"] == {"architectures": ["tinynet"]}

    result = run(["zoo", "train", "--arch", "tinynet", "--dataset", "xor", "--epochs", "1",
                  "-o", "width=16", "--json"], target, cwd=work)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["arch"] == "tinynet" and out["epochs"] == 1
    assert out["options"] == {"width": 16, "depth": 2, "activation": "relu"}
    assert 0 <= out["test"]["accuracy"] <= 1


# -- (b) broken plugins next to a good one ------------------------------------------------------
BROKEN_REASON = ("zoo: plugin broken not loaded: failed to import: ModuleNotFoundError: "
                 "No module named 'libfoo_is_not_installed'")


def assert_broken_named(stderr: str) -> None:
    lines = problem_lines(stderr)
    assert BROKEN_REASON in lines, stderr
    misspelled = [line for line in lines if line.startswith("zoo: plugin misspelled ")]
    assert len(misspelled) == 1 and "invalid hook" in misspelled[0], stderr
    assert "register_architecture" in misspelled[0]


def test_list_works_with_broken_plugins_installed(scaffolded, broken, work):
    result = run(["zoo", "list", "architectures", "--json"], broken, scaffolded[1], cwd=work)
    assert result.returncode == 0, result.stderr
    names = {a["name"] for a in json.loads(result.stdout)["architectures"]}
    assert {"mlp", "tinynet"} <= names and "ghost" not in names
    assert_broken_named(result.stderr)


def test_train_works_with_broken_plugins_installed(scaffolded, broken, work):
    result = run(["zoo", "train", "--arch", "tinynet", "--dataset", "xor", "--epochs", "1",
                  "--json"], broken, scaffolded[1], cwd=work)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["arch"] == "tinynet"
    assert_broken_named(result.stderr)


@pytest.mark.skipif(not HAS_COMPARE, reason="zoo compare is not part of this zoo yet")
def test_compare_works_with_broken_plugins_installed(scaffolded, broken, work):
    # Two worker processes: each must find the plugin through its entry point too.
    result = run(["zoo", "compare", "--arch", "mlp,tinynet", "--dataset", "xor", "--epochs", "1",
                  "--seeds", "1", "--jobs", "2", "--out", str(work / "compare"), "--no-store",
                  "--json"], broken, scaffolded[1], cwd=work)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["failed"] == 0
    assert {row["arch"]: row["status"] for row in out["rows"]} == {"mlp": "ok", "tinynet": "ok"}
    assert_broken_named(result.stderr)


def test_plugins_json_names_each_broken_plugin_with_its_reason(scaffolded, broken, work):
    result = run(["zoo", "plugins", "--json"], broken, scaffolded[1], cwd=work)
    assert result.returncode == 0, result.stderr
    records = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert records["broken"]["version"] == "0.2.0"
    assert records["broken"]["error"] == ("failed to import: ModuleNotFoundError: No module "
                                          "named 'libfoo_is_not_installed'")
    assert records["misspelled"]["error"].startswith("invalid hook: ")
    assert "register_architecture" in records["misspelled"]["error"]
    assert records["misspelled"]["registered"] == {}
    assert records["tinynet"]["error"] is None
    assert records["mlp"]["error"] is None


def test_strict_mode_is_one_clean_error(scaffolded, broken, work):
    result = run(["zoo", "list"], broken, scaffolded[1], cwd=work, ZOO_STRICT_PLUGINS="1",
                 ZOO_LOAD_PLUGINS="mlp,tinynet,broken")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        ("zoo: error: plugin broken: failed to import: ModuleNotFoundError: No module named "
         "'libfoo_is_not_installed'")]
    # Strict mode with only good plugins loaded works.
    result = run(["zoo", "list", "architectures", "--json"], broken, scaffolded[1], cwd=work,
                 ZOO_STRICT_PLUGINS="1", ZOO_LOAD_PLUGINS="mlp,tinynet")
    assert result.returncode == 0, result.stderr
    assert {a["name"] for a in json.loads(result.stdout)["architectures"]} == {"mlp", "tinynet"}
    assert problem_lines(result.stderr) == []


# -- (c) the tutorial, followed to the letter ---------------------------------------------------
def tutorial_files(text: str, upto: str | None = None) -> dict[str, str]:
    """The files the tutorial writes: each fenced block titled with a path (the last wins)."""
    if upto is not None:
        text = text[:text.index(upto)]
    blocks = re.finditer(r'^```\w+ title="([^"]+)"\n(.*?)^```', text, re.MULTILINE | re.DOTALL)
    return {m.group(1): m.group(2) for m in blocks}


def test_tutorial_part_one_architecture_conforms():
    from zoo.testing import check_architecture

    files = tutorial_files(TUTORIAL.read_text(), upto="## Part 2")
    assert set(files) == {"zoo-funnel/pyproject.toml", "zoo-funnel/zoo_funnel/__init__.py",
                          "zoo-funnel/tests/test_funnel.py"}
    module = types.ModuleType("zoo_funnel_part_one")
    source = files["zoo-funnel/zoo_funnel/__init__.py"]
    exec(compile(source, "part-one", "exec"), module.__dict__)  # noqa: S102 (the tutorial's code)
    check_architecture(module.FUNNEL, kinds=["vector", "image"], tasks=["classify"],
                       options={"width": 16})


def test_tutorial_part_three_graph_conforms():
    from zoo.testing import check_architecture

    files = tutorial_files(TUTORIAL.read_text())
    module = types.ModuleType("zoo_funnel_part_three")
    source = files["zoo-funnel/zoo_funnel/residual.py"]
    exec(compile(source, "part-three", "exec"), module.__dict__)  # noqa: S102
    check_architecture(module.RESFUNNEL, kinds=["vector", "image"], tasks=["classify"],
                       options={"width": 8})
    assert 'resfunnel = "zoo_funnel.residual"' in files["zoo-funnel/pyproject.toml"]


@pytest.fixture(scope="module")
def tutorial(work) -> tuple[Path, Path]:
    files = tutorial_files(TUTORIAL.read_text())
    for rel, content in files.items():
        path = work / "tutorial" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    source, target = work / "tutorial" / "zoo-funnel", work / "site-funnel"
    pip_install(target, source)
    return source, target


def test_tutorial_package_passes_its_tests_and_trains(tutorial, work):
    source, target = tutorial
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                  str(source / "tests")], target, cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b10 passed\b", result.stdout), result.stdout
    result = run(["zoo", "train", "--arch", "funnel", "--dataset", "xor", "--epochs", "1",
                  "-o", "activation=swish", "-o", "width=16", "--json"], target, cwd=work)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["arch"] == "funnel" and out["options"]["activation"] == "swish"
    result = run(["zoo", "train", "--arch", "resfunnel", "--dataset", "digits", "--epochs", "3",
                  "--json"], target, cwd=work)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["test"]["accuracy"] > 0.8
    # `zoo list` imports the plugin but never numba: the kernel loads only when a model builds.
    code = ("import sys; from zoo.plugins import get_host; host = get_host(); "
            "assert 'funnel' in host.architectures; print('numba' in sys.modules)")
    result = run([sys.executable, "-c", code], target, cwd=work)
    assert result.stdout.strip() == "False", result.stderr


def test_tutorial_shell_commands_name_real_options():
    """Every `zoo ...` line of the tutorial parses (click accepts its options)."""
    text = TUTORIAL.read_text()
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        for line in textwrap.dedent(block).splitlines():
            if not line.startswith("zoo "):
                continue
            args = line.split()[1:]
            command = cli.get_command(None, args[0])
            if command is None and args[0] == "compare" and not HAS_COMPARE:
                continue
            assert command is not None, f"the tutorial runs an unknown command: {line}"
            ctx = command.make_context(args[0], [a.strip('"') for a in args[1:]],
                                       resilient_parsing=False)
            assert ctx.params is not None
