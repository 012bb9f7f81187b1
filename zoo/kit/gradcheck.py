"""Float64 finite-difference gradient checks for layers and losses.

Used by zoo's own tests and by ``zoo.testing`` for plugin authors. A layer is checked through
the scalar ``f = sum(forward(x) * r)`` for a fixed random ``r``: its analytic gradients with
respect to the input and every parameter are compared with central differences.
"""

from __future__ import annotations

import numpy as np


def _numeric_grad(f, array: np.ndarray, eps: float, max_entries: int, rng) -> tuple:
    """Central differences of scalar ``f()`` w.r.t. (a sample of) entries of ``array``."""
    flat = array.reshape(-1)
    idx = np.arange(flat.size)
    if flat.size > max_entries:
        idx = np.sort(rng.choice(flat.size, max_entries, replace=False))
    grads = np.empty(len(idx))
    for j, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        grads[j] = (plus - minus) / (2 * eps)
    return idx, grads


def _compare(what: str, analytic: np.ndarray, idx, numeric, atol: float, rtol: float) -> None:
    got = analytic.reshape(-1)[idx]
    err = np.abs(got - numeric)
    bad = err > atol + rtol * np.abs(numeric)
    if bad.any():
        k = int(np.argmax(err - atol - rtol * np.abs(numeric)))
        raise AssertionError(
            f"gradient of {what} does not match finite differences at {int(bad.sum())} of "
            f"{len(idx)} entries; worst at flat index {int(idx[k])}: analytic {got[k]:.8g}, "
            f"numeric {numeric[k]:.8g}"
        )


def check_layer(layer, input_shape, *, batch: int = 3, seed: int = 0, training: bool = False,
                x: np.ndarray | None = None, eps: float = 1e-6, atol: float = 1e-6,
                rtol: float = 1e-5, max_entries: int = 200, check_input: bool = True,
                label: str | None = None) -> None:
    """Check a layer's input and parameter gradients in float64; raise AssertionError if off.

    ``layer`` must be unbuilt (it is built here in float64) or already built in float64.
    Layers that draw random numbers in training mode must be checked with ``training=False``
    or with their randomness made deterministic by the caller. Backward runs twice on the same
    input: the parameter gradients must come out the same (``backward`` overwrites
    ``Parameter.grad``; adding into it would pass a single run). Messages call the layer
    ``label`` (default: its class name) and name the inner layer owning a parameter.
    """
    rng = np.random.default_rng(seed)
    if not layer.built:
        layer.build(tuple(input_shape), rng, dtype=np.float64)
    if x is None:
        x = rng.standard_normal((batch, *input_shape))
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = layer.forward(x.copy(), training)
    r = rng.standard_normal(out.shape)

    def f():
        return float(np.sum(layer.forward(x.copy(), training) * r))

    label = label or type(layer).__name__
    owners = parameter_owners(layer)

    def what(name, param):
        owner = owners.get(id(param))
        inner = f" (in {owner!r})" if owner is not None and owner is not layer else ""
        return f"{label} parameter {name}{inner}"

    f()
    layer.forward(x.copy(), training)
    grad_x = layer.backward(r.copy())
    grad_x = grad_x.copy() if isinstance(grad_x, np.ndarray) else grad_x  # may be a buffer
    analytic = {name: p.grad.copy() for name, p in layer.named_parameters()}
    layer.forward(x.copy(), training)
    layer.backward(r.copy())
    for name, param in layer.named_parameters():
        if not np.allclose(param.grad, analytic[name], rtol=1e-9, atol=1e-12):
            raise AssertionError(
                f"gradient of {what(name, param)} changed when forward and backward ran again "
                "on the same input; backward must overwrite Parameter.grad (grad[...] = or "
                "out=), not add into it")
    if check_input:
        if grad_x.shape != x.shape:
            raise AssertionError(f"backward returned shape {grad_x.shape}; input was {x.shape}")
        idx, numeric = _numeric_grad(f, x, eps, max_entries, rng)
        _compare(f"{label} input", grad_x, idx, numeric, atol, rtol)
    for name, param in layer.named_parameters():
        idx, numeric = _numeric_grad(f, param.value, eps, max_entries, rng)
        _compare(what(name, param), analytic[name], idx, numeric, atol, rtol)


def parameter_owners(model) -> dict:
    """``id(parameter) -> the layer that created it`` for every layer inside ``model``."""
    from zoo.kit.conformance import iter_layers

    owners = {}
    for layer in iter_layers(model):
        for param in getattr(layer, "_params", {}).values():
            owners[id(param)] = layer
    return owners


def check_loss(loss, pred: np.ndarray, target, *, eps: float = 1e-6, atol: float = 1e-7,
               rtol: float = 1e-5, seed: int = 0) -> None:
    """Check ``loss.backward()`` against finite differences of ``loss.forward`` in float64."""
    pred = np.ascontiguousarray(pred, dtype=np.float64)
    loss.forward(pred.copy(), target)
    analytic = loss.backward().copy()
    if analytic.shape != pred.shape:
        raise AssertionError(f"loss gradient has shape {analytic.shape}; pred was {pred.shape}")
    idx, numeric = _numeric_grad(lambda: float(loss.forward(pred.copy(), target)), pred, eps,
                                 10_000, np.random.default_rng(seed))
    _compare(type(loss).__name__, analytic, idx, numeric, atol, rtol)
