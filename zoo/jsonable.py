"""One way to turn zoo's values into plain JSON: the run store, checkpoints, ``--json`` output,
compare results and the conformance kit all use ``jsonable``.
"""

from __future__ import annotations

import math

import numpy as np


def jsonable(value, *, keep_nonfinite: bool = False):
    """``value`` with every part made of plain JSON types.

    Dicts get string keys, tuples and numpy arrays become lists, numpy scalars Python numbers.
    NaN and +-Inf become ``None`` (JSON has no such numbers and ``json.dumps`` would write the
    invalid ``NaN``), unless ``keep_nonfinite=True`` for a reader that is Python's own ``json``.
    Anything else is returned as it is, so ``json.dumps`` still refuses what JSON cannot hold.
    """
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): jsonable(v, keep_nonfinite=keep_nonfinite)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, keep_nonfinite=keep_nonfinite) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return jsonable(value.tolist(), keep_nonfinite=keep_nonfinite)
    if isinstance(value, float) and not keep_nonfinite and not math.isfinite(value):
        return None
    return value
