"""Linear probe: how linearly separable the classes are in an autoencoder's codes.

A multinomial logistic regression (zoo's ``Dense`` + ``SoftmaxCrossEntropy`` + ``AdamW``,
mini-batches) is trained on the standardised codes of the training split and scored on other
splits: the usual measure of a representation (Alain and Bengio, "Understanding intermediate
layers using linear classifier probes", 2016), and the number that lets an autoencoder sit in
a comparison table next to the classifiers.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError, describe_array

# Mini-batches keep each product small: OpenBLAS runs larger ones on several threads, which
# costs milliseconds per product when other processes hold the cores.
PROBE_BATCH = 256
PROBE_EPOCHS = 60
PROBE_LR = 0.01
PROBE_WEIGHT_DECAY = 1e-4


def linear_probe(train_codes, train_labels, eval_sets: dict, *, num_classes: int | None = None,
                 seed: int = 0, epochs: int = PROBE_EPOCHS, batch_size: int = PROBE_BATCH,
                 lr: float = PROBE_LR, weight_decay: float = PROBE_WEIGHT_DECAY) -> dict:
    """Train a linear classifier on ``train_codes`` and return its accuracy on each eval set.

    Args:
        train_codes: ``(N, D)`` codes; train_labels: ``(N,)`` integer labels.
        eval_sets: ``{name: (codes, labels)}``; empty sets are skipped.
        num_classes: the number of classes (default: the largest label seen + 1).
        seed: seeds the classifier's initial weights and the order of the examples; the result
            is deterministic given it.
        epochs, batch_size: mini-batch AdamW passes over the codes and examples per step;
        lr, weight_decay: AdamW's learning rate and decoupled weight decay.

    Returns:
        ``{name: accuracy}`` for each non-empty eval set.
    """
    from zoo.layers.base import Layer
    from zoo.layers.dense import Dense
    from zoo.losses import SoftmaxCrossEntropy
    from zoo.optimizers import AdamW
    from zoo.training.flat import flatten_parameters
    from zoo.training.metrics import accuracy

    x = _codes(train_codes, "train_codes")
    y = np.ascontiguousarray(train_labels, dtype=np.int64)
    if y.shape != (len(x),):
        raise DataError(f"linear_probe: train_labels must have shape ({len(x)},); received "
                        f"{describe_array(train_labels)}")
    if num_classes is None:
        num_classes = int(max([y.max(), *(np.max(labels) for _, labels in eval_sets.values()
                                          if len(labels))]))
        num_classes += 1
    # Standardised codes make one learning rate fit every autoencoder's code scale.
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-8] = 1.0
    x = (x - mean) / scale

    rng = np.random.default_rng([seed, 0x9B0BE])
    classifier = Dense(num_classes)
    classifier.needs_input_grad = False
    layer: Layer = classifier  # Layer.build takes dtype for every layer (see Layer)
    layer.build((x.shape[1],), rng, dtype=np.float64)
    values, grads = flatten_parameters(classifier)
    loss = SoftmaxCrossEntropy()
    optimizer = AdamW(lr=lr, weight_decay=weight_decay)
    n = len(x)
    batch = min(batch_size, n)
    xb = np.empty((batch, x.shape[1]))
    yb = np.empty(batch, np.int64)
    for _ in range(epochs):
        # Whole batches only, so every step has one shape; the order changes every epoch.
        order = rng.permutation(n)
        for lo in range(0, n - batch + 1, batch):
            idx = order[lo:lo + batch]
            np.take(x, idx, axis=0, out=xb)
            np.take(y, idx, out=yb)
            loss.forward(classifier.forward(xb, training=True), yb)
            classifier.backward(loss.backward())
            optimizer.step([values], [grads])

    scores = {}
    for name, (codes, labels) in eval_sets.items():
        if len(codes) == 0:
            continue
        z = (_codes(codes, f"{name} codes") - mean) / scale
        logits = np.concatenate([classifier.forward(z[i:i + 1024])
                                 for i in range(0, len(z), 1024)])
        scores[name] = accuracy(logits, np.asarray(labels))
    return scores


def _codes(codes, what: str) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2 or len(codes) == 0 or codes.dtype.kind not in "fiu":
        raise DataError(f"linear_probe: {what} must be a non-empty numeric (N, D) array; "
                        f"received {describe_array(codes)}")
    return np.ascontiguousarray(codes, dtype=np.float64)


def probe_accuracy(model, dataset, task: str, parts, *, seed: int,
                   splits=("val", "test")) -> dict:
    """``{split: accuracy}`` of a linear probe on ``model``'s codes, where it means something.

    That is: the model reconstructs (``task``), ``dataset`` is labelled for classification and
    the model has ``encode``; otherwise ``{}``. ``parts`` is ``(x_train, y_train, x_val, y_val)``
    as ``Dataset.split_validation`` gives them: the probe trains on the codes of the training
    part and is scored on the ``splits`` asked for (``val``, ``test``) that have examples.
    """
    x_train, y_train, x_val, y_val = parts
    if task != "reconstruct" or dataset.task != "classify" \
            or not callable(getattr(model, "encode", None)) or y_train is None:
        return {}
    sets = {}
    if "test" in splits:
        sets["test"] = (model.encode(dataset.x_test), dataset.y_test)
    if "val" in splits and len(x_val):
        sets["val"] = (model.encode(x_val), y_val)
    if not sets:
        return {}
    return linear_probe(model.encode(x_train), y_train, sets, num_classes=dataset.num_classes,
                        seed=seed)


def add_probe_accuracy(run, val: dict, test: dict, *, test_split: bool = True) -> None:
    """Add ``probe_accuracy`` to a ``Run``'s ``val`` and ``test`` metrics (see
    ``probe_accuracy``); ``val`` only when it is not empty, ``test`` unless ``test_split`` is
    False."""
    parts = (run.x_train, run.y_train, run.x_val, run.y_val)
    splits = (("val",) if val else ()) + (("test",) if test_split else ())
    if not splits:
        return
    scores = probe_accuracy(run.model, run.dataset, run.spec.task, parts, seed=run.config.seed,
                            splits=splits)
    for name, metrics in (("val", val), ("test", test)):
        if name in scores:
            metrics["probe_accuracy"] = scores[name]
