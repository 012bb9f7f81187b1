"""zoo: a plugin-based zoo of neural-network architectures on numpy and numba.

Importing ``zoo`` is cheap: numba is only imported when the first kernel runs,
so ``zoo --help`` and ``zoo list`` stay fast.
"""

__version__ = "0.1.0"

# The plugin API version. A plugin may declare the version it needs with a
# module-level ``ZOO_API = "1"``; an incompatible one is refused when loaded.
API_VERSION = "1"
