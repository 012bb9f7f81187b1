"""zoo.checks: every argument check returns plain values or raises one line of one shape."""

import numpy as np
import pytest

from zoo import checks
from zoo.errors import ConfigError


@pytest.mark.parametrize("call,result", [
    (lambda: checks.integer("L", "n", np.int64(3), minimum=1), 3),
    (lambda: checks.positive_int(None, "n", 7), 7),
    (lambda: checks.number("L", "x", np.float32(0.5), minimum=0, maximum=1), 0.5),
    (lambda: checks.fraction("L", "rate", 0), 0.0),
    (lambda: checks.fraction("L", "momentum", 1, allow_one=True), 1.0),
    (lambda: checks.positive_number("L", "lr", 1e-3), 1e-3),
    (lambda: checks.int_tuple("L", "k", 3, 2), (3, 3)),
    (lambda: checks.int_tuple("L", "pad", [0, 1], 2, minimum=0), (0, 1)),
    (lambda: checks.boolean("L", "flag", np.bool_(True)), True),
    (lambda: checks.one_of("L", "mode", "max", ("min", "max")), "max"),
])
def test_good_values_come_back_as_plain_python(call, result):
    value = call()
    assert value == result and type(value) is type(result)


@pytest.mark.parametrize("call,message", [
    (lambda: checks.positive_int("Dense", "units", 0),
     "Dense: units must be a positive integer; received units=0"),
    (lambda: checks.integer("L", "n", 2.0, minimum=1),
     "L: n must be a positive integer; received n=2.0"),
    (lambda: checks.integer(None, "seed", True, minimum=0),
     "seed must be an integer >= 0; received seed=True"),
    (lambda: checks.integer("L", "n", 9, minimum=1, maximum=8),
     "L: n must be an integer in [1, 8]; received n=9"),
    (lambda: checks.number("L", "x", float("nan")), "L: x must be a finite number; received x=nan"),
    (lambda: checks.number("L", "x", -1, minimum=0), "L: x must be a finite number >= 0"),
    (lambda: checks.fraction("Dropout", "rate", 1.0),
     "Dropout: rate must be in [0, 1); received rate=1.0"),
    (lambda: checks.positive_number(None, "lr", 0),
     "lr must be a positive finite number; received lr=0"),
    (lambda: checks.number(None, "f", 1, minimum=0, maximum=1, exclusive_minimum=True,
                           exclusive_maximum=True), "f must be in (0, 1); received f=1"),
    (lambda: checks.int_tuple("Conv2D", "stride", (1, 0), 2),
     "Conv2D: stride must be a positive integer or a tuple of 2 such integers"),
    (lambda: checks.boolean("Dense", "use_bias", "yes"),
     "Dense: use_bias must be True or False; received use_bias='yes'"),
    (lambda: checks.one_of(None, "task", "sort", ("classify", "regress")),
     "task must be one of classify, regress; received task='sort'"),
])
def test_bad_values_get_one_line_naming_expected_and_received(call, message):
    with pytest.raises(ConfigError) as info:
        call()
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
