"""``zoo evaluate`` and ``zoo predict`` on a checkpoint, and the checkpoint options of ``train``.

``zoo train --save PATH`` writes a checkpoint when training ends (also after Ctrl-C);
``--checkpoint-every N`` (epochs; ``Nsteps`` for steps) also keeps the latest at PATH and the
best epoch beside it (``run.ckpt`` -> ``run.best.ckpt``); ``--resume PATH`` continues a saved
run exactly where it stopped.
"""

from __future__ import annotations

import os

import click

from zoo.cli.common import echo, emit_json, table
from zoo.errors import ConfigError, DataError, describe_array

# ``zoo train`` parameter -> RunConfig field, for telling what the user typed on resume.
TRAIN_SETTINGS = {"arch": "arch", "options": "options", "dataset": "dataset",
                  "epochs": "epochs", "batch_size": "batch_size", "optimizer": "optimizer",
                  "lr": "lr", "stops": "stop", "validation_split": "validation_split",
                  "clip_norm": "clip_norm", "dtype": "dtype", "seed": "seed"}


# -- zoo train --save / --resume / --checkpoint-every ------------------------------------------

def checkpoint_options(fn):
    """``--save``, ``--resume`` and ``--checkpoint-every`` for ``zoo train``."""
    fn = click.option(
        "--checkpoint-every", "checkpoint_every", metavar="N|Nsteps", default=None,
        help="Also write the latest checkpoint to the --save file every N epochs (or every N "
             "optimizer steps with 'Nsteps', e.g. 200steps), and the best epoch beside it "
             "(run.ckpt -> run.best.ckpt). Diverged weights are never written.")(fn)
    fn = click.option(
        "--resume", metavar="PATH", default=None,
        help="Continue the run saved in this checkpoint: same weights, optimizer state, "
             "random streams, data order and stopping state. Settings not given come from the "
             "checkpoint; --epochs and budget --stop specs (max_epochs, max_steps, max_time) "
             "replace the checkpoint's budget of the same name or add one. Saves back to PATH "
             "unless --save is given.")(fn)
    fn = click.option(
        "--save", metavar="PATH", default=None,
        help="Write a checkpoint here when training ends, also after Ctrl-C "
             "(safetensors layout; see 'zoo evaluate', 'zoo predict', --resume).")(fn)
    return fn


def given_settings(ctx) -> set[str]:
    """The RunConfig fields the user set on the command line (not defaults)."""
    from click.core import ParameterSource

    given = set()
    for param, name in TRAIN_SETTINGS.items():
        source = ctx.get_parameter_source(param)
        if source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            given.add(name)
    return given


def check_array_output(out, what: str) -> None:
    """``--out`` of predict/encode: a writable ``.npy`` or ``.npz`` path (or None)."""
    if out is None:
        return
    if not out.lower().endswith((".npy", ".npz")):
        raise ConfigError(f"--out must end with .npy or .npz; received {out!r}")
    check_output_path(out, what)


def check_output_path(path, what: str = "checkpoint") -> None:
    """Fail before any work when ``path`` cannot be written: its folder must exist."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"cannot write the {what} to {path}: the folder {folder} does not "
                          f"exist")
    if os.path.isdir(path):
        raise ConfigError(f"cannot write the {what} to {path}: it is a folder; expected a "
                          f"file path")


def open_train_run(config, given: set[str], *, save=None, resume=None, every=None,
                   callbacks=(), json_mode: bool = False):
    """The ``Run`` ``zoo train`` trains: new from ``config``, or resumed from a checkpoint.

    Returns ``(run, checkpointer)``; the checkpointer writes ``save`` (or, on resume, back to
    the resumed file) at the end of training and at the ``every`` cadence.
    """
    from zoo.checkpoints.callback import attach, parse_every
    from zoo.checkpoints.resume import resume_run
    from zoo.run import Run

    cadence = parse_every(every)
    if resume is not None:
        target = save if save is not None else resume
        check_output_path(target)
        overrides = {name: getattr(config, name) for name in given}
        if "options" in overrides:
            overrides["options"] = dict(config.options)
        run = resume_run(resume, overrides, callbacks, save=target,
                         every=cadence if cadence is not None else "saved")
        trainer = run.trainer
        where = (f"epoch {trainer.epoch + 1}, batch {trainer.batch_index + 1}"
                 if trainer.permutation is not None else f"the start of epoch {trainer.epoch + 1}")
        echo(f"resuming {resume} at step {trainer.step} ({where})", json_mode)
        _notes(run.resumed_from)
        return run, run.checkpointer
    if not config.arch:
        raise click.UsageError("Missing option '--arch' (required unless --resume is given).")
    if cadence is not None and save is None:
        raise ConfigError("--checkpoint-every needs a file to write: give --save PATH")
    check_output_path(save)
    run = Run(config, callbacks=callbacks)
    return run, attach(run, save, cadence)


def _notes(ck) -> None:
    from zoo.plugins import get_host

    for note in ck.notes(get_host()):
        click.echo(f"zoo: note: {note}", err=True)


def report_checkpoints(checkpointer, json_mode: bool) -> None:
    """Say where checkpoints went, or why the final one was not written."""
    if checkpointer.skipped:
        click.echo(f"zoo: warning: {checkpointer.skipped}", err=True)
    if checkpointer.best_written is not None:
        best = checkpointer.best or {}
        echo(f"best checkpoint: {checkpointer.best_written} (epoch {best.get('epoch')}, "
             f"{best.get('monitor')} {best.get('value', float('nan')):.4f})", json_mode)


# -- zoo evaluate ----------------------------------------------------------------------------

@click.command("evaluate")
@click.argument("checkpoint", metavar="CHECKPOINT")
@click.option("--dataset", default=None, metavar="NAME|PATH",
              help="Data to evaluate on; it must fit the checkpoint's data description. "
                   "Default: the dataset the checkpoint was trained on.")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test",
              show_default=True,
              help="Which split: test, or the training run's validation / training part.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def evaluate_command(checkpoint, dataset, split, as_json):
    """Loss and metrics of a saved model on a dataset's test split."""
    from zoo.checkpoints.checkpoint import check_data_fits, load_model
    from zoo.data.load import load_dataset
    from zoo.training.loop import evaluate

    model, spec, loss, ck = load_model(checkpoint)
    _notes(ck)
    data = load_dataset(dataset if dataset is not None else ck.config["dataset"])
    if spec.task != "reconstruct" and data.task != spec.task:
        raise DataError(f"dataset {data.name} does not fit checkpoint {ck.path}: expected task "
                        f"{spec.task!r}; received {data.task!r}")
    check_data_fits(ck, data.spec.with_task(spec.task), data, "dataset")
    # The same parts as the training run: its validation split of the training data.
    x_train, y_train, x_val, y_val = data.split_validation(ck.config["validation_split"],
                                                           seed=0)
    if split == "test":
        x, y = data.x_test, data.y_test
    else:
        x, y = (x_val, y_val) if split == "val" else (x_train, y_train)
        if len(x) == 0:
            raise DataError(f"the run of {ck.path} had no validation split; expected "
                            f"--split test or train")
    metrics = evaluate(model, loss, x.astype(model.dtype, copy=False), y, spec.task)
    if spec.task == "reconstruct" and split != "train":
        # As 'zoo train' reports it: a linear probe of the codes, trained on the train part.
        from types import SimpleNamespace

        from zoo.training.probe import add_probe_accuracy

        like_run = SimpleNamespace(dataset=data, model=model, spec=spec, x_train=x_train,
                                   y_train=y_train, x_val=x_val, y_val=y_val,
                                   config=SimpleNamespace(seed=ck.config["seed"]))
        add_probe_accuracy(like_run, *((metrics, {}) if split == "val" else ({}, metrics)))
    report = {"checkpoint": ck.path, "arch": ck.arch, "dataset": data.name, "split": split,
              "examples": len(x), "task": spec.task, "metrics": metrics,
              "epoch": ck.epoch, "step": ck.step, "stop_reason": ck.stop_reason}
    if as_json:
        emit_json(report)
        return
    rows = [[name, f"{value:.4f}"] for name, value in metrics.items()]
    echo(f"{ck.arch} from {ck.path} (epoch {ck.epoch}, step {ck.step}) on {data.name} "
         f"{split} ({len(x)} examples, {spec.task})", False)
    echo(table(rows, ["metric", "value"], ["<", ">"]), False)


# -- zoo predict -----------------------------------------------------------------------------

@click.command("predict")
@click.argument("checkpoint", metavar="CHECKPOINT")
@click.argument("input_path", metavar="INPUT.npy")
@click.option("--out", default=None, metavar="OUT.npy|OUT.npz",
              help="Write the predictions: .npy holds class probabilities (N, classes) for "
                   "classifiers and output values otherwise; .npz holds 'probabilities' and "
                   "'labels' (classifiers) or 'values'. Without --out they are printed.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Examples per forward pass.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object on stdout (labels and probabilities, or values).")
def predict_command(checkpoint, input_path, out, batch_size, as_json):
    """Predict with a saved model on the examples of a .npy file.

    INPUT.npy holds one example of the model's input shape, or a batch of them (the first axis
    counts examples). It is read without pickle; it must be numeric and finite.
    """
    from zoo.checkpoints.checkpoint import load_model

    check_array_output(out, "predictions")
    model, spec, loss, ck = load_model(checkpoint)
    _notes(ck)
    x = read_inputs(input_path, spec.input_shape)
    outputs = model.predict(x, batch_size=batch_size)
    arrays = prediction_arrays(outputs, spec, loss)
    if out is not None:
        _write_arrays(out, arrays)
    report = {"checkpoint": ck.path, "task": spec.task, "examples": len(x),
              "out": out, **{k: v.tolist() for k, v in arrays.items()}}
    if spec.task == "classify" and ck.classes:
        report["classes"] = [str(c) for c in ck.classes]
    if as_json:
        emit_json(report)
        return
    if out is not None:
        written = list(arrays) if out.lower().endswith(".npz") else list(arrays)[:1]
        echo(f"wrote {len(x)} predictions ({', '.join(written)}) to {out}", False)
        return
    echo(_prediction_table(arrays, ck.classes), False)


def read_inputs(path, input_shape):
    """Examples from a .npy file, checked against ``input_shape`` (batch axis optional)."""
    import numpy as np

    expected = tuple(input_shape)
    shape_text = ", ".join(map(str, expected))
    try:
        with open(path, "rb") as f:
            x = np.load(f, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"input {path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"input {path}: is a folder; expected a .npy file") from None
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(f"input {path}: holds Python objects, which would need pickle to "
                            f"load; expected a numeric .npy array of shape (N, {shape_text})") \
                from None
        raise DataError(f"input {path}: not a .npy array ({exc})") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"input {path}: cannot read it as a .npy array ({exc})") from None
    if not isinstance(x, np.ndarray):
        x.close()
        raise DataError(f"input {path}: is an .npz archive; expected a .npy file holding one "
                        f"array of shape (N, {shape_text})")
    if x.dtype.kind not in "biuf":
        raise DataError(f"input {path}: expected numbers; received {describe_array(x)}")
    if x.shape == expected:
        x = x[None]
    if x.ndim != len(expected) + 1 or x.shape[1:] != expected:
        raise DataError(f"input {path}: expected shape (N, {shape_text}) or ({shape_text}"
                        f"{',' if len(expected) == 1 else ''}) for this model; received "
                        f"{describe_array(x)}")
    if len(x) == 0:
        raise DataError(f"input {path}: is empty; expected at least one example of shape "
                        f"{expected}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise DataError(f"input {path}: contains {bad} NaN or Inf values; expected finite "
                        f"numbers")
    return x


def prediction_arrays(outputs, spec, loss) -> dict:
    """Classifiers: ``probabilities`` and ``labels``; otherwise ``values`` (reconstructions in
    the input's shape)."""
    import numpy as np

    if spec.task == "classify":
        probabilities = np.asarray(loss.activate(outputs))
        return {"probabilities": probabilities,
                "labels": np.argmax(probabilities, axis=1).astype(np.int64)}
    values = np.asarray(loss.activate(outputs))
    if spec.task == "reconstruct" and values.shape[1:] != tuple(spec.input_shape):
        values = values.reshape(len(values), *spec.input_shape)
    return {"values": values}


def _prediction_table(arrays, classes) -> str:
    import numpy as np

    if "labels" in arrays:
        labels, probs = arrays["labels"], arrays["probabilities"]
        def name(label):
            named = str(classes[label]) if classes and label < len(classes) else str(label)
            return str(label) if named == str(label) else f"{label} ({named})"

        rows = [[i, name(label), f"{probs[i, label]:.4f}"]
                for i, label in enumerate(labels.tolist())]
        return table(rows, ["example", "label", "probability"], ["<", "<", ">"])
    values = arrays["values"].reshape(len(arrays["values"]), -1)
    with np.printoptions(precision=4, suppress=True, threshold=8, edgeitems=3):
        rows = [[i, np.array2string(v, separator=", ")] for i, v in enumerate(values)]
    return table(rows, ["example", "values"])


def _write_arrays(out, arrays: dict) -> None:
    """Write .npy (the main array) or .npz (all of them), atomically."""
    import numpy as np

    from zoo.atomic import atomic_open

    with atomic_open(out) as f:
        if str(out).lower().endswith(".npz"):
            np.savez(f, **arrays)
        else:
            np.save(f, arrays.get("probabilities", arrays.get("values")), allow_pickle=False)


COMMANDS = [evaluate_command, predict_command]
