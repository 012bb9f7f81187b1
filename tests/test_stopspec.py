"""The ``--stop`` grammar: valid specs, values, composition, and one-line errors."""

import pytest

from zoo.errors import ConfigError
from zoo.plugins.builtin.criteria import BUILTIN_CRITERIA
from zoo.training.stopping import AllOf, AnyOf, Criterion, EarlyStopping, MaxEpochs
from zoo.training.stopspec import format_value, parse_stop, parse_stops

REGISTRY = {c.name: c for c in BUILTIN_CRITERIA}


class Probe(Criterion):
    """Records the values it was given."""

    name = "probe"

    def __init__(self, a=None, b=None, c=None):
        super().__init__()
        self.a, self.b, self.c = a, b, c

    def update(self, state):
        pass


class Loose(Criterion):
    """A third-party factory taking keyword-only and arbitrary keyword arguments."""

    name = "loose"

    def __init__(self, first=1, *, only=2, **extra):
        super().__init__()
        self.first, self.only, self.extra = first, only, extra

    def update(self, state):
        pass


PROBES = {"probe": Probe, "loose": Loose, **REGISTRY}


@pytest.mark.parametrize("spec, expected", [
    ("max_epochs=50", "max_epochs(epochs=50)"),
    ("  max_epochs = 50  ", "max_epochs(epochs=50)"),
    ("max_epochs(50)", "max_epochs(epochs=50)"),
    ("max_epochs(epochs=50)", "max_epochs(epochs=50)"),
    ("early_stopping", "early_stopping(monitor=val_loss)"),
    ("early_stopping()", "early_stopping(monitor=val_loss)"),
    ("early_stopping(monitor=val_loss,patience=5)", "early_stopping(monitor=val_loss)"),
    ("early_stopping(val_accuracy, max, 0.001, 10, restore_best=false)",
     ("early_stopping(monitor=val_accuracy, mode=max, min_delta=0.001, patience=10, "
     "restore_best=false)")),
    ("early_stopping(monitor='val_loss', baseline=0.5, start_from_epoch=3,)",
     "early_stopping(monitor=val_loss, baseline=0.5, start_from_epoch=3)"),
    ("loss_below(0.01)", "loss_below(threshold=0.01)"),
    ("loss_below=1e-3", "loss_below(threshold=0.001)"),
    ("loss_below(threshold=-0.5, every=step)", "loss_below(threshold=-0.5, every=step)"),
    ("loss_delta_below(1e-4, 3)", "loss_delta_below(tol=0.0001, patience=3)"),
    ("max_time=2h", "max_time(seconds=7200.0)"),
    ("max_time(00:00:10:00)", "max_time(seconds=600.0)"),
    ("max_steps=1000", "max_steps(steps=1000)"),
    ("target(val_accuracy, 0.95)", "target(monitor=val_accuracy, value=0.95)"),
    ("target(monitor=val_mse, value=.5, mode=min)", "target(monitor=val_mse, value=0.5, mode=min)"),
    ("non_finite", "non_finite()"),
    ("all_of(loss_below(0.1), max_epochs(5))",
     "all_of(loss_below(threshold=0.1), max_epochs(epochs=5))"),
    ("any_of(max_epochs=3, target(val_accuracy, 0.9), non_finite)",
     "any_of(max_epochs(epochs=3), target(monitor=val_accuracy, value=0.9), non_finite())"),
    ("any_of(all_of(max_epochs=2, loss_below=0.5), max_epochs(4))",
     "any_of(all_of(max_epochs(epochs=2), loss_below(threshold=0.5)), max_epochs(epochs=4))"),
])
def test_valid_specs(spec, expected):
    criterion = parse_stop(spec, REGISTRY)
    assert repr(criterion) == expected
    # The repr is itself a spec for the same criterion.
    again = parse_stop(expected, REGISTRY)
    assert repr(again) == expected and again.get_config() == criterion.get_config()


def test_specs_build_working_criteria():
    es = parse_stop("early_stopping(monitor=val_accuracy,patience=2,min_delta=0.01)", REGISTRY)
    assert isinstance(es, EarlyStopping)
    assert (es.monitor, es.patience, es.min_delta, es.restore_best) == \
        ("val_accuracy", 2, 0.01, True)
    both = parse_stop("all_of(loss_below(0.1), max_epochs(5))", REGISTRY)
    assert isinstance(both, AllOf) and isinstance(both.criteria[1], MaxEpochs)
    assert isinstance(parse_stop("any_of(max_epochs)", {"max_epochs": lambda epochs=3:
                                                        MaxEpochs(epochs)}), AnyOf)


@pytest.mark.parametrize("text, value", [
    ("5", 5), ("-5", -5), ("+5", 5), ("2.5", 2.5), ("-.5", -0.5), ("1.", 1.0), ("1e-3", 0.001),
    ("2E+2", 200.0), ("true", True), ("False", False), ("TRUE", True), ("None", None),
    ("none", None), ("null", None), ("val_loss", "val_loss"), ("1e", "1e"), ("1.2.3", "1.2.3"),
    ("'true'", "true"), ('"5"', "5"), ("'with space, comma = (x)'", "with space, comma = (x)"),
    ("''", ""), ("inf", "inf"), ("nan", "nan"), ("1_000", "1_000"),
])
def test_values(text, value):
    probe = parse_stop(f"probe(a={text})", PROBES)
    assert probe.a == value and type(probe.a) is type(value)


def test_positional_then_keyword_and_keyword_only_parameters():
    probe = parse_stop("probe(1, two, c=3)", PROBES)
    assert (probe.a, probe.b, probe.c) == (1, "two", 3)
    loose = parse_stop("loose(5, only=6, anything=x)", PROBES)
    assert (loose.first, loose.only, loose.extra) == (5, 6, {"anything": "x"})
    with pytest.raises(ConfigError, match=r"loose takes at most 1 positional argument \(first\)"):
        parse_stop("loose(5, 6)", PROBES)


@pytest.mark.parametrize("value", [
    0, 12, -3, 0.1, 1e-05, 2.5e20, True, False, None, "val_loss", "true", "None", "12",
    "has space", "a,b", "it's", "", "1e-3",
])
def test_format_value_round_trips(value):
    probe = parse_stop(f"probe(a={format_value(value)})", PROBES)
    assert probe.a == value and type(probe.a) is type(value)


def _msg(spec, message):
    return f"--stop {spec!r}: {message}"


ALL = ", ".join(sorted(REGISTRY))
ES_PARAMS = "monitor, mode, min_delta, patience, baseline, start_from_epoch, restore_best"

MALFORMED = [
    ("", "expected a stopping criterion such as max_epochs=50 or early_stopping(patience=5)"),
    ("   ", "expected a stopping criterion such as max_epochs=50 or early_stopping(patience=5)"),
    ("early_stopping(patience=)", "expected a value after 'patience='"),
    ("max_epochs=", "expected a value after 'max_epochs='"),
    ("max_epochs=,", "expected a value after 'max_epochs='"),
    ("max_epochs==5", "expected a value after 'max_epochs=', found '='"),
    ("early_stopping(patience=5", "expected ')' to close 'early_stopping('"),
    ("early_stopping(", "expected ')' to close 'early_stopping('"),
    ("early_stopping(patience=5,", "expected ')' to close 'early_stopping('"),
    ("early_stopping(patience 5)", "expected ',' or ')' after 'patience', found '5'"),
    ("early_stopping(patience=5 monitor=val_loss)",
     "expected ',' or ')' after 'patience=5', found 'monitor'"),
    ("early_stopping(,)", "expected a value after 'early_stopping('"),
    ("early_stopping(patience=5,,)", "expected a value after 'early_stopping(patience=5,'"),
    ("early_stopping(=5)", "expected a value after 'early_stopping(', found '='"),
    ("early_stopping(2x=5)", "expected a parameter name before '=', found '2x'"),
    ("max_epochs(5))", "unexpected ')' after 'max_epochs(5)'"),
    ("max_epochs=5 max_steps=3", "unexpected 'max_steps' after 'max_epochs=5'"),
    ("max_epochs(5) junk", "unexpected 'junk' after 'max_epochs(5)'"),
    ("(5)", "expected a criterion name, found '('"),
    ("5", "expected a criterion name, found '5'"),
    ("'max_epochs'", "expected a criterion name, found 'max_epochs'"),
    ("max-epochs=5", "expected a criterion name, found 'max-epochs'"),
    ("=5", "expected a criterion name, found '='"),
    ("loss_below(\"0.1)", "unterminated string '\"0.1)': expected a closing \""),
    ("early_stop", (f"unknown stopping criterion 'early_stop' (did you mean 'early_stopping'?); "
                   f"installed: {ALL}")),
    ("zzz(1)", f"unknown stopping criterion 'zzz'; installed: {ALL}"),
    ("early_stopping(patients=5)", (f"early_stopping has no parameter 'patients'; accepted: "
                                   f"{ES_PARAMS} (did you mean 'patience'?)")),
    ("max_epochs(n=5)", "max_epochs has no parameter 'n'; accepted: epochs"),
    ("max_epochs(5, 6)", "max_epochs takes at most 1 positional argument (epochs); received 2"),
    ("non_finite=1", "non_finite takes no parameters; write --stop non_finite"),
    ("non_finite(1)", "non_finite takes at most 0 positional arguments (none); received 1"),
    ("loss_below(threshold=1, 2)", ("loss_below: positional argument '2' follows keyword "
                                   "arguments")),
    ("loss_below(0.1, threshold=0.2)", "loss_below: threshold is given more than once"),
    ("target(val_accuracy)", ("target: missing required parameter value; target takes monitor, "
                             "value, mode")),
    ("max_epochs", "max_epochs: missing required parameter epochs; max_epochs takes epochs"),
    ("max_epochs(max_steps(5))", ("max_epochs: max_steps(...) is a criterion; criteria combine "
                                 "only inside all_of(...) or any_of(...)")),
    ("max_epochs=0", "max_epochs: epochs must be a positive integer; received epochs=0"),
    ("max_epochs=five", "max_epochs: epochs must be a positive integer; received epochs='five'"),
    ("max_epochs='5'", "max_epochs: epochs must be a positive integer; received epochs='5'"),
    ("early_stopping(mode=up)", ("early_stopping: mode must be one of 'auto', 'min', 'max'; "
                                "received mode='up'")),
    ("early_stopping(restore_best=yes)", ("early_stopping: restore_best must be true or false; "
                                         "received restore_best='yes'")),
    ("max_time=soon", ("max_time: seconds must be a positive number of seconds, '30m', '2h' or "
                      "'DD:HH:MM:SS'; received seconds='soon'")),
    ("all_of()", ("all_of() needs at least one criterion, e.g. all_of(loss_below(0.1), "
                 "max_epochs=5)")),
    ("all_of", ("all_of combines criteria in parentheses, e.g. all_of(loss_below(0.1), "
               "max_epochs=5)")),
    ("any_of=5", ("any_of combines criteria in parentheses, e.g. any_of(loss_below(0.1), "
                 "max_epochs=5)")),
    ("all_of(5)", "expected a criterion inside all_of/any_of, found '5'"),
    ("all_of('max_epochs')", "expected a criterion inside all_of/any_of, found 'max_epochs'"),
    ("all_of(x=max_epochs(5))", "expected a value after 'x=', found a criterion max_epochs(...)"),
    ("all_of(max_epochs(5), bogus)", f"unknown stopping criterion 'bogus'; installed: {ALL}"),
    ("all_of(max_epochs(5), loss_below(0.1)", "expected ')' to close 'all_of('"),
]


@pytest.mark.parametrize("spec, message", MALFORMED, ids=[s or "empty" for s, _ in MALFORMED])
def test_malformed_specs_give_one_clear_line(spec, message):
    with pytest.raises(ConfigError) as info:
        parse_stop(spec, REGISTRY)
    assert str(info.value) == _msg(spec, message)
    assert "\n" not in str(info.value)


def test_unknown_names_with_the_plugin_registry():
    from zoo.plugins import PluginHost

    host = PluginHost(load=[])
    assert repr(parse_stop("max_epochs=3", host.criteria)) == "max_epochs(epochs=3)"
    with pytest.raises(ConfigError, match=r"unknown stopping criterion 'max_epoch' \(did you "
                                          r"mean 'max_epochs'\?\); installed: early_stopping,"):
        parse_stop("max_epoch=3", host.criteria)


def test_default_registry_is_the_installed_plugins(fresh_host):
    assert isinstance(parse_stop("early_stopping(patience=3)"), EarlyStopping)


def test_factory_errors_become_spec_errors():
    def needs_int(n):
        return MaxEpochs(int(n))

    def not_a_criterion(n=1):
        return n

    def broken(n=1):
        raise TypeError("n is not right")

    registry = {"needs_int": needs_int, "odd": not_a_criterion, "broken": broken}
    with pytest.raises(ConfigError, match=r"--stop 'needs_int=x': needs_int: invalid literal"):
        parse_stop("needs_int=x", registry)
    with pytest.raises(ConfigError, match=r"odd: its factory returned int, not a stopping "):
        parse_stop("odd", registry)
    with pytest.raises(ConfigError, match=r"--stop 'broken': broken: n is not right"):
        parse_stop("broken", registry)


def test_parse_stop_wants_a_string_and_parse_stops_takes_several():
    with pytest.raises(ConfigError, match="--stop expects a spec string such as max_epochs=50; "
                                          "received int 5"):
        parse_stop(5, REGISTRY)
    assert [c.name for c in parse_stops(["max_epochs=5", "non_finite"], REGISTRY)] == \
        ["max_epochs", "non_finite"]


def test_parsing_never_evaluates():
    with pytest.raises(ConfigError):
        parse_stop("probe(a=__import__('os').system('false'))", PROBES)
    assert parse_stop("probe(a='__import__')", PROBES).a == "__import__"
