"""``zoo train``: train one architecture on one dataset."""

from __future__ import annotations

import click

from zoo.cli.checkpoints import (
    checkpoint_options,
    given_settings,
    open_train_run,
    report_checkpoints,
)
from zoo.cli.common import echo, emit_json, parse_key_values, table
from zoo.cli.runs import check_store, record_train_run, store_options
from zoo.data import DEFAULT_DATASET
from zoo.errors import ConfigError
from zoo.training.loop import INTERRUPTED

# The shell's status for a process stopped by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130


def training_options(fn):
    """The options ``train`` and ``compare`` share (same names, same meaning)."""
    decorators = [
        click.option("--dataset", default=DEFAULT_DATASET, show_default=True,
                     help="A dataset name or spec with its options, e.g. 'spirals(arms=3)' "
                          "(see 'zoo list datasets'), or a path to a .npz, .csv or MNIST IDX "
                          "folder."),
        click.option("--epochs", type=int, default=None,
                     help="Epoch budget (max_epochs). Default: the architecture's."),
        click.option("--batch-size", type=int, default=None,
                     help="Examples per step. Default: the architecture's."),
        click.option("--optimizer", default=None, metavar="SPEC",
                     help="An optimizer and its settings, e.g. adam or "
                          "'sgd(momentum=0.9, nesterov=true, weight_decay=1e-4)' (see 'zoo list "
                          "optimizers'). Default: the architecture's."),
        click.option("--loss", default=None, metavar="SPEC",
                     help="The loss to train with, e.g. mse or 'focal(gamma=3)' (see 'zoo list "
                          "losses'). Default: the one the architecture names for the task."),
        click.option("--schedule", default=None, metavar="SPEC",
                     help="Learning-rate schedule, e.g. 'cosine(warmup_epochs=5)', "
                          "'step(step_size=10, gamma=0.5)', 'reduce_on_plateau(patience=3)' "
                          "(see 'zoo list schedules'). Default: constant."),
        click.option("--metric", default=None, metavar="NAME",
                     help="The metric the default early stopping watches (as val_NAME) and "
                          "compare ranks by, e.g. macro_f1 (see 'zoo list metrics'). Default: "
                          "accuracy for classification, the loss otherwise."),
        click.option("--lr", type=float, default=None,
                     help="Learning rate. Default: the architecture's."),
        click.option("--stop", "stops", multiple=True, metavar="SPEC",
                     help="Stopping criterion, e.g. 'max_epochs=50' or "
                          "'early_stopping(monitor=val_loss,patience=5)'; repeatable. "
                          "Replaces the default early stopping."),
        click.option("--validation-split", type=float, default=None,
                     help="Fraction of the training split held out for validation. "
                          "Default: the architecture's, else 0.1."),
        click.option("--clip-norm", type=float, default=None,
                     help="Clip the global gradient norm to this value."),
        click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
                     show_default=True, help="Floating-point type of the model."),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


# The columns of the table 'zoo train' prints (--json carries every metric).
TABLE_METRICS = ("loss", "accuracy", "top5_accuracy", "macro_f1", "probe_accuracy", "mse",
                 "rmse", "mae", "r2")


def result_table(result: dict) -> str:
    """The table ``zoo train`` prints at the end: the headline metrics of each split."""
    splits = {"train": result.get("train") or {"loss": result["train_loss"]},
              "val": result["val"], "test": result["test"]}
    shown = (*TABLE_METRICS, result.get("metric"))
    names = []
    for metrics in splits.values():
        names += [k for k in metrics if k not in names and k in shown]
    names.sort(key=lambda n: shown.index(n))
    rows = [[split] + [f"{metrics[n]:.4f}" if n in metrics and metrics[n] is not None else "-"
                       for n in names] for split, metrics in splits.items()]
    lines = [
        f"{result['arch']} on {result['dataset']} ({result['task']})",
        table(rows, ["split", *names], ["<"] + [">"] * len(names)),
        f"stopped: {result['stop_reason']}",
        *result.get("notes", []),
        f"params {result['params']:,}  epochs {result['epochs']}  steps {result['steps']:,}  "
        f"train {result['train_time_s']:.1f}s  compile {result['compile_time_s']:.1f}s  "
        f"{result['samples_per_s']:,.0f} samples/s",
    ]
    if result.get("checkpoint"):
        lines.append(f"checkpoint: {result['checkpoint']}")
    return "\n".join(lines)


@click.command("train")
@click.option("--arch", default=None,
              help="Architecture name (see 'zoo list architectures'); required unless --resume.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Architecture option (see 'zoo info ARCH'); repeatable.")
@training_options
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for initialisation and data order.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result as one JSON object on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Print a line per epoch even off a terminal.")
@click.option("--label-column", default=None, metavar="NAME|INDEX",
              help="Data files: the CSV column holding the label, by name or 0-based index "
                   "(default: the last column; the guess is stated).")
@click.option("--task", type=click.Choice(["classify", "regress", "reconstruct"]), default=None,
              help="Data files: the task, instead of the one guessed from the labels "
                   "(integers and text classify, decimals regress).")
@click.option("--standardize", is_flag=True,
              help="Scale each feature to mean 0 and standard deviation 1, measured on the "
                   "training split; saved in the checkpoint and applied by evaluate/predict.")
@store_options
@checkpoint_options
@click.option("--plot", metavar="PATH.png", default=None,
              help="Autoencoders: draw test examples next to their reconstructions "
                   "(needs matplotlib: pip install 'archzoo[plot]').")
def train_command(arch, options, dataset, epochs, batch_size, optimizer, loss, schedule, metric,
                  lr, stops, validation_split, clip_norm, dtype, seed, as_json, verbose,
                  label_column, task, standardize, store, no_store, save, resume,
                  checkpoint_every, plot):
    """Train an architecture on a dataset and print the result."""
    from zoo.run import RunConfig
    from zoo.training.progress import ProgressBar

    if plot is not None:  # before any work: nothing is written without matplotlib
        from zoo.recon_plot import check_plot_path, require_matplotlib

        require_matplotlib()
        check_plot_path(plot)
    check_store(store, no_store)
    config = RunConfig(arch=arch, dataset=dataset, options=parse_key_values(options),
                       epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                       seed=seed, stop=tuple(stops), validation_split=validation_split,
                       clip_norm=clip_norm, dtype=dtype, loss=loss, schedule=schedule,
                       metric=metric, label_column=label_column, task=task,
                       standardize=standardize)
    run, checkpointer = open_train_run(
        config, given_settings(click.get_current_context()), save=save, resume=resume,
        every=checkpoint_every, callbacks=[ProgressBar(verbose=verbose)], json_mode=as_json)
    if plot is not None and run.spec.task != "reconstruct":
        raise ConfigError(f"--plot draws reconstructions; architecture {run.architecture.name} "
                          f"does not reconstruct (its task here is {run.spec.task})")
    echo(f"training {run.architecture.name} ({run.model.num_params:,} parameters) on "
         f"{run.dataset.name}: {len(run.x_train)} train / {len(run.x_val)} val / "
         f"{len(run.dataset.x_test)} test examples, batch {run.batch_size}"
         f"{', standardized' if run.config.standardize else ''}", as_json)
    echo(f"optimizer {run.optimizer!r}; loss {run.loss_spec}"
         + (f"; schedule {run.schedule!r}" if run.schedule is not None else ""), as_json)
    for note in run.notes():
        echo(note, as_json)
    run.fit()  # the checkpointer writes --save at the end, also after Ctrl-C
    report_checkpoints(checkpointer, as_json)
    result = run.result().to_dict()
    if plot is not None:
        from zoo.recon_plot import plot_run

        result["plot"] = plot
        plotted = plot_run(run, plot)
    if as_json:
        emit_json(result)
    echo(result_table(result), as_json)
    if plot is not None:
        echo(f"plot: {plotted} test examples and their reconstructions in {plot}", as_json)
    record_train_run(result, run.config.to_dict(), store, no_store, as_json)  # the run store
    if run.trainer.stop_reason == INTERRUPTED:
        # Saved and reported like any stop; the exit status says Ctrl-C, as a shell expects.
        click.get_current_context().exit(EXIT_INTERRUPTED)


COMMANDS = [train_command]
