"""docs/plugin-hooks.md documents every hook and argument, and its examples work as plugins."""

import inspect
import re
import textwrap
from importlib.metadata import EntryPoint

import numpy as np
import pytest

from zoo import hookspecs

DOC = "docs/plugin-hooks.md"
HEADING = re.compile(r"^## (\w+)\((.*)\)\s*$", re.MULTILINE)
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def hookspec_functions() -> dict:
    return {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(fn, "zoo_spec")}


@pytest.fixture(scope="module")
def doc(request) -> str:
    return (request.config.rootpath / DOC).read_text(encoding="utf-8")


def sections(doc: str) -> dict:
    """``{hook name: (argument names, section text)}`` for each ``## name(args)`` heading."""
    found = {}
    matches = list(HEADING.finditer(doc))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else doc.find("\n## ", m.end())
        args = [a.split("=")[0].strip(" *") for a in m.group(2).split(",") if a.strip(" *")]
        found[m.group(1)] = (args, doc[m.end():end if end != -1 else len(doc)])
    return found


def test_every_hook_is_documented_under_its_exact_signature(doc):
    documented = sections(doc)
    for name, fn in hookspec_functions().items():
        assert name in documented, f"{DOC} has no '## {name}(...)' heading"
        args = list(inspect.signature(fn).parameters)
        assert documented[name][0] == args, (
            f"{DOC}: the heading of {name} lists {documented[name][0]}; the hook takes {args}")
        body = documented[name][1]
        for arg in args:
            assert re.search(rf"^- `{arg}`", body, re.MULTILINE), (
                f"{DOC}: {name} does not describe its argument `{arg}` in its Parameters list")
        assert FENCE.search(body), f"{DOC}: {name} has no Python example"


def test_no_heading_documents_a_hook_that_does_not_exist(doc):
    stale = set(sections(doc)) - set(hookspec_functions())
    assert not stale, f"{DOC} documents hooks zoo does not have: {sorted(stale)}"


def test_every_python_block_compiles(doc):
    for block in FENCE.findall(doc):
        compile(block, DOC, "exec")


# -- the examples, loaded as real plugins -------------------------------------------------------
@pytest.fixture
def load_example(doc, fresh_host, plugin_dir, monkeypatch):
    """Write a hook's example to a module, load it through an entry point, return the host."""

    def load(hook: str):
        block = FENCE.search(sections(doc)[hook][1]).group(1)
        module = f"fake_zoo_docs_{hook}"
        (plugin_dir / f"{module}.py").write_text(textwrap.dedent(block))
        ep = EntryPoint(name=f"docs-{hook}", value=module, group="zoo")
        original = fresh_host.PluginHost._entry_points
        monkeypatch.setattr(fresh_host.PluginHost, "_entry_points",
                            lambda self: [*original(self), ep])
        host = fresh_host.PluginHost(strict=False)
        fresh_host.reset_host(host)
        record = host.records[f"docs-{hook}"]
        assert record.error is None
        assert record.hooks == [hook]
        return host, record, __import__(module)

    return load


def test_example_register_architectures(load_example):
    from zoo.testing import check_architecture

    host, record, _ = load_example("register_architectures")
    assert record.registered == {"architectures": ["logreg"]}
    assert host.architectures.get("softmax-regression").name == "logreg"
    check_architecture("logreg", kinds=["vector", "image"], tasks=["classify"],
                       options={"dropout": 0.2}, host=host)


def test_example_register_datasets(load_example):
    from zoo.data.load import load_dataset

    host, record, _ = load_example("register_datasets")
    assert record.registered == {"datasets": ["rings"]}
    data = load_dataset("rings", seed=3, host=host)
    assert data.x_train.shape == (480, 2) and data.x_test.shape == (120, 2)
    assert data.classes == ["inner", "outer"] and data.describe()["licence"] == "CC0"
    again = load_dataset("rings", seed=3, host=host, n=100)
    assert again.x_train.shape == (80, 2)
    # outer ring points lie further out than inner ones
    radius = np.hypot(*data.x_train.T)
    assert radius[data.y_train == 1].mean() > radius[data.y_train == 0].mean() + 0.8


def test_example_register_losses(load_example):
    from zoo.errors import ConfigError, DataError
    from zoo.kit.gradcheck import check_loss

    host, record, module = load_example("register_losses")
    assert record.registered == {"losses": ["huber"]}
    loss = host.losses.get("smooth_l1")(delta=0.5)
    rng = np.random.default_rng(0)
    pred, target = rng.standard_normal((6, 2)), rng.standard_normal((6, 2))
    check_loss(loss, pred, target)
    r = pred - target
    expected = np.where(np.abs(r) <= 0.5, 0.5 * r**2, 0.5 * (np.abs(r) - 0.25)).mean()
    assert loss.forward(pred, target) == pytest.approx(expected)
    with pytest.raises(ConfigError, match="delta must be a positive number; received delta=0"):
        module.Huber(delta=0)
    with pytest.raises(DataError, match="targets must have the predictions' shape"):
        loss.forward(pred, target[:, :1])
    assert repr(loss) == "Huber(delta=0.5)"


def test_example_register_optimizers(load_example):
    host, record, _ = load_example("register_optimizers")
    assert record.registered == {"optimizers": ["signsgd"]}
    opt = host.optimizers.get("signsgd")(lr=0.1)
    params = np.array([1.0, -2.0, 0.55])
    for _ in range(5):
        opt.step([params], [2 * params])  # the gradient of sum(params**2)
    np.testing.assert_allclose(params, [0.5, -1.5, 0.05])
    state = opt.state_dict()
    assert state["step"] == 5 and state["slots"] == {}
    fresh = host.optimizers.get("signsgd")(lr=1.0)
    fresh.load_state_dict(state)
    assert fresh.lr == 0.1 and fresh.iterations == 5


def test_example_register_stopping_criteria(load_example):
    from zoo.errors import ConfigError
    from zoo.training.state import TrainState
    from zoo.training.stopspec import parse_stop

    host, record, _ = load_example("register_stopping_criteria")
    assert record.registered == {"criteria": ["max_loss"]}
    criterion = parse_stop("max_loss=10", host.criteria)
    criterion.update(TrainState("epoch", 3, 30, 1.0, 4.0))
    assert not criterion.stop
    criterion.update(TrainState("epoch", 4, 40, 1.2, 12.5))
    assert criterion.stop and "rose above 10 at epoch 4" in criterion.reason
    assert repr(parse_stop(repr(criterion), host.criteria)) == repr(criterion)
    with pytest.raises(ConfigError, match="ceiling must be a finite number"):
        parse_stop("max_loss(ceiling=inf)", host.criteria)


def test_example_register_commands(load_example):
    import click
    from click.testing import CliRunner

    host, _, _ = load_example("register_commands")

    @click.group()
    def cli():
        pass

    host.add_commands(cli)
    assert host.records["docs-register_commands"].error is None
    result = CliRunner().invoke(cli, ["count-params", "mlp", "--dataset", "xor",
                                      "-o", "hidden=8"])
    assert result.exit_code == 0, result.output
    # Flatten-free MLP on 2 inputs: 2*8 + 8 weights and biases, then 8*2 + 2 for 2 classes
    assert result.output.strip() == "mlp on xor: 42 parameters"


def test_example_register_schedules(load_example):
    from zoo.errors import ConfigError
    from zoo.spec import SCHEDULE, parse_spec

    host, record, _ = load_example("register_schedules")
    assert record.registered == {"schedules": ["inverse_sqrt"]}
    schedule = parse_spec("rsqrt(warmup_steps=4)", host.schedules, SCHEDULE).build(SCHEDULE, "")
    rates = [schedule.lr(1.0, step, 0) for step in range(1, 17)]
    assert rates[:4] == [0.25, 0.5, 0.75, 1.0] and rates[15] == pytest.approx(0.5)
    assert repr(schedule) == "inverse_sqrt(warmup_steps=4)"
    with pytest.raises(ConfigError, match="warmup_steps must be a positive integer"):
        parse_spec("inverse_sqrt(warmup_steps=0)", host.schedules, SCHEDULE).build(SCHEDULE, "")


def test_example_register_metrics(load_example):
    host, record, _ = load_example("register_metrics")
    assert record.registered == {"metrics": ["medae"]}
    metric = host.metrics.get("medae")
    outputs = np.array([[1.0], [2.0], [10.0]])
    target = np.array([[1.5], [2.0], [0.0]])
    assert metric.compute(outputs, target, None) == 0.5  # |diffs| 0.5, 0, 10
    assert metric.plugin == "docs-register_metrics" and not metric.maximise
