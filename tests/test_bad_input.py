"""Bad input, across the command line and the library: one table.

Each case must give a typed zoo error whose one-line message names what was expected and what
was received; on the command line, exit code 2, one line on stderr and no traceback; and in
every case no file is written (the working folder is unchanged).
"""

import pickle

import numpy as np
import pytest
import safetensors.numpy
from click.testing import CliRunner

from zoo.checkpoints.checkpoint import load_checkpoint, load_model, save_run
from zoo.checkpoints.format import read_checkpoint, write_checkpoint
from zoo.checkpoints.resume import resume_run
from zoo.cli.main import cli
from zoo.errors import CheckpointError, ConfigError, DataError, ZooError
from zoo.run import Run, RunConfig

TINY = {"hidden": "4"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny mlp checkpoint on xor (2 features, 2 classes), shared by the table."""
    folder = tmp_path_factory.mktemp("trained")
    run = Run(RunConfig(arch="mlp", dataset="xor", options=TINY, epochs=1, seed=1))
    run.fit()
    path = folder / "mlp.ckpt"
    save_run(run, path)
    return path


def _files(folder) -> dict:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


# -- the inputs the cases use, written into the test's working folder ---------------------------

def _npy(name, array):
    def make(folder):
        np.save(folder / name, array, allow_pickle=array.dtype == object)
        return name
    return make


def _npz(name, **arrays):
    def make(folder):
        np.savez(folder / name, **arrays)
        return name
    return make


def _ckpt_copy(name, mutate=None):
    def make(folder, trained):
        data = trained.read_bytes()
        (folder / name).write_bytes(mutate(data) if mutate else data)
        return name
    return make


def _pickle_as_ckpt(folder, trained):
    with open(folder / "model.ckpt", "wb") as f:
        pickle.dump({"weights": np.ones(3)}, f, protocol=4)
    return "model.ckpt"


def _rewritten(name, edit):
    """A validly hashed checkpoint whose metadata ``edit`` changed."""
    def make(folder, trained):
        tensors, metadata = read_checkpoint(trained)
        edit(metadata)
        write_checkpoint(folder / name, {k: np.array(v) for k, v in tensors.items()}, metadata)
        return name
    return make


def _drop(key):
    return lambda meta: meta.pop(key)


def _set(path, value):
    def edit(meta):
        *parents, last = path.split(".")
        target = meta
        for p in parents:
            target = target[p]
        target[last] = value
    return edit


X = np.random.default_rng(0).standard_normal((5, 2)).astype(np.float32)
Y = np.array([0, 1, 0, 1, 1])


# -- command-line cases: (id, args with {ckpt} / {input} placeholders, inputs, error fragments)

CLI_CASES = [
    ("predict-shape", ["predict", "{ckpt}", "{input}"], _npy("x.npy", np.ones((5, 3))),
     ["expected shape (N, 2) or (2,)", "received float64 array of shape (5, 3)"]),
    ("predict-rank", ["predict", "{ckpt}", "{input}"], _npy("x.npy", np.ones((2, 2, 2))),
     ["expected shape (N, 2)", "received float64 array of shape (2, 2, 2)"]),
    ("predict-nan", ["predict", "{ckpt}", "{input}"],
     _npy("x.npy", np.array([[0.0, np.nan], [1.0, 2.0]])), ["1 NaN or Inf", "expected finite"]),
    ("predict-inf", ["predict", "{ckpt}", "{input}", "--out", "p.npy"],
     _npy("x.npy", np.array([[np.inf, 0.0]])), ["NaN or Inf", "expected finite"]),
    ("predict-object", ["predict", "{ckpt}", "{input}"],
     _npy("x.npy", np.array([{"a": 1}, None], dtype=object)), ["pickle", "expected a numeric"]),
    ("predict-str", ["predict", "{ckpt}", "{input}"], _npy("x.npy", np.array(["a", "b"])),
     ["expected numbers", "received <U1 array of shape (2,)"]),
    ("predict-empty", ["predict", "{ckpt}", "{input}"], _npy("x.npy", np.zeros((0, 2))),
     ["is empty", "expected at least one example"]),
    ("predict-npz", ["predict", "{ckpt}", "{input}"], _npz("x.npz", x=X),
     ["is an .npz archive", "expected a .npy file"]),
    ("predict-out-ext", ["predict", "{ckpt}", "{input}", "--out", "p.txt"],
     _npy("x.npy", X), ["--out must end with .npy or .npz", "received 'p.txt'"]),
    ("evaluate-missing", ["evaluate", "nothing.ckpt"], None,
     ["checkpoint nothing.ckpt", "no such file"]),
    ("evaluate-truncated", ["evaluate", "{ckpt}"], _ckpt_copy("t.ckpt", lambda b: b[:len(b) // 2]),
     ["checkpoint t.ckpt", "exceeds the file size"]),
    ("evaluate-pickle", ["evaluate", "{ckpt}"], _pickle_as_ckpt,
     ["this is a Python pickle, not a zoo checkpoint", "never loads pickles"]),
    ("evaluate-bitflip", ["evaluate", "{ckpt}"],
     _ckpt_copy("f.ckpt", lambda b: b[:-3] + bytes([b[-3] ^ 1]) + b[-2:]),
     ["content hash does not match", "expected sha256"]),
    ("evaluate-other-data", ["evaluate", "{ckpt}", "--dataset", "digits"], None,
     ["does not fit checkpoint", "expected input_shape (2,) (received (1, 8, 8))",
      "num_classes 2 (received 10)"]),
    ("resume-other-arch", ["train", "--resume", "{ckpt}", "--arch", "cnn"], None,
     ["cannot resume", "arch: checkpoint 'mlp', given 'cnn'"]),
    ("resume-other-optimizer", ["train", "--resume", "{ckpt}", "--optimizer", "sgd"], None,
     ["optimizer: checkpoint 'adam', given 'sgd'"]),
    ("resume-other-data", ["train", "--resume", "{ckpt}", "--dataset", "spirals",
                           "--optimizer", "rmsprop"], None,
     ["dataset: checkpoint", "given 'spirals'", "optimizer: checkpoint 'adam'"]),
    ("resume-truncated", ["train", "--resume", "{ckpt}"],
     _ckpt_copy("t.ckpt", lambda b: b[:7]), ["fewer than the 8-byte header length"]),
    ("resume-finished", ["train", "--resume", "{ckpt}"], None,
     ["nothing to resume", "max_epochs", "give a larger budget"]),
    ("train-lr-zero", ["train", "--arch", "mlp", "--dataset", "xor", "--lr", "0"], None,
     ["lr must be a positive finite number", "received lr=0"]),
    ("train-lr-nan", ["train", "--arch", "mlp", "--dataset", "xor", "--lr", "nan"], None,
     ["lr must be a positive finite number", "received lr=nan"]),
    ("train-batch-zero", ["train", "--arch", "mlp", "--dataset", "xor", "--batch-size", "0"],
     None, ["batch_size must be a positive integer", "received batch_size=0"]),
    ("train-unknown-arch", ["train", "--arch", "perceiver"], None,
     ["unknown architecture 'perceiver'", "installed: ", "mlp"]),
    ("train-unknown-optimizer", ["train", "--arch", "mlp", "--optimizer", "lion"], None,
     ["unknown optimizer 'lion'", "adam"]),
    ("train-unknown-dataset", ["train", "--arch", "mlp", "--dataset", "imagenet"], None,
     ["unknown dataset 'imagenet'", "installed: "]),
    ("train-len-mismatch", ["train", "--arch", "mlp", "--dataset", "{input}"],
     _npz("d.npz", x=np.ones((6, 2)), y=np.array([0, 1, 0])), ["len(x) = 6", "len(y) = 3"]),
    ("train-labels-negative", ["train", "--arch", "mlp", "--dataset", "{input}"],
     _npz("d.npz", x=np.ones((8, 2)), y=np.array([-1, 1, 0, 1, 0, 1, 0, 1])),
     ["class labels must be >= 0; received", "-1"]),
    ("train-object-data", ["train", "--arch", "mlp", "--dataset", "{input}"],
     lambda folder: (np.savez(folder / "d.npz", x=np.array([[1], "a"], dtype=object)), "d.npz")[1],
     ["object dtype", "pickle"]),
    ("train-save-no-folder", ["train", "--arch", "mlp", "--dataset", "xor", "--save",
                              "missing/run.ckpt"], None,
     ["cannot write the checkpoint to missing/run.ckpt", "does not exist"]),
    ("train-every-bad", ["train", "--arch", "mlp", "--dataset", "xor", "--save", "r.ckpt",
                         "--checkpoint-every", "often"], None,
     ["--checkpoint-every expects a positive number", "received 'often'"]),
    ("train-every-no-save", ["train", "--arch", "mlp", "--dataset", "xor",
                             "--checkpoint-every", "2"], None,
     ["--checkpoint-every needs a file to write", "--save PATH"]),
    ("train-no-arch", ["train", "--dataset", "xor"], None, ["Missing option '--arch'"]),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(case, trained, tmp_path, monkeypatch):
    _, args, make_input, fragments = case
    monkeypatch.chdir(tmp_path)
    made = None
    if make_input is not None:
        made = (make_input(tmp_path, trained) if make_input.__code__.co_argcount == 2
                else make_input(tmp_path))
    ckpt = made if made and made.endswith(".ckpt") else str(trained)
    args = [a.format(ckpt=ckpt, input=made) for a in args]
    before, before_trained = _files(tmp_path), _files(trained.parent)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoo: error: "), result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert _files(tmp_path) == before
    assert _files(trained.parent) == before_trained  # a refused --resume writes nothing back


# -- library cases: (id, callable(folder, trained), error type, fragments) ----------------------

def _fit(x, y):
    def call(folder, trained):
        from zoo.data.dataset import Dataset

        data = Dataset("bad", "vector", "classify", x, y, X, Y)
        Run(RunConfig(arch="mlp", dataset="bad", options=TINY, epochs=1), dataset=data).fit()
    return call


def _trainer_fit(folder, trained):
    run = Run(RunConfig(arch="mlp", dataset="xor", options=TINY, epochs=1))
    run.trainer.fit(X, Y[:3])


def _load(make):
    return lambda folder, trained: load_checkpoint(folder / make(folder, trained))


LIBRARY_CASES = [
    ("len-mismatch", _trainer_fit, DataError, ["len(x) = 5 but len(y) = 3", "expected equal"]),
    ("x-shape", lambda f, t: Run(RunConfig(arch="mlp", dataset="xor", options=TINY, epochs=1))
     .trainer.fit(np.ones((4, 3), np.float32), Y[:4]), DataError,
     ["inputs must have shape (N, 2)", "received float32 array of shape (4, 3)"]),
    ("empty", _fit(np.zeros((0, 2)), np.zeros(0, int)), DataError,
     ["x_train is empty", "expected at least one example"]),
    ("nan-inputs", _fit(np.array([[np.nan, 1.0]] * 5), Y), DataError,
     ["contains NaN or Inf", "expected finite values"]),
    ("labels-not-integers", lambda f, t: _dataset(Y + 0.5), DataError,
     ["must hold integer class labels", "received non-integer floats"]),
    ("labels-out-of-range", lambda f, t: _dataset(np.array([0, 1, 5, 1, 0])), DataError,
     ["labels must be in [0, 2)", "received values from 0 to 5"]),
    ("lr-negative", lambda f, t: RunConfig(arch="mlp", lr=-1.0).validate(), ConfigError,
     ["lr must be a positive finite number", "received lr=-1.0"]),
    ("not-a-zoo-checkpoint", lambda f, t: load_checkpoint(_plain_safetensors(f)),
     CheckpointError, ["a safetensors file but not a zoo checkpoint", "'zoo.format'"]),
    ("missing-field", _load(_rewritten("m.ckpt", _drop("trainer"))), CheckpointError,
     ["not a zoo training checkpoint", "lacks 'trainer'"]),
    ("wrong-type", _load(_rewritten("w.ckpt", _set("trainer.epoch", "3"))), CheckpointError,
     ["metadata 'trainer.epoch' must be an integer", "received str '3'"]),
    ("arch-not-installed", lambda f, t: load_model(
        f / _rewritten("n.ckpt", _set("architecture.name", "nope"))(f, t)), CheckpointError,
     ["trained with architecture 'nope', which is not installed", "installed: "]),
    ("resume-as-other-arch", lambda f, t: resume_run(t, {"arch": "rnn", "epochs": 3}),
     ConfigError, ["arch: checkpoint 'mlp', given 'rnn'"]),
    ("bad-permutation", lambda f, t: resume_run(
        f / _with_permutation(f, t), {"epochs": 3}), CheckpointError,
     ["trainer.permutation must be a permutation of the 720", "received int64 array"]),
]


def _dataset(y_test):
    from zoo.data.dataset import Dataset

    Dataset("bad", "vector", "classify", X, Y, X, y_test, classes=["a", "b"])


def _plain_safetensors(folder):
    safetensors.numpy.save_file({"w": np.ones(3, np.float32)}, folder / "plain.safetensors")
    return folder / "plain.safetensors"


def _with_permutation(folder, trained):
    tensors, metadata = read_checkpoint(trained)
    tensors = {k: np.array(v) for k, v in tensors.items()}
    tensors["trainer.permutation"] = np.arange(719, -1, -1, dtype=np.int64)
    tensors["trainer.permutation"][0] = 0  # a duplicate: not a permutation
    write_checkpoint(folder / "p.ckpt", tensors, metadata)
    return "p.ckpt"


@pytest.mark.parametrize("case", LIBRARY_CASES, ids=[c[0] for c in LIBRARY_CASES])
def test_library_bad_input(case, trained, tmp_path, monkeypatch):
    _, call, error, fragments = case
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ZooError) as info:
        call(tmp_path, trained)
    assert isinstance(info.value, error), repr(info.value)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    # Inputs the case made itself are allowed; nothing else may appear.
    assert all(n.endswith((".ckpt", ".safetensors")) for n in _files(tmp_path)), \
        _files(tmp_path)


def test_the_table_is_large_enough():
    ids = [c[0] for c in CLI_CASES + LIBRARY_CASES]
    assert len(ids) >= 15 and len(set(ids)) == len(ids)
