"""The ``linear`` architecture, the MNIST-1D paper's models as ``preset=mnist1d`` and the
training defaults a preset brings (Adam 1e-2, batch 100 in data order, 8001 steps, no early
stopping), checked against the reference's procedure."""

import numpy as np
import pytest

from zoo.data.spec import DataSpec
from zoo.errors import ConfigError
from zoo.initializers import uniform_fan_in
from zoo.kit.gradcheck import check_layer
from zoo.layers.dense import Dense
from zoo.layers.residual import Residual
from zoo.model import Sequential
from zoo.run import Run, RunConfig

MNIST1D = DataSpec((40,), "vector", "classify", 10, num_classes=10, name="mnist1d")
# Parameter counts of the reference models (the repository's notebook prints them), except
# the GRU: PyTorch keeps two bias vectors per gate (b_ih and b_hh), zoo one for the reset and
# update gates, where only their sum matters (2 x 6 x 2 directions = 24 fewer, same function).
REFERENCE_PARAMS = {"linear": 410, "mlp": 15210, "cnn": 5210, "gru": 5134 - 24}


def test_residual_adds_its_input_and_passes_gradients_along_both_paths():
    layer = Residual([Dense(5, activation="tanh"), Dense(5)])
    check_layer(layer, (5,), batch=4)
    x = np.random.default_rng(0).standard_normal((3, 5))
    np.testing.assert_allclose(layer.forward(x), x + layer.body.forward(x), atol=1e-12)
    model = Sequential([Residual([Dense(5)])])
    model.build((5,), np.random.default_rng(0))
    assert [name for name, _ in model.named_parameters()] == ["0.body.0.weight", "0.body.0.bias"]
    with pytest.raises(ConfigError, match=r"Residual: the body must keep the input shape \(5,\)"):
        Residual([Dense(4)]).build((5,), np.random.default_rng(0))


def test_uniform_fan_in_is_pytorchs_default_range():
    w = uniform_fan_in((400, 100), 400, 100, np.random.default_rng(0))
    assert w.dtype == np.float32 and np.abs(w).max() <= 1 / 20
    assert np.abs(w).max() > 0.049  # fills the range, not a narrower one


@pytest.mark.parametrize("arch", ["linear", "mlp", "cnn", "gru"])
def test_presets_build_the_reference_models(arch, fresh_host):
    from zoo.kit.conformance import build_model, get_architecture

    model = build_model(get_architecture(arch), MNIST1D, {"preset": "mnist1d"})
    assert model.num_params == REFERENCE_PARAMS[arch]
    assert model.output_shape == (10,)


def test_the_cnn_preset_halves_40_points_to_5_positions_of_25_channels(fresh_host):
    from zoo.kit.conformance import build_model, get_architecture

    model = build_model(get_architecture("cnn"), MNIST1D, {"preset": "mnist1d"})
    shapes = [layer.output_shape for layer in model.layers if type(layer).__name__ == "Conv1D"]
    assert shapes == [(19, 25), (10, 25), (5, 25)]


def test_the_gru_preset_flattens_every_step_of_both_directions(fresh_host):
    from zoo.kit.conformance import build_model, get_architecture

    model = build_model(get_architecture("gru"), MNIST1D, {"preset": "mnist1d"})
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["VectorToSequence", "Bidirectional", "Flatten", "Dense"]
    assert model.layers[1].output_shape == (40, 12)


@pytest.mark.parametrize("arch", ["linear", "mlp", "cnn", "gru"])
def test_presets_conform(arch, fresh_host):
    from zoo.testing import check_architecture

    check_architecture(arch, kinds=["vector"], options={"preset": "mnist1d"},
                       checks=["shapes", "gradients"])


def test_linear_conforms_on_every_kind(fresh_host):
    from zoo.testing import check_architecture

    done = check_architecture("linear")
    assert "image/regress: shapes" in done and "vector/classify: gradients" in done


def test_a_preset_brings_the_papers_training_protocol():
    run = Run(RunConfig(arch="mlp", options={"preset": "mnist1d"}))
    assert (run.optimizer_name, run.lr, run.batch_size) == ("adam", 1e-2, 100)
    assert run.config.validation_split == 0.0 and len(run.x_train) == 4000
    names = [c.name for c in run.engine.criteria]
    assert "max_steps" in names and "early_stopping" not in names and "max_epochs" not in names
    assert run.engine.criteria[0].steps == 8001  # train.py: range(total_steps + 1), 8000 + 1
    assert run.trainer.shuffle is False  # train.py slices its batches in the stored order
    # The user's flags still win; without the preset the architecture's defaults apply.
    mine = Run(RunConfig(arch="mlp", options={"preset": "mnist1d"}, lr=3e-3, epochs=2,
                         validation_split=0.2))
    assert mine.lr == 3e-3 and len(mine.x_train) == 3200
    assert [c.name for c in mine.engine.criteria][0] == "max_epochs"
    plain = Run(RunConfig(arch="mlp"))
    assert plain.config.validation_split == 0.1 and plain.trainer.shuffle is True
    assert "early_stopping" in [c.name for c in plain.engine.criteria]


def test_a_preset_runs_its_step_budget_and_keeps_the_last_weights():
    from zoo.run import train

    result = train(RunConfig(arch="linear", options={"preset": "mnist1d"}, stop=("max_steps=60",)))
    assert result.steps == 60 and result.stop_reason.startswith("max_steps")
    assert result.val == {}  # trained on the whole training split, as the paper did


@pytest.mark.slow
def test_the_cheap_rows_of_the_papers_table():
    """Logistic regression within 3 points of the paper's 32%, the MLP far above it (5 seeds,
    the paper's protocol). docs/mnist1d.md has the full table, CNN and GRU included."""
    from zoo.compare.runner import Comparison

    comparison = Comparison(["linear", "mlp"], seeds=range(5), dataset="mnist1d",
                            options={"linear": {"preset": "mnist1d"},
                                     "mlp": {"preset": "mnist1d"}})
    result = comparison.run(workers=1)
    accuracy = {s["arch"]: s["metrics"]["accuracy"] for s in result["summary"]}
    print({arch: round(a["mean"], 4) for arch, a in accuracy.items()})
    assert abs(accuracy["linear"]["mean"] - 0.32) <= 0.03
    assert accuracy["mlp"]["mean"] >= 0.60
    assert result["paired"]["better"] == "mlp" and result["paired"]["significant"]
    assert all(r["steps"] == 8001 for r in result["rows"])


def test_the_mlp_preset_starts_from_pytorchs_default_initialisation():
    """nn.Linear's default: weights and biases uniform in +-1/sqrt(fan_in), the biases with
    the weight's fan_in (40 for the first layer, 100 for the others)."""
    run = Run(RunConfig(arch="mlp", options={"preset": "mnist1d"}, seed=3))
    state = run.model.state_dict()
    for prefix, fan_in in [("0.", 40), ("1.body.0.", 100), ("2.", 100)]:
        limit = 1 / np.sqrt(fan_in)
        weight, bias = state[prefix + "weight"], state[prefix + "bias"]
        assert weight.shape[0] == fan_in
        assert np.abs(weight).max() <= limit and np.abs(bias).max() <= limit
        assert np.abs(weight).max() > 0.98 * limit  # fills the range, not a narrower one
        # Uniform, not normal: the standard deviation of U(-l, l) is l / sqrt(3).
        assert abs(weight.std() / (limit / np.sqrt(3)) - 1) < 0.05
        assert np.count_nonzero(bias) == bias.size  # biases are drawn too, not zeros
    assert np.abs(state["0.bias"]).max() > 0.12  # beyond 1/sqrt(100): fan_in is 40


@pytest.mark.parametrize("arch", ["linear", "mlp", "cnn", "gru"])
def test_every_presets_output_layer_starts_as_pytorchs_linear(arch):
    run = Run(RunConfig(arch=arch, options={"preset": "mnist1d"}, seed=1))
    output = run.model.layers[-1]
    assert isinstance(output, Dense)
    weight, bias = output.weight.value, output.bias.value
    limit = 1 / np.sqrt(weight.shape[0])  # fan_in: 40, 100, 125 and 480 features
    assert np.abs(weight).max() <= limit and np.abs(bias).max() <= limit
    assert np.abs(weight).max() > 0.98 * limit
    assert np.count_nonzero(bias) == bias.size


def _reference_mlp_training(params, x, y, steps, lr=1e-2, betas=(0.9, 0.999), eps=1e-8):
    """The reference procedure written out in numpy: MLPBase's forward pass (relu(x W1 + b1),
    h + relu(h W2 + b2), then W3), mean softmax cross-entropy, PyTorch's Adam, and the batches
    of train.py: ``x[bix:bix + 100]`` with ``bix = (step * 100) % len(x)``."""
    p = {k: v.copy() for k, v in params.items()}
    names = {"w1": "0.weight", "b1": "0.bias", "w2": "1.body.0.weight",
             "b2": "1.body.0.bias", "w3": "2.weight", "b3": "2.bias"}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(a) for k, a in p.items()}
    for step in range(steps):
        bix = (step * 100) % len(x)
        xb, yb = x[bix:bix + 100], y[bix:bix + 100]
        w = {k: p[name] for k, name in names.items()}
        a1 = xb @ w["w1"] + w["b1"]
        h1 = np.maximum(a1, 0)
        a2 = h1 @ w["w2"] + w["b2"]
        h2 = h1 + np.maximum(a2, 0)
        out = h2 @ w["w3"] + w["b3"]
        prob = np.exp(out - out.max(axis=1, keepdims=True))
        prob /= prob.sum(axis=1, keepdims=True)
        g3 = prob
        g3[np.arange(len(yb)), yb] -= 1
        g3 /= len(yb)
        g_h2 = g3 @ w["w3"].T
        g2 = g_h2 * (a2 > 0)
        g1 = (g_h2 + g2 @ w["w2"].T) * (a1 > 0)
        grads = {"w3": h2.T @ g3, "b3": g3.sum(0), "w2": h1.T @ g2, "b2": g2.sum(0),
                 "w1": xb.T @ g1, "b1": g1.sum(0)}
        t = step + 1
        for k, name in names.items():
            m[name] = betas[0] * m[name] + (1 - betas[0]) * grads[k]
            v[name] = betas[1] * v[name] + (1 - betas[1]) * grads[k] ** 2
            denom = np.sqrt(v[name]) / np.sqrt(1 - betas[1] ** t) + eps
            p[name] -= lr / (1 - betas[0] ** t) * m[name] / denom
    return p


def test_the_mlp_preset_trains_step_by_step_as_the_reference_procedure():
    """45 steps (past the first epoch of 40 batches) in float64 against the reference
    procedure in plain numpy, from the same initial weights: the same batches in the same
    order, the same loss and the same Adam update, to rounding."""
    run = Run(RunConfig(arch="mlp", options={"preset": "mnist1d"}, dtype="float64",
                        stop=("max_steps=45",)))
    start = {k: v.copy() for k, v in run.model.state_dict().items()}
    run.fit()
    assert run.trainer.step == 45
    expected = _reference_mlp_training(start, run.x_train.astype(np.float64), run.y_train, 45)
    trained = run.model.state_dict()
    for name, value in expected.items():
        np.testing.assert_allclose(trained[name], value, rtol=1e-9, atol=1e-12, err_msg=name)


def test_the_plugin_host_refuses_presets_it_cannot_apply():
    from dataclasses import replace

    from zoo_plugins.linear import LINEAR

    from zoo.errors import PluginError
    from zoo.plugins.validate import check_registration

    check_registration("architectures", "architecture", LINEAR, None, ())
    for presets, message in [({"lenet5": {}}, "no option 'preset' offers 'lenet5'"),
                             ({"mnist1d": {"speed": 1}}, "unknown defaults ['speed']"),
                             ({"mnist1d": 3}, "must be a dict")]:
        with pytest.raises(PluginError, match=message.replace("[", r"\[").replace("]", r"\]")):
            check_registration("architectures", "architecture", replace(LINEAR, presets=presets),
                               None, ())
