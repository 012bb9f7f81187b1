"""A run given its own plugin host uses that host for every name, never the process-wide one."""

import numpy as np
import pytest

from zoo.checkpoints.checkpoint import load_model, save_run
from zoo.checkpoints.resume import resume_run
from zoo.data.dataset import Dataset, DatasetInfo
from zoo.errors import ConfigError
from zoo.inference import evaluate_checkpoint
from zoo.plugins import PluginHost, get_host, reset_host, resolve_host
from zoo.run import Run, RunConfig
from zoo.runstore import plugin_versions


class GlobalHostUsed:
    """Installed as the process-wide host: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the process-wide plugin host was used (.{name})")


def only_here(seed, **options):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((48, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return Dataset("only_here", "vector", "classify", x[:40], y[:40], x[40:], y[40:])


@pytest.fixture
def own_host(monkeypatch):
    """A host with mlp and a dataset no installed plugin has; the global host explodes."""
    monkeypatch.delenv("ZOO_LOAD_PLUGINS", raising=False)
    host = PluginHost(load=["mlp"])
    host.datasets.add("only_here", DatasetInfo("only_here", "a dataset of this host only",
                                               "classify", "vector", only_here), owner="test")
    reset_host(GlobalHostUsed())
    yield host
    reset_host()


def test_resolve_host_prefers_the_given_host(own_host):
    assert resolve_host(own_host) is own_host
    assert isinstance(get_host(), GlobalHostUsed)


def test_run_save_load_and_resume_use_only_the_given_host(own_host, tmp_path):
    config = RunConfig(arch="mlp", dataset="only_here", options={"hidden": "8"}, epochs=1,
                       batch_size=16)
    run = Run(config, host=own_host)
    assert run.dataset.name == "only_here"
    run.fit()
    result = run.result()
    assert result.dataset == "only_here" and result.epochs == 1

    path = tmp_path / "run.ckpt"
    save_run(run, path)
    model, spec, _, _ = load_model(path, host=own_host)
    x = run.x_train[:4].copy()
    assert np.array_equal(model.forward(x, training=False), run.model.forward(x, training=False))

    report = evaluate_checkpoint(path, host=own_host)  # the library behind `zoo evaluate`
    assert report["dataset"] == "only_here" and report["metrics"] == result.test
    assert evaluate_checkpoint(path, split="val", host=own_host)["metrics"] == result.val
    with pytest.raises(ConfigError, match="split must be one of test, val, train; "
                                          "received split='dev'"):
        evaluate_checkpoint(path, split="dev", host=own_host)

    resumed = resume_run(path, {"epochs": 2}, host=own_host)
    resumed.fit()
    assert resumed.trainer.epoch == 2
    assert plugin_versions(own_host)["mlp"] == own_host.records["mlp"].version


def test_the_conformance_kit_uses_the_given_host(own_host):
    from zoo.testing import check_architecture

    done = check_architecture("mlp", kinds=["vector"], tasks=["classify"],
                              checks=["shapes", "config", "training"], host=own_host)
    assert "vector/classify: training" in done
