"""The Python API: a model built from layers trains with one call, predicts, saves to the
checkpoint files the CLI reads, and is rebuilt from them through an in-process registration."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import zoo
from zoo.errors import CheckpointError, ConfigError
from zoo.layers import Dense, ReLU
from zoo.plugins import PluginHost


def blobs(n=240, seed=0):
    """Three separable clusters in 4 features: labels 0, 1, 2."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(scale=0.3, size=(n, 4)) + np.eye(4)[y] * 3
    return x, y


def small(name="tiny"):
    return zoo.Sequential([Dense(16), ReLU(), Dense(3)], name=name)


@pytest.fixture
def host():
    """A host of its own, so in-process registrations never leak into other tests."""
    return PluginHost()


def test_fit_trains_a_classifier_and_states_the_guessed_task(host, capsys):
    x, y = blobs()
    model = small()
    result = model.fit(x, y, stop=["max_epochs=15"], optimizer="adam", lr=0.01, host=host)
    err = capsys.readouterr().err
    assert "y holds integers: task classify (3 classes)" in err
    assert result.task == "classify" and result.epochs == 15 and result.test == {}
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.val["accuracy"] > 0.9

    labels = model.predict(x)
    proba = model.predict_proba(x)
    assert labels.dtype == np.int64 and labels.shape == (len(x),)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(np.argmax(proba, axis=1), labels)
    metrics = model.evaluate(x, y)
    assert metrics["accuracy"] == pytest.approx(np.mean(labels == y))


def test_decimal_targets_regress_and_task_chooses(host, capsys):
    x, _ = blobs()
    target = (x[:, :1] * 2 - x[:, 1:2]).astype(np.float64)
    model = zoo.Sequential([Dense(8), ReLU(), Dense(1)], name="reg")
    result = model.fit(x, target, epochs=3, host=host)
    assert result.task == "regress" and "r2" in result.val
    assert "task regress" in capsys.readouterr().err
    assert model.predict(x).shape == (len(x), 1)
    with pytest.raises(ConfigError, match="predict_proba needs a classifier"):
        model.predict_proba(x)
    # Integer targets regress when asked to; nothing is guessed then.
    model2 = zoo.Sequential([Dense(1)], name="reg2")
    assert model2.fit(x, np.arange(len(x)) % 5, task="regress", epochs=1,
                      host=host).task == "regress"
    assert "guess" not in capsys.readouterr().err


def test_a_second_fit_trains_on_from_the_weights(host):
    x, y = blobs()
    model = small()
    model.fit(x, y, epochs=3, host=host, progress=False)
    before = model.raw_outputs(x)
    again = model.fit(x, y, epochs=1, lr=1e-12, host=host, progress=False,  # barely moves
                      optimizer="sgd(momentum=0.9)", schedule="cosine", metric="macro_f1")
    assert again.schedule.startswith("cosine") and again.metric == "macro_f1"
    assert again.optimizer_config["momentum"] == 0.9
    np.testing.assert_allclose(model.raw_outputs(x), before, rtol=1e-5, atol=1e-6)


def test_the_output_must_fit_the_task(host):
    x, y = blobs()
    with pytest.raises(ConfigError, match=r"output shape \(2,\) does not fit task classify"):
        zoo.Sequential([Dense(2)], name="narrow").fit(x, y, host=host)


def test_predict_before_fit_is_raw_and_evaluate_asks_for_training():
    model = small()
    model.build((4,), np.random.default_rng(0))
    x, y = blobs(10)
    assert model.predict(x).dtype == np.float32  # logits: no task yet
    with pytest.raises(ConfigError, match=r"evaluate\(\) needs a trained model"):
        model.evaluate(x, y)


def test_save_and_load_round_trip_and_the_cli_reads_the_file(host, tmp_path, monkeypatch):
    x, y = blobs()
    model = small("blobnet")
    model.fit(x, y, epochs=15, lr=0.01, host=host, progress=False)
    path = model.save(tmp_path / "blob.ckpt")

    loaded = zoo.load(path, host=host)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    np.testing.assert_allclose(loaded.predict_proba(x), model.predict_proba(x), rtol=1e-6)
    assert loaded.evaluate(x, y) == pytest.approx(model.evaluate(x, y))

    # zoo predict on the same file, in this process (the CLI uses the process-wide host).
    from zoo import plugins

    monkeypatch.setattr(plugins.host, "_HOST", host)
    np.save(tmp_path / "x.npy", x[:7].astype(np.float32))
    from zoo.cli.main import cli

    result = CliRunner().invoke(cli, ["predict", str(path), str(tmp_path / "x.npy"),
                                      "--out", str(tmp_path / "p.npy")])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), model.predict_proba(x[:7]),
                               rtol=1e-5, atol=1e-7)
    # zoo evaluate with the data as a file
    np.savez(tmp_path / "blobs.npz", x=x.astype(np.float32), y=y)
    result = CliRunner().invoke(cli, ["evaluate", str(path), "--dataset",
                                      str(tmp_path / "blobs.npz"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["accuracy"] > 0.8


def test_a_new_process_rebuilds_through_its_own_registration(host, tmp_path):
    x, y = blobs()
    model = small("blobnet")
    model.fit(x, y, epochs=2, host=host, progress=False)
    path = model.save(tmp_path / "blob.ckpt")

    elsewhere = PluginHost()  # as a new process: nothing registered in-process
    with pytest.raises(CheckpointError, match="register_architecture"):
        zoo.load(path, host=elsewhere)
    zoo.register_architecture(
        "blobnet", lambda spec, options: zoo.Sequential([Dense(16), ReLU(),
                                                         Dense(spec.output_size)]),
        host=elsewhere)
    np.testing.assert_array_equal(zoo.load(path, host=elsewhere).predict(x), model.predict(x))


def test_register_architecture_keeps_plugin_names(host):
    with pytest.raises(ConfigError, match="'mlp' is already registered by"):
        zoo.register_architecture("mlp", lambda spec, options: small(), host=host)
    with pytest.raises(ConfigError, match="must be callable"):
        zoo.register_architecture("x", "not a builder", host=host)


def test_an_architecture_registered_in_process_trains_from_the_cli(host, monkeypatch):
    from zoo import plugins
    from zoo.cli.main import cli

    zoo.register_architecture(
        "wide", lambda spec, options: zoo.Sequential([Dense(32), ReLU(),
                                                      Dense(spec.output_size)]),
        tasks=("classify",), host=host)
    monkeypatch.setattr(plugins.host, "_HOST", host)
    result = CliRunner().invoke(cli, ["train", "--arch", "wide", "--dataset", "xor",
                                      "--epochs", "2", "--json", "--no-store"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["arch"] == "wide"


def test_zoo_fit_runs_a_registered_architecture(host, tmp_path):
    from zoo.data.load import load_dataset
    from zoo.inference import evaluate_checkpoint

    model, result = zoo.fit("mlp", dataset="xor", epochs=2, options={"hidden": 8}, host=host,
                            progress=False)
    assert result.epochs == 2 and "accuracy" in result.test
    data = load_dataset("xor", host=host)
    assert model.evaluate(data.x_test, data.y_test)["accuracy"] == \
        pytest.approx(result.test["accuracy"])
    path = model.save(tmp_path / "xor.ckpt")  # the file zoo evaluate reads
    report = evaluate_checkpoint(path, host=host)
    assert report["metrics"]["accuracy"] == pytest.approx(result.test["accuracy"])
    with pytest.raises(ConfigError, match="trains on a dataset"):
        zoo.fit("mlp", np.zeros((3, 2)), host=host)


def residual_blobs_net():
    """A layer graph (zoo.graph): a residual block, Keras functional style."""
    from zoo.graph import Input, Model
    from zoo.layers import Add

    x = Input()
    h = Dense(4)(ReLU()(Dense(8)(x)))
    return Model(x, Dense(3)(Add()([x, h])), name="resblobs")


def test_a_layer_graph_trains_saves_and_loads_like_a_sequential(host, tmp_path):
    x, y = blobs()
    model = residual_blobs_net()
    result = model.fit(x, y, stop=["max_epochs=15"], lr=0.01, host=host, progress=False)
    assert result.val["accuracy"] > 0.9
    path = model.save(tmp_path / "graph.ckpt")
    elsewhere = PluginHost()
    zoo.register_architecture("resblobs", lambda spec, options: residual_blobs_net(),
                              host=elsewhere)
    loaded = zoo.load(path, host=elsewhere)
    np.testing.assert_allclose(loaded.predict_proba(x), model.predict_proba(x), rtol=1e-6)
