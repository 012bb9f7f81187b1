"""The conformance checks for everything else a plugin registers: optimizers, losses,
datasets, stopping criteria, learning-rate schedules and metrics.

Like the architecture checks (``zoo.kit.conformance``), each ``check_*`` raises
``AssertionError`` with a message naming the component and what went wrong, returns the list of
what it checked, and runs in well under a second:

- ``check_optimizer``: the factory takes ``lr`` and the options; a step updates float32 and
  float64 arrays in place, in their dtype, and matches a plain numpy ``reference`` when given;
  a few hundred steps lower a quadratic; ``get_config()`` rebuilds the same optimizer;
  ``state_dict()`` taken mid-run and loaded into a fresh optimizer continues bit-identically
  (what a resumed run relies on).
- ``check_loss``: the value is a finite float, the same for float32 and float64 predictions
  within float32 precision, and matches a plain numpy ``reference`` when given; ``backward``
  has the predictions' shape and dtype and matches
  float64 central differences; ``activate`` keeps the shape.
- ``check_dataset``: the loader returns a ``Dataset`` whose arrays have the declared task,
  kind and shapes (labels in range for classification); the same seed gives the same arrays;
  each option the loader takes, given its default explicitly, gives the default data.
- ``check_criterion``: a ``--stop`` spec builds it; ``repr`` is a spec that parses back;
  fed the same epochs, a copy restored from ``state_dict()`` mid-run decides exactly as the
  original.
- ``check_schedule``: a ``--schedule`` spec builds it; ``repr`` parses back; rates are finite
  and non-negative; an epoch schedule keeps one rate per epoch; a copy restored from a
  JSON round trip of ``state_dict()`` mid-run gives the same rates as the original.
- ``check_metric``: well formed, and a finite float (or None) on data of each task it names.
"""

from __future__ import annotations

import inspect
import json
import math

import numpy as np


def _host(host):
    if host is None:
        from zoo.plugins import get_host

        host = get_host()
    return host


def _fail(what: str, message: str):
    raise AssertionError(f"{what}: {message}")


# -- optimizers ----------------------------------------------------------------------------------

def _quadratic_grads(params, centre):
    return [2.0 * (p - c) for p, c in zip(params, centre)]


def check_optimizer(name, *, options=None, reference=None, lr: float = 0.01,
                    host=None) -> list[str]:
    """Check the optimizer registered as ``name`` built with ``lr`` and ``options``.

    Args:
        reference: optional ``reference(param, grads, lr=..., **options) -> param``: the
            parameter after applying ``grads`` (a list of arrays, in order) from a fresh state,
            written plainly in numpy. The optimizer must match it to 1e-10 in float64.
    """
    host = _host(host)
    factory = host.optimizers.get(name)
    options = dict(options or {})
    what = f"optimizer {name}({', '.join(f'{k}={v!r}' for k, v in options.items())})"
    done = []

    def make(rate=lr):
        try:
            return factory(lr=rate, **options)
        except Exception as exc:  # the kit reports, it does not crash
            _fail(what, f"factory(lr={rate}, **options) raised {type(exc).__name__}: {exc}")

    rng = np.random.default_rng(0)
    start = [rng.standard_normal(7), rng.standard_normal((3, 4))]
    grads = [[rng.standard_normal(p.shape) for p in start] for _ in range(6)]

    for dtype in (np.float32, np.float64):
        opt = make()
        params = [p.astype(dtype) for p in start]
        views = list(params)
        opt.step(params, [g.astype(dtype) for g in grads[0]])
        for p, v in zip(params, views):
            if p is not v or p.dtype != dtype:
                _fail(what, f"step must update the {dtype.__name__} arrays in place, in their "
                            f"dtype; received {p.dtype}")
        if all(np.array_equal(p, s.astype(dtype)) for p, s in zip(params, start)):
            _fail(what, f"a step with non-zero gradients left the {dtype.__name__} parameters "
                        "unchanged")
    done.append("steps update float32 and float64 arrays in place")

    if reference is not None:
        for i, p0 in enumerate(start):
            opt = make()
            param = p0.copy()
            for g in grads:
                opt.step([param], [g[i].copy()])
            expected = reference(p0.copy(), [g[i].copy() for g in grads], lr=lr, **options)
            if not np.allclose(param, expected, rtol=1e-10, atol=1e-12):
                worst = float(np.max(np.abs(param - expected)))
                _fail(what, f"after {len(grads)} steps the parameter differs from the "
                            f"reference by up to {worst:.3g}")
        done.append("matches the reference update")

    opt = make(0.05)
    centre = [np.full(p.shape, 0.5) for p in start]
    params = [p.copy() for p in start]
    first = sum(float(np.sum((p - c) ** 2)) for p, c in zip(params, centre))
    for _ in range(300):
        opt.step(params, _quadratic_grads(params, centre))
    last = sum(float(np.sum((p - c) ** 2)) for p, c in zip(params, centre))
    if not last < first:
        _fail(what, f"300 steps on a quadratic did not lower it ({first:.4g} -> {last:.4g})")
    done.append("descends on a quadratic")

    config = opt.get_config()
    try:
        json.dumps(config)
        rebuilt = factory(**config)
    except Exception as exc:
        _fail(what, f"factory(**get_config()) must rebuild it from JSON values; "
                    f"{type(exc).__name__}: {exc}")
    if rebuilt.get_config() != config:
        _fail(what, f"get_config() does not round trip: {config} -> {rebuilt.get_config()}")
    done.append("get_config rebuilds it")

    original = make()
    params = [p.copy() for p in start]
    for g in grads[:3]:
        original.step(params, [x.copy() for x in g])
    state = original.state_dict()
    resumed = make(lr * 7)  # another rate: the state's config must win, as on resume
    resumed.load_state_dict(state)
    copies = [p.copy() for p in params]
    for g in grads[3:]:
        original.step(params, [x.copy() for x in g])
        resumed.step(copies, [x.copy() for x in g])
    if not all(np.array_equal(a, b) for a, b in zip(params, copies)):
        _fail(what, "an optimizer loaded from state_dict() mid-run does not continue "
                    "bit-identically (a resumed run would differ)")
    done.append("state_dict round trip resumes bit-identically")
    return done


# -- losses --------------------------------------------------------------------------------------

def check_loss(name, *, options=None, task: str = "regress", classes: int = 3,
               reference=None, host=None) -> list[str]:
    """Check the loss registered as ``name`` on predictions and targets of ``task``
    (``"classify"``: integer labels; ``"regress"``: float targets; ``"binary"``: 0/1).

    Args:
        reference: optional ``reference(pred, target, **options) -> float``, the loss written
            plainly in numpy; the value must match it to 1e-10 in float64.
    """
    from zoo.kit.gradcheck import check_loss as gradient_check

    host = _host(host)
    factory = host.losses.get(name)
    options = dict(options or {})
    what = f"loss {name}"
    rng = np.random.default_rng(1)
    pred = rng.standard_normal((5, classes))
    target: np.ndarray
    if task == "classify":
        target = rng.integers(0, classes, size=5)
    elif task == "binary":
        target = rng.integers(0, 2, size=(5, classes)).astype(np.float64)
    else:
        target = rng.standard_normal((5, classes))
    loss = factory(**options)
    done = []
    values = {}
    for dtype in (np.float32, np.float64):
        p = pred.astype(dtype)
        t = target.astype(dtype) if target.dtype.kind == "f" else target
        value = loss.forward(p.copy(), t)
        if not isinstance(value, (float, np.floating)) or not math.isfinite(value):
            _fail(what, f"forward must return a finite float; received {value!r}")
        grad = loss.backward()
        if grad.shape != p.shape or grad.dtype != dtype:
            _fail(what, f"backward must return the predictions' shape and dtype {p.shape} "
                        f"{dtype.__name__}; received {grad.shape} {grad.dtype}")
        values[dtype] = float(value)
    if not math.isclose(values[np.float32], values[np.float64], rel_tol=1e-4, abs_tol=1e-6):
        _fail(what, f"float32 and float64 values differ: {values[np.float32]} vs "
                    f"{values[np.float64]}")
    done.append("value is a finite float in float32 and float64")
    if reference is not None:
        expected = float(reference(pred.copy(), target.copy(), **options))
        if not math.isclose(values[np.float64], expected, rel_tol=1e-10, abs_tol=1e-12):
            _fail(what, f"value {values[np.float64]!r} differs from the reference {expected!r}")
        done.append("value matches the reference")
    done.append("gradient has the predictions' shape and dtype")
    try:
        gradient_check(factory(**options), pred, target)
    except AssertionError as exc:
        _fail(what, f"gradient check: {exc}")
    done.append("gradient matches float64 central differences")
    activate = getattr(loss, "activate", None)
    if activate is not None and activate(pred).shape != pred.shape:
        _fail(what, "activate must keep the outputs' shape")
    return done


# -- datasets ------------------------------------------------------------------------------------

def check_dataset(name, *, options=None, host=None) -> list[str]:
    """Check the dataset registered as ``name`` (loaded with ``options``)."""
    from zoo.data.dataset import Dataset
    from zoo.data.spec import KINDS, TASKS

    host = _host(host)
    info = host.datasets.get(name)
    options = dict(options or {})
    what = f"dataset {name}"
    if info.task not in TASKS or info.kind not in KINDS:
        _fail(what, f"task must be one of {TASKS} and kind one of {KINDS}; received "
                    f"{info.task!r}, {info.kind!r}")
    data = info.load(3, **options)
    if not isinstance(data, Dataset):
        _fail(what, f"load must return a zoo Dataset; received {type(data).__name__}")
    spec = data.spec
    for split, x, y in (("train", data.x_train, data.y_train),
                        ("test", data.x_test, data.y_test)):
        if x.shape[1:] != tuple(spec.input_shape) or len(x) == 0:
            _fail(what, f"x_{split} has shape {x.shape}; expected (N > 0, "
                        f"{', '.join(map(str, spec.input_shape))})")
        if y is not None and len(y) != len(x):
            _fail(what, f"y_{split} has {len(y)} entries for {len(x)} examples")
        if data.task == "classify" and y is not None and (y.min() < 0 or
                                                          y.max() >= spec.num_classes):
            _fail(what, f"y_{split} labels must be in [0, {spec.num_classes})")
    if (data.task, data.kind) != (info.task, info.kind):
        _fail(what, f"registered as {info.task}/{info.kind}; loaded {data.task}/{data.kind}")
    done = ["shapes, task and kind as declared"]
    again = info.load(3, **options)
    if not all(np.array_equal(a, b) for a, b in ((data.x_train, again.x_train),
                                                  (data.x_test, again.x_test))):
        _fail(what, "the same seed must give the same data")
    done.append("deterministic for a seed")
    params = list(inspect.signature(info.load).parameters.values())[1:]
    for p in params:
        if p.default is p.empty or p.name in options or p.kind is p.VAR_KEYWORD:
            continue
        explicit = info.load(3, **options, **{p.name: p.default})
        if not np.array_equal(explicit.x_train, data.x_train):
            _fail(what, f"option {p.name}={p.default!r} (its default) changes the data")
    if params:
        done.append("options: each default given explicitly gives the default data")
    return done


# -- stopping criteria ---------------------------------------------------------------------------

def _epochs(count: int, seed: int = 0):
    from zoo.training.state import TrainState

    rng = np.random.default_rng(seed)
    loss = 1.0
    for epoch in range(1, count + 1):
        loss *= float(rng.uniform(0.8, 1.1))
        metrics = {"train_loss": loss, "train_accuracy": 1 - loss / 2, "val_loss": loss * 1.1,
                   "val_accuracy": 1 - loss / 2}
        yield TrainState("epoch", epoch, epoch * 10, epoch * 0.5, loss, metrics)


def check_criterion(spec: str, *, host=None, epochs: int = 12) -> list[str]:
    """Check a stopping criterion built from the ``--stop`` ``spec`` (e.g. ``"max_loss=10"``)."""
    from zoo.training.stopspec import parse_stop

    host = _host(host)
    what = f"criterion {spec}"
    criterion = parse_stop(spec, host.criteria)
    again = parse_stop(repr(criterion), host.criteria)
    if repr(again) != repr(criterion):
        _fail(what, f"repr {criterion!r} parses back to {again!r}")
    done = ["repr is a spec that parses back"]
    metrics = ["train_loss", "train_accuracy", "val_loss", "val_accuracy"]
    original, copy = parse_stop(spec, host.criteria), parse_stop(spec, host.criteria)
    for c in (original, copy):
        c.reset()
        c.prepare(metrics)
    states = list(_epochs(epochs))
    half = epochs // 2
    for state in states[:half]:
        if original.checks_at(state.at):
            original.update(state)
    saved = json.loads(json.dumps(original.state_dict()))
    copy.load_state_dict(saved)
    copy.load_arrays({k: np.array(v) for k, v in original.arrays().items()})
    for state in states[half:]:
        for c in (original, copy):
            if c.checks_at(state.at):
                c.update(state)
        if (original.stop, original.reason) != (copy.stop, copy.reason):
            _fail(what, f"restored from state_dict() at epoch {half}, it decided "
                        f"{copy.stop} ({copy.reason}) at epoch {state.epoch}; the original "
                        f"{original.stop} ({original.reason})")
    done.append("state_dict round trip decides as the original")
    return done


# -- schedules -----------------------------------------------------------------------------------

def check_schedule(spec: str, *, host=None, steps_per_epoch: int = 5,
                   epochs: int = 8) -> list[str]:
    """Check a schedule built from the ``--schedule`` ``spec``."""
    from zoo.spec import SCHEDULE, parse_spec

    host = _host(host)
    what = f"schedule {spec}"

    def build(text):
        return parse_spec(text, host.schedules, SCHEDULE).build(SCHEDULE, text)

    schedule = build(spec)
    if getattr(schedule, "per", None) not in ("step", "epoch"):
        _fail(what, f"per must be 'step' or 'epoch'; received {getattr(schedule, 'per', None)!r}")
    again = build(repr(schedule))
    if repr(again) != repr(schedule):
        _fail(what, f"repr {schedule!r} parses back to {again!r}")
    done = ["repr is a spec that parses back"]
    metrics = ["train_loss", "train_accuracy", "val_loss", "val_accuracy"]
    epoch_metrics = [s.metrics for s in _epochs(epochs)]

    def rates(s, first_epoch=0, restore=None):
        s.start(steps_per_epoch, epochs)
        s.resolve(metrics)
        if restore is not None:
            s.load_state_dict(restore)
        out = []
        for epoch in range(first_epoch, epochs):
            for k in range(epoch * steps_per_epoch + 1, (epoch + 1) * steps_per_epoch + 1):
                out.append(s.lr(0.1, k, epoch))
            s.update(epoch + 1, epoch_metrics[epoch], 0.1)
        return out

    full = rates(build(spec))
    if not all(isinstance(r, float) and math.isfinite(r) and r >= 0 for r in full):
        _fail(what, "every rate must be a finite float >= 0")
    if schedule.per == "epoch":
        for e in range(epochs):
            chunk = full[e * steps_per_epoch:(e + 1) * steps_per_epoch]
            if len(set(chunk)) != 1:
                _fail(what, f"declares per='epoch' but changes the rate within epoch {e}")
    done.append("finite rates, changing only as it declares")
    half = epochs // 2
    first = build(spec)
    first.start(steps_per_epoch, epochs)
    first.resolve(metrics)
    for epoch in range(half):
        first.update(epoch + 1, epoch_metrics[epoch], 0.1)
    saved = json.loads(json.dumps(first.state_dict()))
    rates_partial = rates(build(spec), first_epoch=half, restore=saved)
    rates_first = full[half * steps_per_epoch:]
    if rates_partial != rates_first:
        _fail(what, f"restored from state_dict() at epoch {half} it gives other rates")
    done.append("state_dict round trip (through JSON) continues with the same rates")
    return done


# -- metrics -------------------------------------------------------------------------------------

def check_metric(name, *, host=None) -> list[str]:
    """Check the metric registered as ``name`` on tiny data of each task it names."""
    host = _host(host)
    metric = host.metrics.get(name)
    what = f"metric {name}"
    rng = np.random.default_rng(2)
    for task in metric.tasks:
        outputs = rng.standard_normal((20, 7))
        target = rng.integers(0, 7, size=20) if task == "classify" else \
            rng.standard_normal((20, 7))
        value = metric.compute(outputs, target, None)
        if value is not None and not (isinstance(value, (float, np.floating))
                                      and math.isfinite(value)):
            _fail(what, f"compute must return a finite float or None on {task} data; "
                        f"received {value!r}")
    return [f"finite on {', '.join(metric.tasks)} data"]
