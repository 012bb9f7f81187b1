"""Every registered metric against a slow, obviously correct loop."""

import math

import numpy as np
import pytest

from zoo.plugins import PluginHost
from zoo.training.metrics import BUILTIN_METRICS, confusion_matrix, task_metrics


def slow_confusion(pred, labels, classes):
    matrix = [[0] * classes for _ in range(classes)]
    for p, t in zip(pred, labels):
        matrix[t][p] += 1
    return matrix


def slow_scores(pred, labels, classes):
    """Per class: precision, recall and F1 by counting, 0 where undefined (scikit-learn)."""
    out = []
    for c in range(classes):
        tp = sum(1 for p, t in zip(pred, labels) if p == c and t == c)
        fp = sum(1 for p, t in zip(pred, labels) if p == c and t != c)
        fn = sum(1 for p, t in zip(pred, labels) if p != c and t == c)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.append({"precision": precision, "recall": recall, "f1": f1,
                    "support": tp + fn})
    return out


@pytest.fixture
def classified():
    rng = np.random.default_rng(7)
    classes = 7
    logits = rng.standard_normal((300, classes))
    labels = rng.integers(0, classes - 1, size=300)  # the last class never occurs
    logits[labels == 2, 2] += 2.0  # class 2 is mostly right
    return logits, labels, classes


def test_confusion_matrix(classified):
    logits, labels, classes = classified
    pred = [int(np.argmax(row)) for row in logits]
    assert confusion_matrix(logits, labels).tolist() == slow_confusion(pred, labels, classes)


def test_classification_metrics_against_counting(classified):
    logits, labels, classes = classified
    pred = [int(np.argmax(row)) for row in logits]
    scores = slow_scores(pred, labels, classes)
    total = sum(s["support"] for s in scores)
    got = task_metrics("classify", logits, labels, 0.5,
                       metrics=[m for m in BUILTIN_METRICS if "classify" in m.tasks])
    assert got["loss"] == 0.5
    assert got["accuracy"] == pytest.approx(sum(p == t for p, t in zip(pred, labels)) / 300)
    for which in ("precision", "recall", "f1"):
        macro = sum(s[which] for s in scores) / classes
        weighted = sum(s[which] * s["support"] for s in scores) / total
        assert got[f"macro_{which}"] == pytest.approx(macro, abs=1e-12)
        assert got[f"weighted_{which}"] == pytest.approx(weighted, abs=1e-12)
    top5 = 0
    for row, t in zip(logits, labels):
        ranked = sorted(range(classes), key=lambda c: -row[c])
        top5 += t in ranked[:5]
    assert got["top5_accuracy"] == pytest.approx(top5 / 300)


def test_top5_is_left_out_with_five_classes_or_fewer():
    logits = np.eye(5)
    got = task_metrics("classify", logits, np.arange(5), 0.0, metrics=BUILTIN_METRICS[:2])
    assert got == {"loss": 0.0, "accuracy": 1.0}


def test_regression_metrics_against_loops():
    rng = np.random.default_rng(3)
    pred = rng.standard_normal((50, 2)).astype(np.float32)
    target = rng.standard_normal((50, 2))
    values = [(float(p), float(t)) for prow, trow in zip(pred, target) for p, t in zip(prow, trow)]
    n = len(values)
    mse = sum((p - t) ** 2 for p, t in values) / n
    mae = sum(abs(p - t) for p, t in values) / n
    mean = sum(t for _, t in values) / n
    var = sum((t - mean) ** 2 for _, t in values) / n
    got = task_metrics("regress", pred, target, 1.0,
                       metrics=[m for m in BUILTIN_METRICS if "regress" in m.tasks])
    assert got["mse"] == pytest.approx(mse, rel=1e-12)
    assert got["mae"] == pytest.approx(mae, rel=1e-12)
    assert got["rmse"] == pytest.approx(math.sqrt(mse), rel=1e-12)
    assert got["r2"] == pytest.approx(1 - mse / var, rel=1e-12)


def test_metrics_are_registered_through_the_hook():
    host = PluginHost(load=[])
    names = host.metrics.names()
    assert {"accuracy", "top5_accuracy", "macro_f1", "weighted_f1", "macro_precision",
            "weighted_recall", "mae", "rmse", "r2", "mse"} <= set(names)
    assert host.records["zoo.plugins.builtin.metrics"].registered["metrics"]
    epoch = {m.name for m in BUILTIN_METRICS if m.every_epoch}
    assert epoch == {"accuracy", "mse", "r2"}


def test_a_malformed_metric_registration_is_refused_in_one_line():
    from zoo.errors import PluginError
    from zoo.plugins.validate import check_registration
    from zoo.training.metrics import Metric

    good = Metric("medae", "median absolute error", ("regress",), lambda o, t, a=None: 0.0)
    assert check_registration("metrics", "metric", good, None, ())[0] == "medae"
    for item, factory, message in [
        ("medae", good, "takes one object"),
        (object(), None, "expected a zoo.training.metrics.Metric"),
        (Metric("val-f1", "x", ("classify",), len), None, "name must be an identifier"),
        (Metric("f", "x", ("teleport",), len), None, "tasks"),
        (Metric("f", "x", ("classify",), 42), None, "compute must be callable"),
        (Metric("f", "x", ("classify",), len, maximise="yes"), None, "maximise must be"),
    ]:
        with pytest.raises(PluginError, match=message):
            check_registration("metrics", "metric", item, factory, ())
