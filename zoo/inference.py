"""Using a trained model: evaluate a checkpoint on a dataset split, read examples to predict on,
turn outputs into predictions, write them. ``zoo evaluate``, ``zoo predict`` and ``zoo encode``
are these functions plus printing.
"""

from __future__ import annotations

import numpy as np

from zoo.atomic import atomic_open
from zoo.errors import DataError, NumericError, describe_array

SPLITS = ("test", "val", "train")


def evaluate_checkpoint(path, *, dataset=None, split: str = "test", host=None) -> dict:
    """``evaluate_model`` on the model saved in checkpoint ``path``."""
    from zoo.checkpoints.checkpoint import load_model

    return evaluate_model(*load_model(path, host=host), dataset=dataset, split=split, host=host)


def evaluate_model(model, spec, loss, ck, *, dataset=None, split: str = "test",
                   host=None) -> dict:
    """Loss and metrics of a saved model on one split of a dataset, as ``zoo train`` reports.

    Args:
        model, spec, loss, ck: what ``zoo.checkpoints.checkpoint.load_model`` returns.
        dataset: a dataset name or path (default: the one the checkpoint was trained on); it
            must fit the checkpoint's data description.
        split: ``test``; or ``val`` / ``train``, the parts the training run split its training
            data into (same fraction, same seed).
        host: the plugin host to load the dataset from (default: the process-wide one).

    Returns the report ``zoo evaluate --json`` prints: checkpoint, arch, dataset, split,
    examples, task, metrics (every registered metric of the task, with the linear probe's
    ``probe_accuracy`` for an autoencoder on labelled data), epoch, step, stop_reason; for a
    classifier also ``classes`` and ``confusion_matrix`` (rows: true class, columns:
    predicted).
    """
    from zoo import checks
    from zoo.checkpoints.checkpoint import check_data_fits
    from zoo.data.load import is_data_file, load_dataset
    from zoo.plugins.host import resolve_host
    from zoo.training.loop import evaluate
    from zoo.training.metrics import confusion_matrix, metrics_for
    from zoo.training.probe import probe_accuracy

    checks.one_of(None, "split", split, SPLITS)
    source = dataset if dataset is not None else ck.config["dataset"]
    # A data file is read as the run read it: same label column, same task.
    file_options = {} if not is_data_file(source, host=host) else \
        {k: ck.config[k] for k in ("label_column", "task") if ck.config.get(k) is not None}
    data = load_dataset(source, host=host, **file_options)
    if spec.task != "reconstruct" and data.task != spec.task:
        raise DataError(f"dataset {data.name} does not fit checkpoint {ck.path}: expected task "
                        f"{spec.task!r}; received {data.task!r}")
    check_data_fits(ck, data.spec.with_task(spec.task), data, "dataset")
    # The same parts as the training run: its validation split of the training data.
    parts = data.split_validation(ck.config["validation_split"], seed=0)
    x_train, y_train, x_val, y_val = parts
    if split == "test":
        x, y = data.x_test, data.y_test
    else:
        x, y = (x_val, y_val) if split == "val" else (x_train, y_train)
        if len(x) == 0:
            raise DataError(f"the run of {ck.path} had no validation split; expected "
                            f"--split test or train")
    outputs: list = []
    metrics = evaluate(model, loss, x.astype(model.dtype, copy=False), y, spec.task,
                       metrics=metrics_for(spec.task, resolve_host(host).metrics),
                       outputs_out=outputs)
    if split != "train":
        # As 'zoo train' reports it: a linear probe of the codes, trained on the train part.
        scores = probe_accuracy(model, data, spec.task, parts, seed=ck.config["seed"],
                                splits=(split,))
        if split in scores:
            metrics["probe_accuracy"] = scores[split]
    report = {"checkpoint": ck.path, "arch": ck.arch, "dataset": data.name, "split": split,
              "examples": len(x), "task": spec.task, "metrics": metrics,
              "epoch": ck.epoch, "step": ck.step, "stop_reason": ck.stop_reason}
    if spec.task == "classify" and y is not None:
        matrix = confusion_matrix(outputs[0], y, spec.num_classes or spec.output_size)
        report["classes"] = [str(c) for c in (ck.classes or range(len(matrix)))]
        report["confusion_matrix"] = matrix.tolist()
    return report


def read_inputs(path, input_shape, dtype=None):
    """Examples from a .npy file, checked against ``input_shape`` (batch axis optional) and,
    given the model's ``dtype``, against its range (a float64 1e300 would become inf).

    The file is read by ``zoo.data.npy.read_npy``: a regular file only, its header checked
    against the bytes present before allocating, never a pickle."""
    from zoo.data.npy import read_npy

    expected = tuple(input_shape)
    shape_text = ", ".join(map(str, expected))
    x = read_npy(path, f"input {path}")
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
    if dtype is not None and x.dtype.kind == "f" and x.dtype.itemsize > np.dtype(dtype).itemsize:
        limit = float(np.finfo(dtype).max)
        beyond = np.abs(x) > limit
        if beyond.any():
            rows = np.flatnonzero(beyond.reshape(len(x), -1).any(axis=1))
            n = int(beyond.sum())
            raise DataError(f"input {path}: {n} value{'s are' if n != 1 else ' is'} beyond the "
                            f"range of the model's {np.dtype(dtype).name} (|x| <= "
                            f"{limit:.4g}), in {describe_rows(rows)}")
    return x


def describe_rows(rows, shown: int = 10) -> str:
    """'rows 0, 3, 7' (at most ``shown`` listed, then 'and N more')."""
    rows = [int(r) for r in rows]
    listed = ", ".join(map(str, rows[:shown]))
    more = f" and {len(rows) - shown} more" if len(rows) > shown else ""
    return f"row{'s' * (len(rows) != 1)} {listed}{more}"


def nonfinite_rows(values: np.ndarray) -> np.ndarray:
    """Indices of the rows of ``values`` (batch first) holding NaN or Inf."""
    return np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))


def check_finite_outputs(values: np.ndarray, allow: bool, what: str = "predictions"):
    """The rows of ``values`` that are not finite. Without ``allow`` any such row is a
    ``NumericError`` (exit code 1): a model that overflows on an input must not answer with
    label 0 and NaN probabilities as if nothing happened."""
    rows = nonfinite_rows(values)
    if len(rows) and not allow:
        raise NumericError(f"{what} are not finite (NaN or Inf) for {len(rows)} of "
                           f"{len(values)} examples, {describe_rows(rows)}: the model "
                           f"overflowed on them; --allow-nonfinite writes them flagged")
    return rows


def flag_nonfinite(arrays: dict, rows) -> dict:
    """Mark the non-finite ``rows`` of predictions: a ``finite`` array and, for classifiers,
    label -1 (no class) instead of the argmax of NaNs."""
    main = arrays["probabilities"] if "probabilities" in arrays else arrays["values"]
    arrays["finite"] = np.ones(len(main), bool)
    arrays["finite"][rows] = False
    if "labels" in arrays:
        arrays["labels"][rows] = -1
    return arrays


def prediction_arrays(outputs, spec, loss) -> dict:
    """Classifiers: ``probabilities`` and ``labels``; otherwise ``values`` (reconstructions in
    the input's shape)."""
    if spec.task == "classify":
        probabilities = np.asarray(loss.activate(outputs))
        return {"probabilities": probabilities,
                "labels": np.argmax(probabilities, axis=1).astype(np.int64)}
    values = np.asarray(loss.activate(outputs))
    if spec.task == "reconstruct" and values.shape[1:] != tuple(spec.input_shape):
        values = values.reshape(len(values), *spec.input_shape)
    return {"values": values}


def write_arrays(out, arrays: dict) -> None:
    """Write ``out``: a ``.npy`` file holds the main array (``probabilities``, else ``values``),
    a ``.npz`` file every array by name. Atomically: the file appears complete or not at all."""
    with atomic_open(out) as f:
        if str(out).lower().endswith(".npz"):
            np.savez(f, **arrays)
        else:
            main = arrays["probabilities"] if "probabilities" in arrays else arrays["values"]
            np.save(f, main, allow_pickle=False)
