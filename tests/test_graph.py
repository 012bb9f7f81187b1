"""Layer graphs (zoo.graph) and merge layers: gradients through fan-out and every merge, a graph
equal to a Sequential gives the same bits, summaries, clear errors, and a graph architecture
that trains, conforms, checkpoints and resumes bit-exactly through ``zoo train --resume``."""

import json
import textwrap
from importlib.metadata import EntryPoint

import numpy as np
import pytest
from click.testing import CliRunner

from zoo.checkpoints.checkpoint import load_model
from zoo.checkpoints.format import read_checkpoint
from zoo.cli.main import cli
from zoo.errors import ConfigError, DataError, ZooError
from zoo.graph import Input, Model
from zoo.kit.gradcheck import check_layer
from zoo.layers import (
    Add,
    BatchNorm,
    Concatenate,
    Conv1D,
    Dense,
    Dropout,
    Flatten,
    Multiply,
    ReLU,
    Split,
    Tanh,
)
from zoo.model import Sequential


def rng(seed=0):
    return np.random.default_rng(seed)


# -- gradients -------------------------------------------------------------------------------------

def fan_out_and_every_merge():
    x = Input()
    h = Dense(6, activation="tanh")(x)                    # h feeds four layers
    summed = Add()([h, Dense(6)(h), Tanh()(h)])           # three inputs
    gated = Multiply()([summed, Dense(6, activation="sigmoid")(h)])
    a, b = Split([2, 4])(gated)                           # two outputs
    joined = Concatenate()([a, x, b, Multiply()([a, a])])  # one tensor twice
    return Model(x, Dense(3)(joined))


@pytest.mark.parametrize("make", [
    fan_out_and_every_merge,
    lambda: (lambda x: Model(x, Add()([x, x])))(Input()),
    lambda: (lambda x: Model(x, Dense(2)(Multiply()([x, Dense(5)(x)]))))(Input()),
], ids=["fan-out-and-merges", "input-twice", "multiply-by-input"])
def test_float64_gradients_through_graphs(make):
    check_layer(make(), (5,), max_entries=10_000)


def test_gradients_of_merges_alone():
    for layer, shapes in [(Add(), [(3, 2), (3, 2)]), (Multiply(), [(4,), (4,), (4,)]),
                          (Concatenate(axis=1), [(2, 3), (1, 3)])]:
        inputs = [Input() for _ in shapes]
        model = Model(inputs, layer(inputs))
        model.build(shapes, rng(), dtype=np.float64)
        xs = [rng(i).standard_normal((2, *s)) for i, s in enumerate(shapes)]
        out = model.forward([x.copy() for x in xs])
        g = rng(9).standard_normal(out.shape)
        grads = model.backward(g)
        for i, x in enumerate(xs):
            numeric = np.zeros_like(x)
            for idx in np.ndindex(x.shape):
                plus = [v.copy() for v in xs]
                minus = [v.copy() for v in xs]
                plus[i][idx] += 1e-6
                minus[i][idx] -= 1e-6
                numeric[idx] = (np.sum(model.forward(plus) * g)
                                - np.sum(model.forward(minus) * g)) / 2e-6
            np.testing.assert_allclose(grads[i], numeric, rtol=1e-6, atol=1e-8)


def test_merges_match_numpy():
    a, b = rng(1).standard_normal((2, 3, 4)), rng(2).standard_normal((2, 3, 4))
    add, mul, cat = Add(), Multiply(), Concatenate(axis=1)
    for layer in (add, mul, cat):
        layer.build([(3, 4), (3, 4)], rng())
    np.testing.assert_array_equal(add.forward([a, b]), a + b)
    np.testing.assert_array_equal(mul.forward([a, b]), a * b)
    np.testing.assert_array_equal(cat.forward([a, b]), np.concatenate([a, b], axis=1))
    assert cat.output_shape == (6, 4)
    split = Split([1, 3], axis=-1)
    assert split.build((3, 4), rng()) == [(3, 1), (3, 3)]
    left, right = split.forward(a)
    np.testing.assert_array_equal(left, a[..., :1])
    np.testing.assert_array_equal(right, a[..., 1:])


# -- a graph equal to a Sequential -----------------------------------------------------------------

def chain():
    return [Dense(8), BatchNorm(), ReLU(), Dropout(0.3), Dense(3)]


def test_a_chain_graph_gives_the_bits_of_sequential():
    seq = Sequential(chain())
    x = t = Input()
    for layer in chain():
        t = layer(t)
    graph = Model(x, t)
    for model in (seq, graph):
        model.build((5,), rng(4))
    assert [n for n, _ in graph.named_parameters()] == [n for n, _ in seq.named_parameters()]
    assert [n for n, _ in graph.named_buffers()] == [n for n, _ in seq.named_buffers()]
    data = rng(5).standard_normal((7, 5)).astype(np.float32)
    g = rng(6).standard_normal((7, 3)).astype(np.float32)
    for training in (True, False):
        out_s, out_g = seq.forward(data.copy(), training), graph.forward(data.copy(), training)
        assert out_s.dtype == out_g.dtype == np.float32
        assert np.array_equal(out_s, out_g)
    seq.forward(data.copy(), True)
    graph.forward(data.copy(), True)
    assert np.array_equal(seq.backward(g.copy()), graph.backward(g.copy()))
    for (name, p), (_, q) in zip(seq.named_parameters(), graph.named_parameters()):
        assert np.array_equal(p.grad, q.grad), name
    for name, value in seq.state_dict().items():
        assert np.array_equal(value, graph.state_dict()[name]), name


def test_training_a_chain_graph_gives_the_bits_of_sequential():
    from zoo.architecture import Architecture
    from zoo.kit.conformance import _HostWith
    from zoo.plugins import get_host
    from zoo.run import Run, RunConfig

    def as_graph(spec, options):
        x = t = Input()
        for layer in chain():
            t = layer(t)
        return Model(x, Dense(spec.output_size)(t))

    def as_stack(spec, options):
        return Sequential([*chain(), Dense(spec.output_size)])

    states = []
    for build in (as_graph, as_stack):
        arch = Architecture("chain", "a chain", ("classify",), build)
        run = Run(RunConfig(arch="chain", dataset="xor", epochs=3, seed=2),
                  host=_HostWith(get_host(), arch))
        run.fit()
        states.append(run.model.state_dict())
    assert sorted(states[0]) == sorted(states[1])
    for name, value in states[0].items():
        assert np.array_equal(value, states[1][name]), name


# -- summary and config ----------------------------------------------------------------------------

def residual_classifier(width=8, classes=3):
    x = Input(name="x")
    h = Dense(width, activation="relu")(x)
    y = Add()([h, Dense(width)(Dense(width, activation="relu")(h))])
    return Model(x, Dense(classes)(y), name="tiny")


def test_summary_lists_layers_shapes_parameters_and_inputs():
    model = residual_classifier()
    model.build((5,), rng())
    lines = model.summary().splitlines()
    assert lines[0].split() == ["layer", "output", "shape", "params", "inputs"]
    assert set(lines[1]) == {"-"}
    assert lines[2].split() == ["input", "(N,", "5)", "0"]
    assert lines[3].split()[-4:] == ["(N,", "8)", "48", "input"]
    assert lines[3].startswith("0 Dense(8, activation='relu')")
    assert lines[5].startswith("2 Dense(8)") and lines[5].split()[-2:] == ["72", "1"]
    assert lines[6].startswith("3 Add()") and lines[6].split()[-4:] == ["8)", "0", "0,", "2"]
    assert lines[7].startswith("4 Dense(3)") and lines[7].split()[-3:] == ["3)", "27", "3"]
    assert lines[8].split() == ["output", "4"]
    assert lines[9] == f"total parameters: {model.num_params:,}" == "total parameters: 219"
    split = (lambda x: Model(x, Split([2, 3])(x)))(Input())
    split.build((5,), rng())
    assert "(N, 2) (N, 3)" in split.summary()


def test_sequential_summary_is_unchanged():
    model = Sequential([Dense(4), ReLU()])
    model.build((3,), rng())
    assert model.summary().splitlines() == [
        "layer       output shape  params",
        "--------------------------------",
        "0 Dense(4)  (N, 4)            16",
        "1 ReLU()    (N, 4)             0",
        "total parameters: 16",
    ]


def test_config_describes_the_graph_and_is_stable():
    first, second = residual_classifier(), residual_classifier()
    config = first.get_config()
    assert config == second.get_config() == json.loads(json.dumps(config))
    assert config["connections"] == [["input"], ["0"], ["1"], ["0", "2"], ["3"]]
    assert config["outputs"] == ["4"] and config["inputs"] == [None]
    assert config["layers"][3] == "Add()"


# -- errors ----------------------------------------------------------------------------------------

def one_line(exc_info):
    text = str(exc_info.value)
    assert "\n" not in text and isinstance(exc_info.value, ZooError)
    return text


def test_a_layer_applied_to_an_incompatible_shape_is_named():
    x = Input()
    model = Model(x, Dense(3)(Conv1D(4, 3)(Dense(5)(x))))
    with pytest.raises(ConfigError) as exc:
        model.build((6,), rng())
    text = one_line(exc)
    assert text.startswith("graph layer 1 Conv1D on input (N, 5): ")
    assert "(5,)" in text


def test_mismatched_merge_shapes_name_the_layer_expected_and_received():
    x = Input()
    model = Model(x, Add()([Dense(4)(x), Dense(5)(x)]))
    with pytest.raises(ConfigError) as exc:
        model.build((3,), rng())
    assert one_line(exc) == ("graph layer 2 Add on input (N, 4) (N, 5): Add expects inputs of "
                             "one shape; received (N, 4), (N, 5)")
    x = Input()
    cat = Model(x, Concatenate(axis=1)([Dense(4)(Flatten()(x)), x]))
    with pytest.raises(ConfigError, match=r"graph layer 2 Concatenate .* expects inputs that "
                                          r"differ only on axis 1; received \(N, 4\), "
                                          r"\(N, 2, 2\)"):
        cat.build((2, 2), rng())


def test_a_cycle_is_refused():
    x = Input()
    first, second = Dense(4), Dense(4)
    h = second(first(x))
    with pytest.raises(ConfigError) as exc:
        Model(x, first(h))          # first's input is computed from first's output
    assert one_line(exc) == ("Model: the graph has a cycle: Dense -> Dense -> Dense; a layer "
                             "cannot take an input computed from its own output")
    x = Input()
    relu = ReLU(name="act")
    with pytest.raises(ConfigError, match="cycle: act -> Dense -> act"):
        Model(x, relu(Dense(3)(relu(x))))


def test_a_layer_called_twice_is_refused():
    x, y = Input(), Input()
    shared = Dense(3)
    with pytest.raises(ConfigError, match=r"layer Dense\(3\) is called 2 times; .* its own "
                                          r"layer"):
        Model([x, y], Add()([shared(x), shared(y)]))


def test_inputs_must_reach_an_output_and_outputs_need_listed_inputs():
    x, unused = Input(), Input()
    with pytest.raises(ConfigError) as exc:
        Model([x, unused], Dense(2)(x))
    assert one_line(exc) == ("Model: input 1 is not connected to any output; every input "
                             "must reach an output")
    other = Input(name="mask")
    with pytest.raises(ConfigError, match="depends on an Input.* not among the model's inputs "
                                          r"\(input 0\)"):
        Model(x, Add()([Dense(2)(x), Dense(2)(other)]))


def test_calls_with_the_wrong_number_of_inputs_are_refused():
    x, y = Input(), Input()
    with pytest.raises(ConfigError, match=r"Dense takes one input; received a list of 2"):
        Dense(3)([x, y])
    with pytest.raises(ConfigError, match="Add joins several inputs: call it on a list"):
        Add()(x)
    with pytest.raises(ConfigError, match="only tensors; received Tensor, ndarray"):
        Add()([x, np.zeros(3)])
    declared = Input(shape=(4,), name="features")
    model = Model(declared, Dense(2)(declared))
    with pytest.raises(ConfigError, match=r"features was declared with shape \(4,\); built for "
                                          r"\(5,\)"):
        model.build((5,), rng())


@pytest.mark.parametrize("kwargs, message", [
    ({"shape": (0, 3)}, r"shape must be positive integers; received shape=\(0, 3\)"),
    ({"shape": 5}, "shape must be a tuple of positive integers; received shape=5"),
    ({"name": 3}, "name must be a string; received name=3"),
])
def test_bad_inputs_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Input(**kwargs)


@pytest.mark.parametrize("make, message", [
    (lambda: Concatenate(axis=0), "axis 0 is the batch axis"),
    (lambda: Concatenate(axis=1.5), "axis must be an integer; received axis=1.5"),
    (lambda: Split([3]), r"sizes must list at least 2 piece sizes; received sizes=\[3\]"),
    (lambda: Split([3, 0]), "sizes must be a positive integer; received sizes=0"),
])
def test_bad_merge_configurations_are_refused(make, message):
    with pytest.raises(ConfigError, match=message):
        make()
    with pytest.raises(ConfigError, match=r"Split\(sizes=\[2, 2\]\) expects 4 entries on "
                                          r"axis -1; received input shape \(N, 3\)"):
        Split([2, 2]).build((3,), rng())
    with pytest.raises(ConfigError, match=r"axis=3 is out of range for inputs of shape "
                                          r"\(N, 2\)"):
        Concatenate(axis=3).build([(2,), (2,)], rng())


def test_forward_checks_merge_inputs():
    add = Add()
    add.build([(3,), (3,)], rng())
    with pytest.raises(DataError, match=r"Add expects input 1 of shape \(2, 3\); received "
                                        r"float64 array of shape \(2, 4\)"):
        add.forward([np.zeros((2, 3)), np.zeros((2, 4))])
    x = Input()
    model = Model(x, Dense(2)(Dense(3)(x)))
    model.build((4,), rng())
    with pytest.raises(DataError) as exc:
        model.forward(np.zeros((2, 5), np.float32))
    assert one_line(exc).startswith("graph layer 0 Dense: Dense expects input of shape "
                                    "(batch, 4); received float32 array of shape (2, 5)")


# -- multi-input models nest -----------------------------------------------------------------------

def test_a_two_input_model_is_a_layer_of_a_bigger_graph():
    a, b = Input(), Input()
    inner = Model([a, b], Concatenate()([Dense(3)(a), Multiply()([a, b])]))
    x = Input()
    h = Dense(4, activation="tanh")(x)
    outer = Model(x, Dense(2)(inner([h, Tanh()(x)])))
    check_layer(outer, (4,), max_entries=10_000)
    assert [n for n, _ in outer.named_parameters()][2:4] == ["2.0.weight", "2.0.bias"]
    assert inner.multi_input and inner.input_shape == [(4,), (4,)]
    with pytest.raises(ConfigError, match="the model takes 2 inputs; predict and the trainer "
                                          "feed one"):
        inner.predict(np.zeros((1, 4)))
    with pytest.raises(ConfigError, match=r"takes 2 inputs; build it with a list of 2 shapes"):
        Model([a, b], inner([a, b])).build((4,), rng())


def test_a_first_layer_that_skips_its_input_gradient_trains_in_a_graph():
    # The trainer tells a model's first layer (a GRU here) not to compute its input gradient;
    # the graph's input also feeds TimeMean, so the input's gradient has a None contribution.
    from zoo.architecture import Architecture
    from zoo.layers import GRU, TimeMean
    from zoo.testing import check_architecture

    def build(spec, options):
        x = Input()
        joined = Concatenate()([GRU(6)(x), TimeMean()(x)])
        return Model(x, Dense(spec.output_size)(joined))

    arch = Architecture("grugraph", "a GRU beside a mean", ("classify",), build,
                        data_kinds=("sequence",))
    assert check_architecture(arch)[-1] == "sequence/classify: training"


def test_calling_a_layer_on_an_array_still_runs_forward():
    dense = Dense(2)
    dense.build((3,), rng())
    x = rng(1).standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_array_equal(dense(x), dense.forward(x))


def test_a_two_output_model_is_a_layer_of_a_bigger_graph():
    a = Input()
    inner = Model(a, [Dense(2)(a), Tanh()(Dense(3)(a))])
    assert inner.num_outputs == 2
    x = Input()
    first, second = inner(Dense(4)(x))
    outer = Model(x, Concatenate()([second, first, Multiply()([first, first])]))
    check_layer(outer, (3,), max_entries=10_000)
    assert outer.output_shape == (7,) and inner.output_shape == [(2,), (3,)]


# -- a graph architecture: conformance, training, checkpoints, exact resume ------------------------

PLUGIN = '''
from zoo.architecture import Architecture, Option
from zoo.hookspecs import hookimpl


def build(spec, options):
    from zoo.graph import Input, Model
    from zoo.layers import Add, BatchNorm, Dense, Dropout, Flatten, ReLU

    width = options["width"]
    x = Input()
    h = Flatten()(x) if len(spec.input_shape) > 1 else x
    h = Dense(width, activation="relu")(h)
    for _ in range(options["blocks"]):
        body = Dense(width)(Dropout(0.2)(Dense(width, activation="relu")(h)))
        h = ReLU()(BatchNorm()(Add()([h, body])))
    return Model(x, Dense(spec.output_size)(h))


@hookimpl
def register_architectures(register):
    register(Architecture(
        name="graphnet", summary="a residual graph for tests", tasks=("classify", "regress"),
        data_kinds=("vector", "image"),
        build=build, options=(Option("width", int, 16, "features"),
                              Option("blocks", int, 2, "residual blocks")),
        defaults={"optimizer": "adam", "lr": 0.01}))
'''


@pytest.fixture
def graphnet(fresh_host, plugin_dir, monkeypatch):
    """The process-wide host, with ``graphnet`` installed from a plugin module."""
    (plugin_dir / "fake_zoo_graphnet.py").write_text(textwrap.dedent(PLUGIN))
    ep = EntryPoint(name="graphnet", value="fake_zoo_graphnet", group="zoo")
    original = fresh_host.PluginHost._entry_points
    monkeypatch.setattr(fresh_host.PluginHost, "_entry_points",
                        lambda self: [*original(self), ep])
    fresh_host.reset_host()
    return fresh_host.get_host()


def test_a_graph_architecture_passes_the_conformance_kit(graphnet):
    from zoo.testing import check_architecture

    done = check_architecture("graphnet", options={"width": 6}, host=graphnet)
    assert "vector/classify: training" in done and "image/classify: gradients" in done


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def tensors(path):
    return {k: np.array(v) for k, v in read_checkpoint(path).tensors.items()}


def test_a_residual_graph_trains_checkpoints_and_resumes_bit_exactly(graphnet, tmp_path):
    common = ["--arch", "graphnet", "--dataset", "xor", "-o", "width=12", "--seed", "3",
              "--batch-size", "48"]
    invoke("train", *common, "--epochs", "6", "--save", tmp_path / "straight.ckpt")
    invoke("train", *common, "--epochs", "3", "--save", tmp_path / "run.ckpt")
    invoke("train", "--resume", tmp_path / "run.ckpt", "--epochs", "6",
           "--save", tmp_path / "run.ckpt")
    straight, resumed = tensors(tmp_path / "straight.ckpt"), tensors(tmp_path / "run.ckpt")
    assert sorted(straight) == sorted(resumed)
    assert "model.5.running_mean" in straight  # BatchNorm statistics after the first Add
    for name in straight:
        assert np.array_equal(straight[name], resumed[name]), name

    model, spec, _, ck = load_model(tmp_path / "straight.ckpt", host=graphnet)
    assert isinstance(model, Model)
    rebuilt = graphnet.architectures.get("graphnet").build(spec, {"width": 12, "blocks": 2})
    assert model.get_config() == rebuilt.get_config()
    assert ck.metadata["generators"]  # the dropout layers' generators travel with the run
    evaluated = invoke("evaluate", tmp_path / "straight.ckpt", "--json").stdout
    accuracy = json.loads(evaluated)["metrics"]["accuracy"]
    assert accuracy > 0.9  # xor is not linearly separable; chance is 0.5


def test_info_shows_the_graph_built_for_a_dataset(graphnet):
    result = invoke("info", "graphnet")
    lines = result.stdout.splitlines()
    start = lines.index("model for mnist1d (input (40,), default options):")
    assert lines[start + 1].split() == ["layer", "output", "shape", "params", "inputs"]
    assert lines[start + 3].split() == ["input", "(N,", "40)", "0"]
    assert lines[start + 4].startswith("0 Dense(16, activation='relu')")
    assert lines[start + 4].split()[-4:] == ["(N,", "16)", "656", "input"]
    assert lines[start + 8].startswith("4 Add()") and lines[start + 8].endswith("0, 3")
    assert lines[-1] == "total parameters: 1,978"
    refused = CliRunner().invoke(cli, ["info", "graphnet", "--dataset", "sine"])
    assert refused.exit_code == 2
    assert "graphnet works on vector, image data; dataset sine is sequence data" \
        in refused.output
