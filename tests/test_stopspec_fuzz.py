"""Property tests of the ``--stop`` parser, an input zoo reads from users and checkpoints.

Whatever the text, ``parse_stop`` returns a criterion or raises one one-line ``ConfigError``;
never another exception (no RecursionError, IndexError, TypeError...). Specs built from the
grammar parse back from their ``repr``; nesting beyond ``MAX_DEPTH`` is refused by name.

Settings: ``derandomize=True`` (the same examples on every run, so CI cannot flake on a new
one), 400 examples per property, no per-example deadline (a loaded machine must not fail a
test); the inputs are bounded (at most 400 characters, nesting at most 40), so each parse is
small by construction.
"""

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zoo.errors import ConfigError
from zoo.plugins.builtin.criteria import BUILTIN_CRITERIA
from zoo.training.stopspec import MAX_DEPTH, parse_stop

REGISTRY = {c.name: c for c in BUILTIN_CRITERIA}
SETTINGS = settings(max_examples=400, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

WORDS = [*REGISTRY, "all_of", "any_of", "epochs", "monitor", "patience", "val_loss", "max",
         "true", "None", "1e309", "-0", "nan", "inf", "2h", "00:10"]
TOKENS = st.one_of(st.sampled_from(WORDS), st.sampled_from(list("()=,'\" \t\n")),
                   st.text(string.printable, max_size=6), st.integers(-10**30, 10**30).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr))


def outcome(spec):
    """The criterion, or the ConfigError's message; any other exception fails the test."""
    try:
        return parse_stop(spec, REGISTRY)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith("--stop "), message
        return message


@SETTINGS
@given(st.lists(TOKENS, max_size=60).map("".join).filter(lambda s: len(s) <= 400))
def test_any_token_soup_gives_a_criterion_or_one_config_error(spec):
    outcome(spec)


@SETTINGS
@given(st.text(max_size=200))
def test_any_unicode_text_gives_a_criterion_or_one_config_error(spec):
    outcome(spec)


LEAVES = st.sampled_from(["max_epochs=3", "max_steps(10)", "loss_below(0.5)", "non_finite",
                          "target(val_accuracy, 0.9)", "early_stopping(patience=2)",
                          "max_time=1h"])


def nest(depth_and_leaves):
    depth, leaves, composites = depth_and_leaves
    spec = ", ".join(leaves)
    for i in range(depth):
        spec = f"{composites[i % len(composites)]}({spec})"
    return depth, spec


@SETTINGS
@given(st.tuples(st.integers(1, 40), st.lists(LEAVES, min_size=1, max_size=3),
                 st.lists(st.sampled_from(["all_of", "any_of"]), min_size=1, max_size=3))
       .map(nest))
def test_grammar_specs_round_trip_or_are_refused_for_depth(depth_and_spec):
    depth, spec = depth_and_spec
    result = outcome(spec)
    if depth > MAX_DEPTH:
        assert isinstance(result, str) and f"nest more than {MAX_DEPTH} levels" in result
        return
    assert not isinstance(result, str), result
    assert repr(parse_stop(repr(result), REGISTRY)) == repr(result)
