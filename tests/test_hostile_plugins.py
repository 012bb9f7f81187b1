"""Hostile plugins: hijacks refused, junk registrations and exits isolated, one line each.

A plugin is code the user chose to install, and zoo runs it in-process; the host cannot stop a
plugin that sets out to patch zoo's modules. What it guarantees is the boundary a plugin
declares itself through: names and aliases (a taken word is refused, per kind), registrations
(validated when registered), commands (a zoo command cannot be replaced) and failures (anything
a plugin raises is isolated, SystemExit included, and reported in one line). The first part
drives the host in-process; the second installs a hostile distribution for real and runs
``zoo`` on it in normal and strict mode.
"""

import json
import sys

import click
import pytest
from test_plugin_install import pip_install, problem_lines, run
from test_plugins import host_with, write_plugin

from zoo.errors import PluginError

ARCH = """
from zoo.architecture import Architecture, Option
from zoo.hookspecs import hookimpl

def build(spec, options):
    raise RuntimeError("HIJACKED: the plugin's builder ran")

EVIL = Architecture(name="evil", summary="evil", tasks=("classify",), build=build)
"""


def hook(kind: str, body: str, header: str = ARCH) -> str:
    lines = "\n".join("    " + line for line in body.strip().splitlines())
    return f"{header}\n@hookimpl\ndef register_{kind}(register):\n{lines}\n"


# -- names and aliases --------------------------------------------------------------------------
HIJACKS = [
    ("architectures", 'register(EVIL, aliases=("mlp", "cnn"))', "architectures", "mlp",
     "architecture evil: alias 'mlp' is already registered by mlp; refused"),
    ("architectures", 'register(EVIL, aliases=("evil2",))\n'
                      'register(EVIL.__class__(**{**EVIL.__dict__, "name": "evil2"}))',
     "architectures", None,
     "architecture 'evil2' is already an alias of evil, registered by hijack"),
    ("datasets", 'from zoo.data.dataset import DatasetInfo\n'
                 'register(DatasetInfo("rings", "r", "classify", "vector", build), '
                 'aliases=("xor", "mnist1d"))',
     "datasets", "xor", "dataset rings: alias 'xor' is already registered by"),
    ("losses", 'register("my_ce", object, aliases=("ce",))', "losses", "ce",
     "loss my_ce: alias 'ce' is already an alias of softmax_cross_entropy"),
    ("optimizers", 'register("adam", object)', "optimizers", "adam",
     "optimizer 'adam' is already registered by zoo.plugins.builtin.optimizers"),
    ("stopping_criteria", 'register("all_of", object)', "criteria", None,
     "name 'all_of' is reserved by the --stop grammar"),
]


@pytest.mark.parametrize("hook_kind, body, kind, word, reason", HIJACKS)
@pytest.mark.parametrize("strict", [False, True])
def test_a_taken_name_or_alias_is_refused(fresh_host, plugin_dir, monkeypatch, hook_kind, body,
                                          kind, word, reason, strict):
    ep = write_plugin(plugin_dir, "fake_zoo_hijack", hook(hook_kind, body))
    if strict:
        with pytest.raises(PluginError) as caught:
            host_with(fresh_host, monkeypatch, [ep], strict=True)
        assert str(caught.value).startswith("plugin hijack: ")
        assert reason in str(caught.value) and "\n" not in str(caught.value)
        return
    host = host_with(fresh_host, monkeypatch, [ep])
    assert reason in host.records["hijack"].error
    if word is not None:
        assert host.registries[kind].owner(word) != "hijack"
        assert getattr(host.registries[kind].get(word), "plugin", "") != "hijack"


def test_an_alias_never_resolves_before_a_name(fresh_host):
    from zoo.plugins import Registry

    registry = Registry("thing")
    registry.add("a", 1, "p1", aliases=("b",))
    with pytest.raises(PluginError, match="thing 'b' is already an alias of a"):
        registry.add("b", 2, "p2")
    with pytest.raises(PluginError, match="thing c: alias 'a' is already registered by p1"):
        registry.add("c", 3, "p2", aliases=("a",))
    assert registry.get("b") == 1 and registry.names() == ["a"]


# -- junk registrations -------------------------------------------------------------------------
JUNK = [
    ("architectures", "register(object())", "expected a zoo.architecture.Architecture"),
    ("architectures", 'register("weird", object())', "takes one object"),
    ("architectures", "register(Architecture('nobuild', 's', ('classify',), None))",
     "architecture nobuild: build must be callable"),
    ("architectures", "register(Architecture('tele', 's', ('teleport',), build))",
     "unknown tasks ['teleport']"),
    ("architectures", "register(Architecture('k', 's', ('classify',), build, "
                      "data_kinds=('smell',)))", "unknown data_kinds ['smell']"),
    ("architectures", "register(Architecture('two words', 's', ('classify',), build))",
     "name must be one word"),
    ("architectures", "register(Architecture('o', 's', ('classify',), build, "
                      "options=(Option('n', int, 'x', 'h'),)))", "option n: its default 'x'"),
    ("architectures", "register(Architecture('o2', 's', ('classify',), build, "
                      "options=(Option('n', list, [], 'h'),)))", "type must be int"),
    ("architectures", "register(Architecture('d', 's', ('classify',), build, "
                      "defaults={'warp': 9}))", "unknown defaults ['warp']"),
    ("architectures", "register(EVIL, aliases='mlp')", "aliases must be a tuple of names"),
    ("datasets", "from zoo.data.dataset import DatasetInfo\n"
                 "register(DatasetInfo('d', 's', 'classify', 'vector', None))",
     "dataset d: load must be callable"),
    ("datasets", "from zoo.data.dataset import DatasetInfo\n"
                 "register(DatasetInfo('d', 's', 'dream', 'vector', build))",
     "dataset d: task must be one of"),
    ("optimizers", 'register("fortytwo", 42)', "fortytwo: the factory must be callable"),
    ("losses", "register(None, object)", "name must be one word"),
    ("stopping_criteria", 'register("max loss", object)', "name must be an identifier"),
]


@pytest.mark.parametrize("hook_kind, body, reason", JUNK)
def test_junk_registrations_are_refused_when_registered(fresh_host, plugin_dir, monkeypatch,
                                                        hook_kind, body, reason):
    bad = write_plugin(plugin_dir, "fake_zoo_junk", hook(hook_kind, body))
    good = write_plugin(plugin_dir, "fake_zoo_fine", hook("architectures", "register(EVIL)"))
    host = host_with(fresh_host, monkeypatch, [bad, good])
    error = host.records["junk"].error
    assert reason in error and "\n" not in error, error
    assert host.records["fine"].error is None and "evil" in host.architectures
    with pytest.raises(PluginError, match="plugin junk: "):
        fresh_host.PluginHost(strict=True)  # the entry points are patched already


# -- failures isolated ---------------------------------------------------------------------------
FAILURES = [
    ("import sys\nsys.exit(3)\n", "failed to import: SystemExit: 3"),
    ("raise SystemExit\n", "failed to import: SystemExit"),
    ("class Boom(BaseException):\n    pass\nraise Boom('deep')\n", "failed to import: Boom: deep"),
    ("class E(Exception):\n    def __str__(self):\n        raise RuntimeError('no')\nraise E()\n",
     "failed to import: E: (its message cannot be shown)"),
    ("raise ValueError('line one\\nline two')\n", "ValueError: line one line two"),
    ("raise ValueError('\\x1b[2J\\x1b[31mred')\n", "ValueError: \\x1b[2J\\x1b[31mred"),
    (hook("architectures", "raise SystemExit(4)"),
     "raised in register_architectures: SystemExit: 4"),
    (hook("architectures", "register(EVIL)\nimport sys\nsys.exit(0)"),
     "raised in register_architectures: SystemExit: 0"),
    (hook("architectures", "register(EVIL)", header=ARCH).replace("(register)", "(register, x)"),
     "invalid hook: Plugin 'failing' for hook 'register_architectures' hookimpl definition: "
     "register_architectures(register, x) Argument(s) {'x'} are declared in the hookimpl but "
     "can not be found in the hookspec"),
    ("def __getattr__(name):\n    raise SystemExit(5)\n", "SystemExit: 5"),
]


@pytest.mark.parametrize("source, reason", FAILURES)
def test_anything_a_plugin_raises_is_isolated(fresh_host, plugin_dir, monkeypatch, source,
                                              reason):
    bad = write_plugin(plugin_dir, "fake_zoo_failing", source)
    host = host_with(fresh_host, monkeypatch, [bad])
    record = host.records["failing"]
    assert reason in record.error and "\n" not in record.error, record.error
    assert record.registered == {}  # a hook that failed registers nothing
    assert "evil" not in host.architectures and "mlp" in host.architectures
    with pytest.raises(PluginError) as caught:
        fresh_host.PluginHost(strict=True)
    assert "\n" not in str(caught.value)


def test_ctrl_c_in_a_plugin_still_interrupts(fresh_host, plugin_dir, monkeypatch):
    bad = write_plugin(plugin_dir, "fake_zoo_ctrlc", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        host_with(fresh_host, monkeypatch, [bad])


def test_a_plugin_that_is_not_found_is_reported(fresh_host, monkeypatch):
    monkeypatch.setenv("ZOO_LOAD_PLUGINS", "mlp,nosuchplugin")
    host = fresh_host.PluginHost()
    assert host.records["nosuchplugin"].error.startswith(
        "not found: no installed plugin is named 'nosuchplugin' (ZOO_LOAD_PLUGINS); installed: ")
    assert host.architectures.names() == ["mlp"]
    with pytest.raises(PluginError, match="plugin nosuchplugin: not found"):
        fresh_host.PluginHost(strict=True)


# -- commands ------------------------------------------------------------------------------------
COMMANDS = """
import click
from zoo.hookspecs import hookimpl

@hookimpl
def register_commands(cli):
{body}
"""


def command_host(fresh_host, plugin_dir, monkeypatch, body, strict=False):
    source = COMMANDS.format(body="\n".join("    " + b for b in body.strip().splitlines()))
    ep = write_plugin(plugin_dir, "fake_zoo_cmds", source)
    group = click.Group("zoo")

    @group.command("train")
    def train():
        click.echo("the real train")

    host = host_with(fresh_host, monkeypatch, [ep], strict=strict)
    return host, group


def test_a_plugin_command_cannot_replace_a_zoo_command(fresh_host, plugin_dir, monkeypatch):
    body = """
@cli.command("train")
def evil():
    click.echo("HIJACKED")

@cli.command("hello")
def hello():
    click.echo("hello")
"""
    host, group = command_host(fresh_host, plugin_dir, monkeypatch, body)
    host.add_commands(group)
    assert host.records["cmds"].error == ("register_commands: command 'train' is already a zoo "
                                          "command; refused")
    assert host.records["cmds"].registered == {"commands": ["hello"]}
    from click.testing import CliRunner

    assert CliRunner().invoke(group, ["train"]).output == "the real train\n"
    assert CliRunner().invoke(group, ["hello"]).output == "hello\n"
    group.commands.pop("hello")
    host = fresh_host.PluginHost(strict=True)
    with pytest.raises(PluginError, match="plugin cmds: register_commands: command 'train'"):
        host.add_commands(group)


@pytest.mark.parametrize("body, reason", [
    ("cli.commands.pop('train')", "register_commands removed the command 'train'; kept"),
    ("cli.add_command(click.Command('x'))\nraise SystemExit(1)",
     "raised in register_commands: SystemExit: 1"),
    ("cli.commands['junk'] = 42", "register_commands added 42 as 'junk'"),
])
def test_a_plugin_cannot_remove_or_half_add_commands(fresh_host, plugin_dir, monkeypatch, body,
                                                      reason):
    host, group = command_host(fresh_host, plugin_dir, monkeypatch, body)
    host.add_commands(group)
    assert reason in host.records["cmds"].error
    assert set(group.commands) == {"train"}


# -- a hostile distribution installed for real ---------------------------------------------------
HOSTILE_PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "zoo-hostile"
version = "6.6.6"

[project.entry-points.zoo]
mlp = "zoo_hostile_mlp"
hijack = "zoo_hostile_hijack"
exits = "zoo_hostile_exits"

[tool.setuptools]
py-modules = ["zoo_hostile_mlp", "zoo_hostile_hijack", "zoo_hostile_exits"]
"""

HOSTILE_MLP = 'print("HIJACKED: zoo imported a plugin whose name is taken")\n'
HOSTILE_HIJACK = hook("architectures", 'register(EVIL, aliases=("mlp", "cnn"))\n'
                                       'register(object())\nregister("weird", object())') + """
@hookimpl
def register_optimizers(register):
    register("fortytwo", 42)

@hookimpl
def register_commands(cli):
    @cli.command("train")
    def train():
        print("HIJACKED: the plugin's train ran")
"""
HOSTILE_EXITS = "import sys\nsys.exit(3)\n"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    work = tmp_path_factory.mktemp("hostile")
    source = work / "zoo-hostile"
    source.mkdir()
    (source / "pyproject.toml").write_text(HOSTILE_PYPROJECT)
    (source / "zoo_hostile_mlp.py").write_text(HOSTILE_MLP)
    (source / "zoo_hostile_hijack.py").write_text(HOSTILE_HIJACK)
    (source / "zoo_hostile_exits.py").write_text(HOSTILE_EXITS)
    target = work / "site"
    pip_install(target, source)
    return work, target


EXPECTED_PROBLEMS = [
    "zoo: plugin exits not loaded: failed to import: SystemExit: 3",
    "zoo: plugin hijack not loaded: register_architectures: architecture evil: alias 'mlp' is "
    "already registered by mlp; refused",
    "zoo: plugin mlp (zoo-hostile 6.6.6) not loaded: the plugin name 'mlp' is already taken by "
    "zoo's built-in plugin mlp",
]


def test_installed_hostile_plugins_leave_zoo_working(hostile):
    work, site = hostile
    result = run(["zoo", "list", "--json"], site, cwd=work)
    assert result.returncode == 0, result.stderr
    assert "HIJACKED" not in result.stdout + result.stderr
    listed = json.loads(result.stdout)
    mlp = {a["name"]: a for a in listed["architectures"]}["mlp"]
    assert mlp["plugin"] == "mlp" and "perceptron" in mlp["summary"]
    assert "fortytwo" not in json.dumps(listed["optimizers"])
    lines = problem_lines(result.stderr)
    assert len(lines) == len(result.stderr.splitlines()) == 3, result.stderr
    for expected, line in zip(EXPECTED_PROBLEMS, lines):
        assert line.startswith(expected), line
    hijack = lines[1]
    for reason in ("alias 'mlp' is already registered by mlp; refused",
                   "expected a zoo.architecture.Architecture; received <object object at",
                   "takes one object; received 'weird' and <object object at",
                   "fortytwo: the factory must be callable (usually a class); received 42",
                   "command 'train' is already a zoo command; refused"):
        assert reason in hijack, hijack

    result = run(["zoo", "train", "--arch", "mlp", "--dataset", "xor", "--epochs", "1",
                  "-o", "hidden=4", "--json"], site, cwd=work)
    assert result.returncode == 0, result.stderr
    assert "HIJACKED" not in result.stdout + result.stderr
    assert json.loads(result.stdout)["arch"] == "mlp"


def test_installed_hostile_plugins_in_strict_mode(hostile):
    work, site = hostile
    for load, expected in [
        ("mlp", "zoo: error: plugin mlp (zoo-hostile 6.6.6): the plugin name 'mlp' is already "
                "taken by zoo's built-in plugin mlp"),
        ("exits", "zoo: error: plugin exits: failed to import: SystemExit: 3"),
        ("cnn,hijack", "zoo: error: plugin hijack: register_architectures: architecture evil: "
                       "alias 'cnn' is already registered by cnn; refused"),
        ("nosuchplugin", "zoo: error: plugin nosuchplugin: not found: no installed plugin is "
                         "named 'nosuchplugin' (ZOO_LOAD_PLUGINS); installed: "),
    ]:
        result = run(["zoo", "list"], site, cwd=work, ZOO_STRICT_PLUGINS="1",
                     ZOO_LOAD_PLUGINS=load)
        assert result.returncode == 2, (load, result.stderr)
        assert result.stdout == ""
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith(expected), result.stderr


def test_python_api_sees_the_same_boundary(hostile):
    work, site = hostile
    code = ("from zoo.plugins import get_host; h = get_host(); "
            "print(h.architectures.get('mlp').plugin, h.architectures.owner('cnn'), "
            "'fortytwo' in h.optimizers)")
    result = run([sys.executable, "-c", code], site, cwd=work)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["mlp", "cnn", "False"]


def test_the_conformance_kit_is_never_more_lenient_than_the_host():
    from zoo.architecture import Architecture
    from zoo.kit import conformance

    arch = Architecture("lossy", "a loss that is no function", ("classify",),
                        lambda spec, options: None, loss=42)
    with pytest.raises(AssertionError, match="architecture lossy: loss must be None or callable"):
        conformance.check_registration(arch)
