"""Argument checks: one module, one message shape.

Every constructor and option that takes a user's value checks it here, so a bad value always
gets the same single line::

    Dense: units must be a positive integer; received units=0

``owner`` names what takes the argument (a layer, an optimizer, a dataset, an architecture);
without one the line starts with the argument's name. Each check returns the value converted
to the plain Python type (``int``, ``float``, ``bool``), never a numpy scalar.
"""

from __future__ import annotations

import math
import numbers
import sys

from zoo.errors import ConfigError

__all__ = ["boolean", "describe_range", "fail", "fraction", "in_range", "int_tuple", "integer",
           "number", "one_of", "positive_int", "positive_number"]


def fail(owner: str | None, name: str, value, expected: str) -> ConfigError:
    """The error for ``name=value`` when ``expected`` was expected (raise it)."""
    prefix = f"{owner}: " if owner else ""
    return ConfigError(f"{prefix}{name} must be {expected}; received {name}={value!r}")


def describe_range(kind: str, minimum=None, maximum=None, *, exclusive_maximum: bool = False,
                   exclusive_minimum: bool = False, plural: bool = False) -> str:
    """``"a positive integer"``, ``"in [0, 1)"``, ``"a finite number >= 0"``...

    ``kind`` is ``"integer"`` or ``"number"``; ``plural`` for lists (``"positive integers"``).
    """
    noun = kind + ("s" if plural else "")
    if minimum is not None and maximum is not None:
        span = (f"in {'(' if exclusive_minimum else '['}{minimum:g}, "
                f"{maximum:g}{')' if exclusive_maximum else ']'}")
        if kind == "number" and not plural:
            return span
        phrase = f"{noun} {span}"
    elif maximum is None and (kind, minimum, exclusive_minimum) in (("integer", 1, False),
                                                                     ("number", 0, True)):
        phrase = f"positive {'finite ' if kind == 'number' else ''}{noun}"
    else:
        phrase = ("finite " if kind == "number" else "") + noun
        if maximum is not None:
            phrase += f" {'<' if exclusive_maximum else '<='} {maximum:g}"
        elif minimum is not None:
            phrase += f" {'>' if exclusive_minimum else '>='} {minimum:g}"
    if plural:
        return phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def in_range(value: float, minimum=None, maximum=None, exclusive_maximum: bool = False) -> bool:
    """``minimum <= value <= maximum`` (``< maximum`` if exclusive); ``None`` is no bound."""
    if minimum is not None and value < minimum:
        return False
    if maximum is not None and (value >= maximum if exclusive_maximum else value > maximum):
        return False
    return True


def integer(owner: str | None, name: str, value, *, minimum=None, maximum=None) -> int:
    """An integer (numpy's too; not a bool, not a float) within the bounds, inclusive."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or not in_range(int(value), minimum, maximum, False):
        raise fail(owner, name, value, describe_range("integer", minimum, maximum))
    return int(value)


def positive_int(owner: str | None, name: str, value) -> int:
    """``integer(..., minimum=1)``: ``Dense: units must be a positive integer; ...``."""
    return integer(owner, name, value, minimum=1)


def fraction(owner: str | None, name: str, value, *, allow_one: bool = False) -> float:
    """A rate in [0, 1) (or [0, 1] with ``allow_one``), such as a dropout rate."""
    return number(owner, name, value, minimum=0, maximum=1, exclusive_maximum=not allow_one)


def positive_number(owner: str | None, name: str, value) -> float:
    """A finite number > 0, such as a learning rate or an epsilon."""
    return number(owner, name, value, minimum=0, exclusive_minimum=True)


def int_tuple(owner: str | None, name: str, value, rank: int, minimum: int = 1) -> tuple:
    """An int, or a sequence of ``rank`` ints, each >= ``minimum``, as a ``rank``-tuple
    (a layer's ``kernel_size=3`` or ``kernel_size=(3, 5)``)."""
    items = value if isinstance(value, (tuple, list)) else (value,) * rank
    ok = len(items) == rank and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= minimum
        for v in items)
    if not ok:
        expected = describe_range("integer", minimum)
        if rank > 1:
            expected += f" or a tuple of {rank} such integers"
        raise fail(owner, name, value, expected)
    return tuple(int(v) for v in items)


def number(owner: str | None, name: str, value, *, minimum=None, maximum=None,
           exclusive_minimum: bool = False, exclusive_maximum: bool = False) -> float:
    """A finite real number (not a bool) within the bounds."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) \
        and math.isfinite(value) and in_range(float(value), minimum, maximum, exclusive_maximum) \
        and not (exclusive_minimum and value == minimum)
    if not ok:
        raise fail(owner, name, value, describe_range("number", minimum, maximum,
                                                      exclusive_minimum=exclusive_minimum,
                                                      exclusive_maximum=exclusive_maximum))
    return float(value)


def boolean(owner: str | None, name: str, value) -> bool:
    """``True`` or ``False`` (numpy's ``bool_`` too); no other truthy values."""
    # numpy only if it is loaded (a numpy bool implies it is): option parsing imports this
    # module, and `zoo list` does not import numpy.
    np = sys.modules.get("numpy")
    if not isinstance(value, bool) and not (np is not None and isinstance(value, np.bool_)):
        raise fail(owner, name, value, "True or False")
    return bool(value)


def one_of(owner: str | None, name: str, value, choices):
    """``value`` if it is among ``choices``."""
    if value not in choices:
        raise fail(owner, name, value, "one of " + ", ".join(map(str, choices)))
    return value
