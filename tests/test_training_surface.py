"""What a Keras or Lightning user reaches for first: specs for optimizers, losses, schedules and
datasets, task-fitting defaults, train accuracy, F1 and the confusion matrix, exact resume."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from zoo.checkpoints.format import read_checkpoint
from zoo.cli.main import cli
from zoo.errors import ConfigError
from zoo.run import Run, RunConfig, train

SMALL_CNN = ("-o", "channels=8,8", "-o", "hidden=32")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def tensors(path):
    return read_checkpoint(path)[0]


# -- the commands ------------------------------------------------------------------------

def test_cnn_sgd_nesterov_cosine_trains_saves_and_resumes_bit_exactly(tmp_path):
    common = ("train", "--arch", "cnn", *SMALL_CNN, "--optimizer",
              "sgd(momentum=0.9,nesterov=true)", "--schedule", "cosine(warmup_epochs=2)",
              "--lr", "0.05", "--no-store")
    straight, part = tmp_path / "four.ckpt", tmp_path / "two.ckpt"
    result = run(*common, "--epochs", 4, "--save", straight, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["optimizer"] == "sgd" and out["optimizer_config"]["nesterov"] is True
    assert out["optimizer_config"]["momentum"] == 0.9
    assert out["schedule"] == "cosine(warmup_epochs=2.0, min_lr=0.0, epochs=None)"
    assert out["loss"] == "softmax_cross_entropy" and out["epochs"] == 4
    assert "optimizer SGD(lr=0.05, momentum=0.9, nesterov=True" in result.stderr

    assert run(*common, "--epochs", 2, "--save", part).exit_code == 0
    resumed = run("train", "--resume", part, "--epochs", 4, "--no-store")
    assert resumed.exit_code == 0, resumed.output
    a, b = tensors(straight), tensors(part)
    assert set(a) == set(b)
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    meta = read_checkpoint(part)[1]
    assert meta["schedule"]["spec"].startswith("cosine(") and meta["trainer"]["epoch"] == 4
    assert meta["training"]["optimizer_spec"] == "sgd(momentum=0.9, nesterov=true)"


def test_the_learning_rate_follows_the_schedule_step_by_step():
    rates = []

    class Spy:
        def __init__(self, trainer_ref):
            self.ref = trainer_ref

    config = RunConfig(arch="mlp", dataset="xor", epochs=3, batch_size=100,
                       optimizer="sgd(momentum=0.9)", lr=0.1, stop=("max_epochs=3",),
                       schedule="cosine(warmup_epochs=1)", options={"hidden": "8"})
    r = Run(config)
    original = r.optimizer.step

    def step(params, grads):
        rates.append(r.optimizer.lr)
        original(params, grads)

    r.optimizer.step = step
    r.fit()
    per_epoch = r.trainer.batches_per_epoch
    total = 3 * per_epoch
    expected = [0.1 * k / per_epoch if k <= per_epoch else
                0.1 * 0.5 * (1 + np.cos(np.pi * (k - per_epoch) / (total - per_epoch)))
                for k in range(1, total + 1)]
    np.testing.assert_allclose(rates, expected, rtol=1e-12)
    assert rates[per_epoch - 1] == 0.1 and rates[-1] == pytest.approx(0.0, abs=1e-15)


def test_evaluate_json_carries_f1_and_the_confusion_matrix(tmp_path):
    path = tmp_path / "m.ckpt"
    assert run("train", "--arch", "mlp", "--dataset", "spirals(arms=3)", "--epochs", 3,
               "-o", "hidden=16", "--save", path, "--no-store").exit_code == 0
    result = run("evaluate", path, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    metrics, matrix = report["metrics"], np.array(report["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == report["examples"]
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    precision = np.diag(matrix) / np.maximum(matrix.sum(axis=0), 1)
    recall = np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1)
    f1 = np.where(precision + recall > 0,
                  2 * precision * recall / np.maximum(precision + recall, 1e-300), 0)
    assert metrics["macro_f1"] == pytest.approx(f1.mean())
    assert metrics["weighted_f1"] == pytest.approx(np.sum(f1 * matrix.sum(axis=1))
                                                   / matrix.sum())
    assert len(report["classes"]) == 3
    printed = run("evaluate", path)
    assert "confusion matrix (rows: true class, columns: predicted)" in printed.stdout


def test_the_train_table_has_a_train_accuracy_column():
    result = run("train", "--arch", "mlp", "--dataset", "xor", "--epochs", 2, "--no-store")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("split"))
    columns = lines[header].split()
    train_row = lines[header + 2].split()
    assert train_row[0] == "train" and "accuracy" in columns
    accuracy = float(train_row[columns.index("accuracy")])
    assert 0.0 <= accuracy <= 1.0


def test_train_accuracy_counts_the_batches_as_they_trained():
    result = train(RunConfig(arch="mlp", dataset="xor", epochs=2, options={"dropout": "0"},
                             stop=("max_epochs=2",), batch_size=50))
    row = result.history[-1]
    assert 0.5 <= row["train_accuracy"] <= 1.0
    assert result.train == {"loss": row["train_loss"], "accuracy": row["train_accuracy"]}


# -- defaults that fit the task ------------------------------------------------------------------

BUILTIN_ARCHS = ("mlp", "cnn", "rnn", "lstm", "gru", "autoencoder")
# The fast lane trains mlp and cnn on the small sets (a classification and a regression each);
# the rest of the grid is in the slow lane.
FAST = {("mlp", "xor"), ("mlp", "spirals"), ("mlp", "sine"), ("cnn", "xor"), ("cnn", "sine")}


def _grid():
    from zoo.plugins import PluginHost

    host = PluginHost(load=list(BUILTIN_ARCHS))
    pairs = []
    for arch in BUILTIN_ARCHS:
        a = host.architectures.get(arch)
        for name, info in host.datasets.items():
            if info.kind in a.data_kinds and (info.task in a.tasks or "reconstruct" in a.tasks):
                marks = [] if (arch, name) in FAST else [pytest.mark.slow]
                pairs.append(pytest.param(arch, name, marks=marks, id=f"{arch}-{name}"))
    return pairs


@pytest.mark.parametrize("arch, dataset", _grid())
def test_every_builtin_architecture_trains_on_every_dataset_it_supports(arch, dataset):
    result = train(RunConfig(arch=arch, dataset=dataset, epochs=1))
    assert result.epochs == 1 and result.stop_reason.startswith("max_epochs")
    assert np.isfinite(result.train_loss)
    monitor = {"classify": "val_accuracy"}.get(result.task, "val_loss")
    assert any(f"best {monitor}" in note for note in result.notes), result.notes


def test_mlp_on_sine_with_defaults_from_the_command_line():
    result = run("train", "--arch", "mlp", "--dataset", "sine", "--epochs", 1, "--no-store")
    assert result.exit_code == 0, result.output
    assert "mlp on sine (regress)" in result.stdout and "val_loss" in result.stdout


def test_metric_chooses_what_early_stopping_watches():
    result = train(RunConfig(arch="mlp", dataset="xor", epochs=2, metric="macro_f1",
                             options={"hidden": "8"}))
    assert "val_macro_f1" in result.history[-1]
    assert any("best val_macro_f1" in note for note in result.notes)
    with pytest.raises(ConfigError, match=r"--metric 'r2': r2 applies to regress, reconstruct"):
        Run(RunConfig(arch="mlp", dataset="xor", metric="r2"))
    with pytest.raises(ConfigError, match=r"unknown metric 'f1'.*installed: accuracy"):
        Run(RunConfig(arch="mlp", dataset="xor", metric="f1"))


# -- specs ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, text, message", [
    ("optimizer", "adam(beta3=0.5)", "--optimizer 'adam(beta3=0.5)': adam has no parameter "
     "'beta3'; accepted: beta1, beta2, eps, weight_decay, decay_bias_norm (did you mean "
     "'beta2'?)"),
    ("optimizer", "sgd(lr=0.1)", "--optimizer 'sgd(lr=0.1)': sgd: lr is not set in "
     "--optimizer; give it with --lr"),
    ("optimizer", "sgd(momentum=2)", "--optimizer 'sgd(momentum=2)': SGD: momentum must be in "
     "[0, 1); received momentum=2"),
    ("optimizer", "adamm", "--optimizer 'adamm': unknown optimizer 'adamm' (did you mean "
     "'adam'?); installed: adam, adamw, rmsprop, sgd"),
    ("optimizer", "sgd(momentum=0.9", "--optimizer 'sgd(momentum=0.9': expected ')' to close "
     "'sgd('"),
    ("schedule", "cosine(warmup=2)", "--schedule 'cosine(warmup=2)': cosine has no parameter "
     "'warmup'; accepted: warmup_epochs, min_lr, epochs (did you mean 'warmup_epochs'?)"),
    ("schedule", "step(gamma=0)", "--schedule 'step(gamma=0)': step: gamma must be in (0, 1]; "
     "received gamma=0"),
    ("loss", "mse(delta=1)", "--loss 'mse(delta=1)': mse has no parameter 'delta'; accepted: "
     "none"),
    ("dataset", "spirals(arm=3)", "--dataset 'spirals(arm=3)': spirals has no parameter "
     "'arm'; accepted: arms, n, noise (did you mean 'arms'?)"),
])
def test_spec_errors_name_what_was_expected(field, text, message):
    with pytest.raises(ConfigError) as info:
        Run(RunConfig(**{"arch": "mlp", "dataset": "xor", field: text}))
    assert str(info.value) == message


def test_dataset_specs_and_the_older_length_suffix():
    from zoo.data.load import load_dataset

    three = load_dataset("spirals(arms=3)")
    assert three.spec.num_classes == 3
    assert load_dataset("adding-20").x_train.shape[1] == 20
    assert load_dataset("adding(length=20)").x_train.shape[1] == 20


def test_a_run_can_choose_its_loss(tmp_path):
    path = tmp_path / "m.ckpt"
    result = run("train", "--arch", "mlp", "--dataset", "xor", "--epochs", 1, "--loss", "ce",
                 "-o", "hidden=8", "--save", path, "--no-store", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["loss"] == "softmax_cross_entropy"
    assert read_checkpoint(path)[1]["training"]["loss"] == "softmax_cross_entropy"
    refused = run("train", "--resume", path, "--loss", "mse", "--epochs", 2)
    assert refused.exit_code == 2
    assert "loss: checkpoint 'softmax_cross_entropy', given 'mse'" in refused.output


def test_list_and_info_show_parameters():
    result = run("list", "--json")
    listing = json.loads(result.stdout)
    sgd = next(o for o in listing["optimizers"] if o["name"] == "sgd")
    assert [p["name"] for p in sgd["parameters"]] == ["momentum", "nesterov", "weight_decay",
                                                      "decay_bias_norm"]
    cosine = next(s for s in listing["schedules"] if s["name"] == "cosine")
    assert cosine["per"] == "step"
    assert {"name": "warmup_epochs", "default": 0.0, "required": False} in cosine["parameters"]
    spirals = next(d for d in listing["datasets"] if d["name"] == "spirals")
    assert [p["name"] for p in spirals["parameters"]] == ["arms", "n", "noise"]
    assert "macro_f1" in {m["name"] for m in listing["metrics"]}
    text = run("list", "optimizers").stdout
    assert "sgd(momentum=0.0, nesterov=false, weight_decay=0.0, decay_bias_norm=true)" in text


# -- weight decay and biases -------------------------------------------------------------------

@pytest.mark.parametrize("exempt", [False, True])
def test_weight_decay_can_exempt_biases_and_norm_parameters(exempt):
    spec = f"sgd(weight_decay=0.5, decay_bias_norm={'false' if exempt else 'true'})"
    r = Run(RunConfig(arch="mlp", dataset="xor", optimizer=spec, lr=0.1, batch_size=2000,
                      options={"hidden": "8", "dropout": "0"}, stop=("max_steps=1",),
                      dtype="float64"))
    before = {name: p.value.copy() for name, p in r.model.named_parameters()}
    r.fit()
    assert r.trainer.step == 1
    for name, p in r.model.named_parameters():
        decayed = p.value.ndim >= 2 or not exempt
        expected = before[name] - 0.1 * (p.grad + (0.5 * before[name] if decayed else 0.0))
        np.testing.assert_allclose(p.value, expected, rtol=1e-12, atol=1e-15, err_msg=name)
    assert r.optimizer.decay_mask == ([True, False] if exempt else None)
    assert r.optimizer.get_config()["decay_bias_norm"] is (not exempt)


# -- the run store, info, compare ----------------------------------------------------------------

def test_the_run_store_keeps_the_specs(tmp_path):
    store = tmp_path / "runs.db"
    result = run("train", "--arch", "mlp", "--dataset", "xor", "--epochs", 1, "-o", "hidden=8",
                 "--optimizer", "sgd(momentum=0.9)", "--schedule", "exponential(0.5)",
                 "--store", store)
    assert result.exit_code == 0, result.output
    shown = json.loads(run("runs", "show", 1, "--store", store, "--json").stdout)
    assert shown["config"]["optimizer"] == "sgd(momentum=0.9)"
    assert shown["config"]["schedule"] == "exponential(0.5)"
    assert shown["result"]["loss"] == "softmax_cross_entropy"
    assert shown["result"]["optimizer_config"]["momentum"] == 0.9


def test_info_shows_a_component_and_its_parameters():
    result = run("info", "cosine")
    assert result.exit_code == 0, result.output
    assert "cosine (schedule" in result.stdout and "every step" in result.stdout
    assert "spec: cosine(warmup_epochs=0.0, min_lr=0.0, epochs=None)" in result.stdout
    info = json.loads(run("info", "spirals", "--json").stdout)
    assert info["kind"] == "dataset" and info["parameters"][0] == {
        "name": "arms", "default": 2, "required": False}


@pytest.mark.slow
def test_compare_ranks_by_the_chosen_metric(tmp_path):
    result = run("compare", "--arch", "mlp,rnn", "--dataset", "xor", "--epochs", 1,
                 "--seeds", 1, "--jobs", 1, "--metric", "macro_f1", "--json", "--no-store",
                 "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["summary"]
    assert [s["metric"] for s in summary] == ["macro_f1", "macro_f1"]
    means = [s["metrics"]["macro_f1"]["mean"] for s in summary]
    assert means == sorted(means, reverse=True)
    printed = run("compare", "--arch", "mlp,rnn", "--dataset", "xor", "--epochs", 1,
                  "--seeds", 1, "--jobs", 1, "--metric", "macro_f1", "--no-store",
                  "--out", tmp_path / "out2")
    assert printed.exit_code == 0, printed.output
    header = next(line for line in printed.stdout.splitlines() if line.startswith("#"))
    assert header.split()[:4] == ["#", "arch", "macro_f1", "accuracy"]
    assert "ranked by macro_f1 (--metric)" in printed.stdout


def test_a_model_flattened_before_is_laid_out_again_for_the_decay_groups():
    from zoo.optimizers import SGD
    from zoo.training.flat import flatten_parameters
    from zoo.training.loop import Trainer
    from zoo.training.stopping import MaxSteps, StoppingEngine

    r = Run(RunConfig(arch="mlp", dataset="xor", options={"hidden": "8", "dropout": "0"}))
    flatten_parameters(r.model)  # weights and biases interleaved, layer by layer
    optimizer = SGD(0.1, weight_decay=0.5, decay_bias_norm=False)
    trainer = Trainer(r.model, r.loss, optimizer, StoppingEngine([MaxSteps(1)]),
                      task="classify")
    decayed, exempt = trainer._values_list
    assert optimizer.decay_mask == [True, False]
    sizes = {name: p.value.size for name, p in r.model.named_parameters()}
    one_d = sum(size for name, size in sizes.items()
                if dict(r.model.named_parameters())[name].value.ndim < 2)
    assert exempt.size == one_d and decayed.size + exempt.size == sum(sizes.values())
    for _, p in r.model.named_parameters():
        assert np.shares_memory(p.value, exempt if p.value.ndim < 2 else decayed)
