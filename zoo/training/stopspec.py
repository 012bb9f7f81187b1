"""``--stop`` specs: stopping criteria written on the command line.

The grammar is the one of every spec (``zoo.spec``, one parser for all of them)::

    spec      := criterion
    criterion := NAME                       defaults:          early_stopping
               | NAME '=' value             first parameter:   max_epochs=50
               | NAME '(' [args] ')'        call:              early_stopping(patience=5)
    args      := arg (',' arg)* [',']       positional arguments come first
    arg       := value | NAME '=' value
    value     := number | true | false | None | bare word | 'quoted' | "quoted"

``all_of(...)`` and ``any_of(...)`` are grammar, not registered criteria: their arguments are
criteria in any of the three forms, e.g. ``all_of(loss_below(0.1), max_epochs=5)``. A bare
word is a string (``monitor=val_loss``); quote a string that would read as a number, a boolean
or None. ``repr()`` of every criterion is a spec that parses back to it.
"""

from __future__ import annotations

import re

from zoo.errors import ConfigError
from zoo.spec import CRITERION, MAX_DEPTH, Call, Parser, Value, format_value

__all__ = ["COMPOSITES", "MAX_DEPTH", "format_value", "parse_stop", "parse_stops"]

COMPOSITES = ("all_of", "any_of")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class _Parser(Parser):
    """The spec parser (``zoo.spec``) plus the ``all_of``/``any_of`` composites."""

    composite_names = COMPOSITES

    def __init__(self, spec: str):
        super().__init__(spec, CRITERION)

    def nested(self, node, value):
        self.fail(f"{node.name}: {value.name}(...) is a criterion; criteria combine only "
                  "inside all_of(...) or any_of(...)")

    # -- from syntax to criteria -------------------------------------------------------------
    def build(self, node, registry):
        if isinstance(node, Value):
            # A bare name inside all_of/any_of is a criterion with its defaults.
            if node.token.kind == "word" and isinstance(node.value, str) \
                    and _NAME.match(node.value):
                node = Call(node.value, node.token, "bare")
            else:
                self.fail(f"expected a criterion inside all_of/any_of, found {node.token.text!r}")
        if node.name in COMPOSITES:
            return self.build_composite(node, registry)
        factory = self.lookup(node.name, registry)
        kwargs = self.bind(node, factory)
        try:
            criterion = factory(**kwargs)
        except ConfigError as exc:
            self.fail(str(exc))
        except (TypeError, ValueError) as exc:
            self.fail(f"{node.name}: {exc}")
        if not (hasattr(criterion, "update") and hasattr(criterion, "reset")):
            self.fail(f"{node.name}: its factory returned {type(criterion).__name__}, "
                      "not a stopping criterion")
        return criterion

    def build_composite(self, node: Call, registry):
        from zoo.training.stopping import AllOf, AnyOf

        if node.form != "call":
            self.fail(f"{node.name} combines criteria in parentheses, e.g. "
                      f"{node.name}(loss_below(0.1), max_epochs=5)")
        members = []
        for keyword, value, token in node.args:
            if keyword is not None:  # max_epochs=5 inside all_of(...) is a shorthand spec
                if isinstance(value, Call):
                    self.fail(f"expected a value after '{keyword}=', found a criterion "
                              f"{value.name}(...)")
                value = Call(keyword, token, "shorthand", [(None, value, value.token)])
            members.append(self.build(value, registry))
        if not members:
            self.fail(f"{node.name}() needs at least one criterion, e.g. "
                      f"{node.name}(loss_below(0.1), max_epochs=5)")
        return (AllOf if node.name == "all_of" else AnyOf)(*members)

def parse_stop(spec: str, registry=None):
    """Parse one ``--stop`` spec into a Criterion.

    Args:
        spec: e.g. ``"max_epochs=50"``, ``"early_stopping(monitor=val_loss,patience=5)"``,
            ``"loss_below(0.01)"`` or ``"all_of(loss_below(0.1), max_epochs(5))"``.
        registry: where criterion names are looked up: an object with ``.get(name)`` returning
            a factory (``zoo.plugins.Registry``) or a plain dict; by default the installed
            plugins' criteria.

    Raises:
        ConfigError: one line naming the spec and what was expected.
    """
    if not isinstance(spec, str):
        raise ConfigError(f"--stop expects a spec string such as max_epochs=50; "
                          f"received {type(spec).__name__} {spec!r}")
    if registry is None:
        from zoo.plugins.host import resolve_host

        registry = resolve_host().criteria
    parser = _Parser(spec)
    return parser.build(parser.parse(), registry)


def parse_stops(specs, registry=None) -> list:
    """Parse several ``--stop`` specs (the option is repeatable)."""
    return [parse_stop(spec, registry) for spec in specs]
