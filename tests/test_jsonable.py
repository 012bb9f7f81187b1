"""One converter to plain JSON for the run store, checkpoints, --json output and compare."""

import json
import math

import numpy as np

from zoo.jsonable import jsonable


def test_numpy_tuples_and_keys_become_plain_json():
    value = {"a": (1, np.float32(0.5)), 3: np.arange(3), "b": [np.int64(7), np.bool_(True)]}
    out = jsonable(value)
    assert out == {"a": [1, 0.5], "3": [0, 1, 2], "b": [7, True]}
    assert type(out["b"][0]) is int and type(out["a"][1]) is float
    assert json.loads(json.dumps(out)) == out


def test_nonfinite_numbers_become_null_unless_kept():
    value = {"loss": float("nan"), "best": np.float64("inf"), "curve": np.array([1.0, -np.inf])}
    assert jsonable(value) == {"loss": None, "best": None, "curve": [1.0, None]}
    kept = jsonable(value, keep_nonfinite=True)
    assert math.isnan(kept["loss"]) and kept["best"] == math.inf and kept["curve"][1] == -math.inf


def test_what_json_cannot_hold_is_left_for_json_to_refuse():
    marker = object()
    assert jsonable([marker])[0] is marker
