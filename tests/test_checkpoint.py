"""Checkpoints: save / evaluate / predict round trips for every built-in architecture, exact
resume (after whole epochs, after Ctrl-C mid-epoch, after a crash from a step checkpoint),
refusing another architecture or optimizer, and divergence that promotes nothing."""

import json
import os
import signal

import numpy as np
import pytest
from click.testing import CliRunner

from zoo.checkpoints.callback import attach, best_path_for, parse_every
from zoo.checkpoints.checkpoint import load_checkpoint, load_model, save_run
from zoo.checkpoints.format import read_checkpoint
from zoo.checkpoints.resume import resume_run
from zoo.cli.main import cli
from zoo.errors import CheckpointError, ConfigError
from zoo.inference import prediction_arrays
from zoo.plugins import get_host
from zoo.run import Run, RunConfig
from zoo.training.callbacks import Callback
from zoo.training.loop import INTERRUPTED


def _builtin_architectures() -> list[str]:
    host = get_host()
    names = []
    for name in host.architectures.names():
        record = host.records.get(host.architectures.owner(name))
        if record is not None and (record.module or "").startswith("zoo_plugins."):
            names.append(name)
    return names


# Small enough to train one epoch in well under a second each.
SMALL = {
    "mlp": {"hidden": "8", "dropout": "0.1"},
    "cnn": {"channels": "4", "kernel_size": "3", "hidden": "8", "dropout": "0.1"},
    "rnn": {"hidden": "8", "layers": "2", "dropout": "0.1"},
    "lstm": {"hidden": "8"},
    "gru": {"hidden": "8", "bidirectional": "true"},
    "autoencoder": {"hidden": "8", "code_size": "4", "noise": "0.1"},
    "transformer": {"d_model": "8", "heads": "2", "layers": "1", "dropout": "0.1"},
    "resnet": {"channels": "4,8", "dropout": "0.1"},
}


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    """A tiny labelled sequence dataset (T=6, F=3, 3 classes) that every built-in accepts."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 128)
    x = rng.standard_normal((128, 6, 3)).astype(np.float32) + y[:, None, None]
    path = tmp_path_factory.mktemp("data") / "seq.npz"
    np.savez(path, x_train=x[:96], y_train=y[:96], x_test=x[96:], y_test=y[96:],
             kind=np.array("sequence"))
    return path


def _options(arch):
    info = get_host().architectures.get(arch)
    names = {o.name for o in info.options}
    return {k: v for k, v in SMALL.get(arch, {}).items() if k in names}


def _invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def _tensors(path) -> dict:
    return {k: np.array(v) for k, v in read_checkpoint(path).tensors.items()}


def _assert_same_tensors(a, b):
    ta, tb = _tensors(a), _tensors(b)
    assert sorted(ta) == sorted(tb)
    for name in ta:
        assert ta[name].dtype == tb[name].dtype and np.array_equal(ta[name], tb[name]), name


@pytest.mark.parametrize("arch", _builtin_architectures())
def test_save_evaluate_predict_round_trip(arch, sequences, tmp_path):
    path = tmp_path / f"{arch}.ckpt"
    run = Run(RunConfig(arch=arch, dataset=str(sequences), options=_options(arch), epochs=1,
                        batch_size=32, seed=3))
    attach(run, path)
    run.fit()
    result = run.result()
    assert result.checkpoint == str(path)

    model, spec, _, ck = load_model(path)
    assert ck.arch == run.architecture.name and spec == run.spec
    saved, live = model.state_dict(), run.model.state_dict()
    assert sorted(saved) == sorted(live)
    assert all(saved[k].dtype == live[k].dtype and np.array_equal(saved[k], live[k])
               for k in live)

    evaluated = json.loads(_invoke("evaluate", path, "--json").stdout)
    assert evaluated["metrics"] == result.test  # bit-exact: same floats
    on_val = json.loads(_invoke("evaluate", path, "--split", "val", "--json").stdout)
    assert on_val["metrics"] == result.val
    assert evaluated["examples"] == len(run.dataset.x_test)

    x = run.dataset.x_test[:7]
    np.save(tmp_path / "x.npy", x)
    expected = prediction_arrays(run.model.raw_outputs(x), run.spec, run.loss)
    _invoke("predict", path, tmp_path / "x.npy", "--out", tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz", allow_pickle=False) as got:
        assert sorted(got.files) == sorted(expected)
        for name, value in expected.items():
            assert np.array_equal(got[name], value), name
    one = json.loads(_invoke("predict", path, tmp_path / "x.npy", "--json").stdout)
    key = "probabilities" if spec.task == "classify" else "values"
    assert np.array_equal(np.array(one[key], dtype=expected[key].dtype), expected[key])
    np.save(tmp_path / "x1.npy", x[0])  # one example without the batch axis
    single = json.loads(_invoke("predict", path, tmp_path / "x1.npy", "--json").stdout)
    assert single["examples"] == 1
    alone = prediction_arrays(run.model.raw_outputs(x[:1]), run.spec, run.loss)[key]
    assert np.array_equal(np.array(single[key], dtype=alone.dtype), alone)


def test_weights_are_plain_safetensors(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    run = Run(RunConfig(arch="mlp", dataset="xor", options={"hidden": "4"}, epochs=1))
    run.fit()
    save_run(run, tmp_path / "m.ckpt")
    loaded = safetensors_numpy.load_file(str(tmp_path / "m.ckpt"))
    for name, value in run.model.state_dict().items():
        assert np.array_equal(loaded[f"model.{name}"], value)
    assert "model.0.weight" in loaded


# -- exact resume --------------------------------------------------------------------------------

CONFIG = {"arch": "mlp", "dataset": "xor", "options": {"hidden": "16", "dropout": "0.2"},
          "batch_size": 50, "seed": 4}  # 720 training examples: 15 steps per epoch


def _straight(tmp_path, epochs, every=None):
    run = Run(RunConfig(**CONFIG, epochs=epochs))
    attach(run, tmp_path / "straight.ckpt", every)
    run.fit()
    return run


class _At(Callback):
    """Does ``action`` after optimizer step ``step`` (before the stopping check)."""

    def __init__(self, step, action):
        self.step, self.action = step, action

    def on_step_end(self, trainer):
        if trainer.step == self.step:
            self.action()


def test_resume_after_whole_epochs_is_bit_exact(tmp_path):
    straight = _straight(tmp_path, 4)
    first = Run(RunConfig(**CONFIG, epochs=2))
    attach(first, tmp_path / "run.ckpt")
    first.fit()
    ck = load_checkpoint(tmp_path / "run.ckpt")
    assert ck.epoch == 2 and ck.permutation is None
    assert ck.metadata["generators"]  # dropout's generator travels with the run

    resumed = resume_run(tmp_path / "run.ckpt", {"epochs": 4}, save=tmp_path / "run.ckpt")
    resumed.fit()
    assert resumed.trainer.step == straight.trainer.step == 60
    _assert_same_tensors(tmp_path / "straight.ckpt", tmp_path / "run.ckpt")
    strip = [{k: v for k, v in row.items() if k != "time"} for row in straight.trainer.history.rows]
    assert strip == [{k: v for k, v in row.items() if k != "time"}
                     for row in resumed.trainer.history.rows]
    assert resumed.result().test == straight.result().test


def test_ctrl_c_mid_epoch_saves_and_resumes_bit_exactly(tmp_path):
    straight = _straight(tmp_path, 3)
    first = Run(RunConfig(**CONFIG, epochs=3),
                callbacks=[_At(22, lambda: os.kill(os.getpid(), signal.SIGINT))])
    attach(first, tmp_path / "run.ckpt")
    first.fit()
    assert first.trainer.stop_reason == INTERRUPTED and first.trainer.step == 22
    ck = load_checkpoint(tmp_path / "run.ckpt")
    assert ck.step == 22 and ck.trainer["batch_index"] == 7 and ck.permutation is not None
    # early stopping restored its best weights into the model; training continues from these:
    assert "resume.model.0.weight" in ck.tensors

    resumed = resume_run(tmp_path / "run.ckpt", save=tmp_path / "run.ckpt")
    resumed.fit()
    assert resumed.trainer.step == straight.trainer.step
    _assert_same_tensors(tmp_path / "straight.ckpt", tmp_path / "run.ckpt")


def test_crash_resumes_from_the_latest_step_checkpoint(tmp_path):
    straight = _straight(tmp_path, 3)

    def crash():
        raise RuntimeError("power cut")

    first = Run(RunConfig(**CONFIG, epochs=3), callbacks=[_At(23, crash)])
    attach(first, tmp_path / "run.ckpt", parse_every("5steps"))
    with pytest.raises(RuntimeError):
        first.fit()
    ck = load_checkpoint(tmp_path / "run.ckpt")
    assert ck.step == 20 and ck.permutation is not None
    assert ck.metadata["checkpointing"]["every"] == "5steps"
    assert best_path_for(tmp_path / "run.ckpt").exists()  # epoch 1 was the best so far

    resumed = resume_run(tmp_path / "run.ckpt", save=tmp_path / "run.ckpt")  # keeps 5steps
    assert resumed.checkpointer.every == ("step", 5)
    resumed.fit()
    assert resumed.trainer.step == straight.trainer.step
    _assert_same_tensors(tmp_path / "straight.ckpt", tmp_path / "run.ckpt")


def test_a_larger_budget_applies_and_a_spent_one_is_refused(tmp_path):
    run = Run(RunConfig(**CONFIG, epochs=1))
    attach(run, tmp_path / "run.ckpt")
    run.fit()
    with pytest.raises(ConfigError, match="nothing to resume.*max_epochs"):
        resume_run(tmp_path / "run.ckpt")
    resumed = resume_run(tmp_path / "run.ckpt", {"epochs": 2, "lr": 5e-4})
    resumed.fit()
    assert resumed.trainer.epoch == 2 and resumed.trainer.stop_reason.startswith("max_epochs")


def test_resume_refuses_another_architecture_or_optimizer(tmp_path):
    run = Run(RunConfig(**CONFIG, epochs=1))
    run.fit()
    save_run(run, tmp_path / "run.ckpt")
    with pytest.raises(ConfigError) as info:
        resume_run(tmp_path / "run.ckpt", {"arch": "cnn", "optimizer": "sgd", "epochs": 3})
    message = str(info.value)
    assert "arch: checkpoint 'mlp', given 'cnn'" in message
    assert "optimizer: checkpoint 'adam', given 'sgd'" in message
    # The same names as the checkpoint's are fine, and unspecified ones come from it.
    resumed = resume_run(tmp_path / "run.ckpt", {"arch": "mlp", "epochs": 2})
    assert resumed.options == run.options and resumed.batch_size == 50


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_stops_with_non_finite_and_promotes_nothing(tmp_path):
    path = tmp_path / "run.ckpt"
    run = Run(RunConfig(arch="mlp", dataset="xor", options={"hidden": "8"}, optimizer="sgd",
                        lr=1e30, epochs=5, seed=0))
    checkpointer = attach(run, path, parse_every("1steps"))
    run.fit()
    result = run.result()
    assert result.stop_reason.startswith("non_finite: loss became")
    assert f"at step {result.steps}" in result.stop_reason
    assert checkpointer.skipped and "not finite" in checkpointer.skipped
    assert result.checkpoint is None
    written = [p for p in tmp_path.iterdir() if p.suffix == ".ckpt"]
    for p in written:  # whatever was written holds finite numbers only
        assert all(np.isfinite(t).all() for t in _tensors(p).values() if t.dtype.kind == "f")
    if path.exists():
        assert load_checkpoint(path).step < result.steps


def test_save_run_refuses_non_finite_weights(tmp_path):
    run = Run(RunConfig(arch="mlp", dataset="xor", options={"hidden": "4"}, epochs=1))
    run.model.layers[0].weight.value[0, 0] = np.nan
    with pytest.raises(CheckpointError, match="model.0.weight holds NaN or Inf"):
        save_run(run, tmp_path / "bad.ckpt")
    assert list(tmp_path.iterdir()) == []


# -- malformed metadata: every field missing or of another type ---------------------------------

def _paths(value, prefix=()):
    """Paths to every value in nested dicts (lists are leaves), depth first."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from _paths(item, (*prefix, key))


def test_every_metadata_field_missing_or_mistyped_is_one_zoo_error(tmp_path):
    import copy

    from zoo.checkpoints.format import checkpoint_bytes
    from zoo.errors import ZooError

    run = Run(RunConfig(**CONFIG, epochs=1))
    attach(run, tmp_path / "good.ckpt")
    run.fit()
    tensors, metadata = read_checkpoint(tmp_path / "good.ckpt")
    tensors = {k: np.array(v) for k, v in tensors.items()}
    replacements = [None, "x", [], {}, -1, 1e308]
    outcomes = {"refused": 0, "accepted": 0}
    for path in _paths(metadata):
        for replacement in ["<delete>", *replacements]:
            edited = copy.deepcopy(metadata)
            parent = edited
            for key in path[:-1]:
                parent = parent[key]
            if replacement == "<delete>":
                del parent[path[-1]]
            else:
                parent[path[-1]] = replacement
            target = tmp_path / "edited.ckpt"
            target.write_bytes(checkpoint_bytes(tensors, edited))  # no fsync: fast
            try:
                load_checkpoint(target)
                load_model(target)
                resume_run(target, {"epochs": 2}).trainer.state_dict()
            except ZooError as exc:
                assert "\n" not in str(exc)
                outcomes["refused"] += 1
            else:
                outcomes["accepted"] += 1  # e.g. a free-form field such as a history value
    assert outcomes["refused"] > 4 * outcomes["accepted"], outcomes


def test_a_file_from_other_versions_loads_with_a_note(tmp_path):
    from zoo.checkpoints.format import write_checkpoint

    run = Run(RunConfig(arch="mlp", dataset="xor", options={"hidden": "4"}, epochs=1))
    run.fit()
    save_run(run, tmp_path / "m.ckpt")
    tensors, metadata = read_checkpoint(tmp_path / "m.ckpt")
    metadata["zoo_version"] = "0.0.1"
    metadata["architecture"]["plugin_version"] = "0.0.2"
    write_checkpoint(tmp_path / "old.ckpt", {k: np.array(v) for k, v in tensors.items()},
                     metadata)
    result = _invoke("evaluate", tmp_path / "old.ckpt", "--json")
    assert json.loads(result.stdout)["metrics"] == run.result().test
    notes = [line for line in result.stderr.splitlines() if line.startswith("zoo: note: ")]
    assert len(notes) == 2 and "zoo 0.0.1" in notes[0] and "mlp 0.0.2" in notes[1], notes
