"""``zoo evaluate`` and ``zoo predict`` on a checkpoint, and the checkpoint options of ``train``.

``zoo train --save PATH`` writes a checkpoint when training ends (also after Ctrl-C);
``--checkpoint-every N`` (epochs; ``Nsteps`` for steps) also keeps the latest at PATH and the
best epoch beside it (``run.ckpt`` -> ``run.best.ckpt``); ``--resume PATH`` continues a saved
run exactly where it stopped.
"""

from __future__ import annotations

import click

from zoo.cli.common import echo, emit_json, table
from zoo.errors import ConfigError

# ``zoo train`` parameter -> RunConfig field, for telling what the user typed on resume.
TRAIN_SETTINGS = {"arch": "arch", "options": "options", "dataset": "dataset",
                  "epochs": "epochs", "batch_size": "batch_size", "optimizer": "optimizer",
                  "lr": "lr", "stops": "stop", "validation_split": "validation_split",
                  "clip_norm": "clip_norm", "dtype": "dtype", "seed": "seed", "loss": "loss",
                  "schedule": "schedule", "metric": "metric", "label_column": "label_column",
                  "task": "task", "standardize": "standardize"}


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
    """Fail before any work when ``path`` cannot be written: a real temp file is created and
    removed beside it, named as the final save names it (``zoo.atomic.probe_writable``)."""
    if path is None:
        return
    from zoo.atomic import probe_writable

    probe_writable(path, what)


def open_train_run(config, given: set[str], *, save=None, resume=None, every=None,
                   callbacks=(), json_mode: bool = False):
    """The ``Run`` ``zoo train`` trains: new from ``config``, or resumed from a checkpoint.

    Returns ``(run, checkpointer)``; the checkpointer writes ``save`` (or, on resume, back to
    the resumed file) at the end of training and at the ``every`` cadence.
    """
    from zoo.checkpoints.callback import attach, best_path_for, parse_every
    from zoo.checkpoints.resume import resume_run
    from zoo.run import Run

    cadence = parse_every(every)
    if resume is not None:
        target = save if save is not None else resume
        check_output_path(target)
        if cadence is not None:
            check_output_path(best_path_for(target), "best checkpoint")
        overrides = {name: getattr(config, name) for name in given}
        if "options" in overrides:
            overrides["options"] = dict(config.options)
        run = resume_run(resume, overrides, callbacks, save=target,
                         every=cadence if cadence is not None else "saved")
        trainer = run.trainer
        where = (f"epoch {trainer.epoch + 1}, batch {trainer.batch_index + 1}"
                 if trainer.permutation is not None else f"the start of epoch {trainer.epoch + 1}")
        echo(f"resuming {resume} at step {trainer.step} ({where})", json_mode)
        print_notes(run.resumed_from)
        return run, run.checkpointer
    if not config.arch:
        raise click.UsageError("Missing option '--arch' (required unless --resume is given).")
    if cadence is not None and save is None:
        raise ConfigError("--checkpoint-every needs a file to write: give --save PATH")
    check_output_path(save)
    if cadence is not None:  # the best epoch goes beside it, under a longer name
        check_output_path(best_path_for(save), "best checkpoint")
    # What was guessed about a data file's labels: one line on stderr, also if the run fails.
    run = Run(config, callbacks=callbacks, announce=lambda text: click.echo(text, err=True))
    return run, attach(run, save, cadence)


def print_notes(ck) -> None:
    """The checkpoint's notes (e.g. other plugin versions) on stderr."""
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
    from zoo.checkpoints.checkpoint import load_model
    from zoo.inference import evaluate_model

    model, spec, loss, ck = load_model(checkpoint)
    print_notes(ck)
    report = evaluate_model(model, spec, loss, ck, dataset=dataset, split=split)
    if as_json:
        emit_json(report)
        return
    rows = [[name, f"{value:.4f}"] for name, value in report["metrics"].items()]
    echo(f"{ck.arch} from {ck.path} (epoch {ck.epoch}, step {ck.step}) on {report['dataset']} "
         f"{split} ({report['examples']} examples, {spec.task})", False)
    echo(table(rows, ["metric", "value"], ["<", ">"]), False)
    if "confusion_matrix" in report:
        echo("\nconfusion matrix (rows: true class, columns: predicted)", False)
        labels = report["classes"]
        echo(table([[labels[i], *row] for i, row in enumerate(report["confusion_matrix"])],
                   ["true\\pred", *labels], ["<"] + [">"] * len(labels)), False)


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
@click.option("--allow-nonfinite", is_flag=True,
              help="Write predictions that are NaN or Inf (the model overflowed) instead of "
                   "failing: they are flagged ('finite' false, label -1) and listed on stderr.")
def predict_command(checkpoint, input_path, out, batch_size, as_json, allow_nonfinite):
    """Predict with a saved model on the examples of a .npy file.

    INPUT.npy holds one example of the model's input shape, or a batch of them (the first axis
    counts examples). It is read without pickle; it must be numeric and finite.
    """
    from zoo.checkpoints.checkpoint import load_model
    from zoo.inference import (
        check_finite_outputs,
        describe_rows,
        flag_nonfinite,
        prediction_arrays,
        read_inputs,
        write_arrays,
    )

    check_array_output(out, "predictions")
    model, spec, loss, ck = load_model(checkpoint)
    print_notes(ck)
    x = read_inputs(input_path, spec.input_shape, model.dtype)
    outputs = model.raw_outputs(x, batch_size=batch_size)
    arrays = prediction_arrays(outputs, spec, loss)
    main = arrays["probabilities"] if "probabilities" in arrays else arrays["values"]
    bad = check_finite_outputs(main, allow_nonfinite)
    if len(bad):
        flag_nonfinite(arrays, bad)
        click.echo(f"zoo: warning: {len(bad)} of {len(main)} predictions are not finite, "
                   f"{describe_rows(bad)} (flagged: finite false"
                   f"{', label -1' if 'labels' in arrays else ''})", err=True)
    if out is not None:
        write_arrays(out, arrays)
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
    echo(prediction_table(arrays, ck.classes), False)


def prediction_table(arrays, classes) -> str:
    import numpy as np

    if "labels" in arrays:
        labels, probs = arrays["labels"], arrays["probabilities"]
        def name(label):
            if label < 0:
                return "- (not finite)"
            named = str(classes[label]) if classes and label < len(classes) else str(label)
            return str(label) if named == str(label) else f"{label} ({named})"

        rows = [[i, name(label), f"{probs[i, label]:.4f}" if label >= 0 else "nan"]
                for i, label in enumerate(labels.tolist())]
        return table(rows, ["example", "label", "probability"], ["<", "<", ">"])
    values = arrays["values"].reshape(len(arrays["values"]), -1)
    with np.printoptions(precision=4, suppress=True, threshold=8, edgeitems=3):
        rows = [[i, np.array2string(v, separator=", ")] for i, v in enumerate(values)]
    return table(rows, ["example", "values"])


COMMANDS = [evaluate_command, predict_command]
