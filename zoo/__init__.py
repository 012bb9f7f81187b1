"""zoo: a plugin-based zoo of neural-network architectures on numpy and numba.

Importing ``zoo`` is cheap: numba is only imported when the first kernel runs,
so ``zoo --help`` and ``zoo list`` stay fast. The Python API (docs/python-api.md) is here::

    from zoo import Sequential
    from zoo.layers import Dense, ReLU
    model = Sequential([Dense(64), ReLU(), Dense(3)])
    model.fit(x, y, epochs=20)

``zoo.fit``, ``zoo.load``, ``zoo.register_architecture`` and ``zoo.Sequential`` are imported on
first use.
"""

__version__ = "0.1.0"

# The plugin API version. A plugin may declare the version it needs with a
# module-level ``ZOO_API = "1"``; an incompatible one is refused when loaded.
API_VERSION = "1"

_LAZY = {"fit": "zoo.api", "load": "zoo.api", "register_architecture": "zoo.api",
         "Fitted": "zoo.api", "Sequential": "zoo.model"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
