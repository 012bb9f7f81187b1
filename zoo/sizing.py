"""How large a model zoo builds: parameters are counted before they are allocated.

A model is described by options (``-o hidden=1000000000000``) or by a checkpoint's metadata,
both of which a user, or a file, can make absurd. While a model is built inside
``parameter_budget``, every initialiser (``zoo.initializers``) asks ``reserve`` before it
allocates an array, and every parameter and buffer a layer adds is counted by ``charge``; the
first array that would take the model past the limit is refused with one ``ConfigError``
naming its shape, the count and the bytes, before any memory is taken for it. So the memory a
refused build took is bounded by the limit, whatever the options said.

The limit is ``DEFAULT_MAX_PARAMS`` (100 million parameters: 400 MB of float32 weights, about
1.6 GB with gradients and Adam's two moments) unless ``ZOO_MAX_PARAMS`` sets another;
``ZOO_MAX_PARAMS=0`` lifts it. A checkpoint is loaded under a budget of the values its model
tensors hold: a model larger than its tensors cannot match them and is refused before it is
built. Budgets nest, and every open one holds.

Outside ``parameter_budget`` (library code building layers itself) nothing is limited.
"""

from __future__ import annotations

import contextlib
import math
import os
from contextvars import ContextVar
from dataclasses import dataclass

from zoo.errors import ConfigError

DEFAULT_MAX_PARAMS = 100_000_000
ENV_VAR = "ZOO_MAX_PARAMS"


@dataclass
class Budget:
    limit: int | None  # None: unlimited
    what: str
    hint: str
    used: int = 0
    outer: Budget | None = None  # a budget open around this one: both hold

    def chain(self) -> list[Budget]:
        """This budget and those around it, the tightest first."""
        budgets: list[Budget] = []
        budget: Budget | None = self
        while budget is not None:
            budgets.append(budget)
            budget = budget.outer
        return sorted(budgets, key=lambda b: float("inf") if b.limit is None else b.limit)


_ACTIVE: ContextVar[Budget | None] = ContextVar("zoo_parameter_budget", default=None)


def max_params() -> int | None:
    """The limit in force: ``$ZOO_MAX_PARAMS`` (0: none), else ``DEFAULT_MAX_PARAMS``."""
    text = os.environ.get(ENV_VAR, "").strip().replace("_", "")
    if not text:
        return DEFAULT_MAX_PARAMS
    if not text.isdigit():
        raise ConfigError(f"{ENV_VAR} must be a non-negative integer (0 lifts the limit); "
                          f"received {os.environ[ENV_VAR]!r}")
    return int(text) or None


@contextlib.contextmanager
def parameter_budget(what: str, limit: int | None | str = "env", hint: str | None = None):
    """Count the parameters built inside the block against ``limit`` (default: the env's)."""
    cap = max_params() if isinstance(limit, str) else limit
    budget = Budget(cap, what, hint or f"set {ENV_VAR} to raise the limit",
                    outer=_ACTIVE.get())
    token = _ACTIVE.set(budget)
    try:
        yield budget
    finally:
        _ACTIVE.reset(token)


def _size(shape) -> int:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(n, int) or hasattr(n, "__index__") for n in shape):
        raise ConfigError(f"an array shape must hold integers; received {shape}")
    return math.prod(int(n) for n in shape)


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if value < 1000:
            return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{value:,.1f} PB"


def reserve(shape, dtype=None) -> None:
    """Raise ``ConfigError`` if an array of ``shape`` would take the model past its budget
    (or past any budget open around it: a nested budget never loosens an outer one)."""
    active = _ACTIVE.get()
    if active is None:
        return
    size = _size(shape)
    for budget in active.chain():
        if budget.limit is None or budget.used + size <= budget.limit:
            continue
        import numpy as np

        itemsize = np.dtype(dtype if dtype is not None else np.float32).itemsize
        total = budget.used + size
        raise ConfigError(
            f"{budget.what} is too large: an array of shape {tuple(_shape(shape))} takes it to "
            f"{total:,} parameters ({_human_bytes(total * itemsize)} as "
            f"{np.dtype(dtype or np.float32).name}); the limit is {budget.limit:,} "
            f"({budget.hint})")


def charge(shape, dtype=None) -> None:
    """Count an array a layer adds (after ``reserve``, or for one it allocated itself)."""
    active = _ACTIVE.get()
    if active is None:
        return
    reserve(shape, dtype)
    for budget in active.chain():
        budget.used += _size(shape)


def _shape(shape) -> tuple:
    return (shape,) if isinstance(shape, int) else tuple(int(n) for n in shape)
