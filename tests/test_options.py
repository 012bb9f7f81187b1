"""Option ranges and choices are declared once and refused with one line."""

import math

import pytest

from zoo.architecture import Architecture, Option
from zoo.errors import ConfigError

DROPOUT = Option("dropout", float, 0.0, "rate", minimum=0, maximum=1, exclusive_maximum=True)
DEPTH = Option("depth", int, 2, "layers", minimum=1, maximum=8)
WIDTHS = Option("widths", "ints", (8,), "units", minimum=1, min_items=1, log=True)
LR = Option("lr", float, 1e-3, "learning rate", minimum=1e-6, maximum=1.0, log=True)


@pytest.mark.parametrize("option,value,parsed", [
    (DROPOUT, "0", 0.0), (DROPOUT, "0.99", 0.99), (DEPTH, "1", 1), (DEPTH, 8, 8),
    (WIDTHS, "4,16", (4, 16)), (LR, "1e-6", 1e-6), (LR, 1, 1.0),
])
def test_values_in_range_parse(option, value, parsed):
    assert option.parse(value) == parsed


@pytest.mark.parametrize("option,value,message", [
    (DROPOUT, "1", "option dropout must be in [0, 1); received dropout=1.0"),
    (DROPOUT, "-0.1", "option dropout must be in [0, 1); received dropout=-0.1"),
    (DROPOUT, "nan", "option dropout must be in [0, 1); received dropout=nan"),
    (DEPTH, "0", "option depth must be an integer in [1, 8]; received depth=0"),
    (DEPTH, "9", "option depth must be an integer in [1, 8]; received depth=9"),
    (WIDTHS, "", "option widths must be one or more positive integers; received widths=''"),
    (WIDTHS, "4,0", "option widths must be one or more positive integers; received widths='4,0'"),
    (Option("noise", float, 0.0, "sd", minimum=0), "inf",
     "option noise must be a finite number >= 0; received noise=inf"),
    (Option("size", int, 1, "n", minimum=1), "-3",
     "option size must be a positive integer; received size=-3"),
    (Option("pool", str, "max", "kind", ("max", "avg")), "min",
     "option pool must be one of max, avg; received pool='min'"),
])
def test_values_out_of_range_get_one_line(option, value, message):
    with pytest.raises(ConfigError) as info:
        option.parse(value)
    assert str(info.value) == message


def test_architecture_names_itself_in_option_errors():
    arch = Architecture("toy", "a toy", ("classify",), build=lambda spec, options: None,
                        options=(DEPTH, DROPOUT))
    with pytest.raises(ConfigError, match=r"^toy: option depth must be an integer in \[1, 8\]"):
        arch.resolve_options({"depth": "0"})
    assert arch.resolve_options({"dropout": "0.5"}) == {"depth": 2, "dropout": 0.5}


@pytest.mark.parametrize("kwargs,message", [
    ({"type": int, "default": 1, "log": True}, "log=True needs a minimum > 0"),
    ({"type": float, "default": 1.0, "minimum": 0, "log": True}, "log=True needs a minimum > 0"),
    ({"type": int, "default": 1, "minimum": 3, "maximum": 2}, "minimum 3 is above maximum 2"),
    ({"type": str, "default": "a", "minimum": 1}, "apply to int, float and \"ints\" options"),
])
def test_impossible_declarations_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Option("x", help="x", **kwargs)


def test_log_is_declared_for_search_and_changes_no_parsing():
    assert LR.log and WIDTHS.log and not DEPTH.log
    assert math.isclose(LR.parse("0.01"), 0.01)


def test_builtin_plugins_declare_their_ranges(fresh_host):
    host = fresh_host.get_host()
    cnn = host.architectures.get("cnn")
    assert cnn.option("dropout").expected() == "in [0, 1)"
    assert cnn.option("channels").min_items == 1
    for name in ("mlp", "cnn", "rnn", "lstm", "gru", "autoencoder"):
        for option in host.architectures.get(name).options:
            if option.type in (int, float, "ints") and option.name != "kernel_size":
                assert option.minimum is not None, f"{name}.{option.name} has no minimum"
