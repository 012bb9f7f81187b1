"""``--stop`` specs: stopping criteria written on the command line.

The grammar (a tokenizer and a recursive-descent parser; nothing is ever evaluated)::

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

import difflib
import inspect
import re
from dataclasses import dataclass, field

from zoo.errors import ConfigError

COMPOSITES = ("all_of", "any_of")
# Specs come from the command line and from checkpoints: all_of/any_of nested deeper than this
# are refused before the recursive-descent parser (and the composites built from it) could
# exhaust the stack. Parentheses may go one level deeper, for the innermost criterion's own
# call, so the repr of any accepted spec parses back. Real specs nest 2 or 3 levels.
MAX_DEPTH = 32
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INT = re.compile(r"[+-]?\d+\Z")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?\Z")
_WORD = re.compile(r"[^\s(),=\"']+\Z")
_PUNCT = "(),="
_QUOTES = "'\""
_CONSTANTS = {"true": True, "false": False, "none": None, "null": None}


@dataclass
class _Token:
    kind: str  # "word", "string" or "punct"
    text: str
    pos: int


@dataclass
class _Value:
    value: object
    token: _Token


@dataclass
class _Call:
    name: str
    token: _Token
    form: str  # "bare" (NAME), "shorthand" (NAME=value) or "call" (NAME(...))
    args: list = field(default_factory=list)  # (keyword or None, node, token)


def _word_value(text: str):
    """A bare word as a Python value: number, boolean, None, else the word itself."""
    constant = _CONSTANTS.get(text.lower(), text)
    if constant is not text:
        return constant
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


def format_value(value) -> str:
    """A value in spec syntax: ``_word_value``/the parser reads it back to ``value``."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if _WORD.match(value) and _word_value(value) == value:
            return value
        quote = "'" if "'" not in value else '"'
        return f"{quote}{value}{quote}"
    return repr(value)


def _did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Parser:
    def __init__(self, spec: str):
        self.spec = spec
        self.tokens = self._tokenize()
        self.i = 0
        self.depth = 0  # parentheses open now
        self.composites = 0  # all_of/any_of open now

    def fail(self, message: str):
        spec = self.spec if len(self.spec) <= 120 else self.spec[:117] + "..."
        raise ConfigError(f"--stop {spec!r}: {message}")

    def _tokenize(self) -> list:
        spec, tokens, i = self.spec, [], 0
        while i < len(spec):
            ch = spec[i]
            if ch.isspace():
                i += 1
            elif ch in _PUNCT:
                tokens.append(_Token("punct", ch, i))
                i += 1
            elif ch in _QUOTES:
                end = spec.find(ch, i + 1)
                if end < 0:
                    self.fail(f"unterminated string {spec[i:]!r}: expected a closing {ch}")
                tokens.append(_Token("string", spec[i + 1:end], i))
                i = end + 1
            else:
                j = i
                while j < len(spec) and not spec[j].isspace() and spec[j] not in _PUNCT + _QUOTES:
                    j += 1
                tokens.append(_Token("word", spec[i:j], i))
                i = j
        return tokens

    def peek(self, ahead: int = 0):
        j = self.i + ahead
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self):
        token = self.peek()
        self.i += 1
        return token

    def before(self, token) -> str:
        return (self.spec if token is None else self.spec[:token.pos]).strip()

    # -- the grammar -------------------------------------------------------------------------
    def parse(self) -> _Call:
        if not self.tokens:
            self.fail("expected a stopping criterion such as max_epochs=50 or "
                      "early_stopping(patience=5)")
        node = self.criterion()
        extra = self.peek()
        if extra is not None:
            self.fail(f"unexpected {extra.text!r} after {self.before(extra)!r}")
        return node

    def criterion(self) -> _Call:
        token = self.take()
        if token is None or token.kind != "word" or not _NAME.match(token.text):
            found = "nothing" if token is None else repr(token.text)
            self.fail(f"expected a criterion name, found {found}")
        if _is(self.peek(), "="):
            self.take()
            value = self.value(f"{token.text}=")
            return _Call(token.text, token, "shorthand", [(None, value, value.token)])
        if _is(self.peek(), "("):
            return _Call(token.text, token, "call", self.arguments(token.text))
        return _Call(token.text, token, "bare")

    def arguments(self, name: str) -> list:
        self.take()  # "("
        self.depth += 1
        self.composites += name in COMPOSITES
        if self.composites > MAX_DEPTH or self.depth > MAX_DEPTH + 1:
            self.fail(f"criteria nest more than {MAX_DEPTH} levels deep")
        args: list = []
        while True:
            token = self.peek()
            if token is None:
                self.fail(f"expected ')' to close {name + '('!r}")
            if _is(token, ")"):
                self.take()
                self.depth -= 1
                self.composites -= name in COMPOSITES
                return args
            if token.kind == "word" and _is(self.peek(1), "="):
                if not _NAME.match(token.text):
                    self.fail(f"expected a parameter name before '=', found {token.text!r}")
                self.take()
                self.take()
                args.append((token.text, self.value(f"{token.text}="), token))
            else:
                args.append((None, self.value(self.before(token)), token))
            after = self.peek()
            if after is None:
                self.fail(f"expected ')' to close {name + '('!r}")
            if _is(after, ","):
                self.take()
            elif not _is(after, ")"):
                self.fail(f"expected ',' or ')' after "
                          f"{self.spec[token.pos:after.pos].strip()!r}, found {after.text!r}")

    def value(self, context: str):
        token = self.take()
        if token is None or token.kind == "punct":
            found = "" if token is None or token.text in ",)" else f", found {token.text!r}"
            self.fail(f"expected a value after {context!r}{found}")
        if token.kind == "word" and _is(self.peek(), "("):
            if not _NAME.match(token.text):
                self.fail(f"expected a criterion name before '(', found {token.text!r}")
            return _Call(token.text, token, "call", self.arguments(token.text))
        value = token.text if token.kind == "string" else _word_value(token.text)
        return _Value(value, token)

    # -- from syntax to criteria -------------------------------------------------------------
    def build(self, node, registry):
        if isinstance(node, _Value):
            # A bare name inside all_of/any_of is a criterion with its defaults.
            if node.token.kind == "word" and isinstance(node.value, str) \
                    and _NAME.match(node.value):
                node = _Call(node.value, node.token, "bare")
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

    def build_composite(self, node: _Call, registry):
        from zoo.training.stopping import AllOf, AnyOf

        if node.form != "call":
            self.fail(f"{node.name} combines criteria in parentheses, e.g. "
                      f"{node.name}(loss_below(0.1), max_epochs=5)")
        members = []
        for keyword, value, token in node.args:
            if keyword is not None:  # max_epochs=5 inside all_of(...) is a shorthand spec
                if isinstance(value, _Call):
                    self.fail(f"expected a value after '{keyword}=', found a criterion "
                              f"{value.name}(...)")
                value = _Call(keyword, token, "shorthand", [(None, value, value.token)])
            members.append(self.build(value, registry))
        if not members:
            self.fail(f"{node.name}() needs at least one criterion, e.g. "
                      f"{node.name}(loss_below(0.1), max_epochs=5)")
        return (AllOf if node.name == "all_of" else AnyOf)(*members)

    def lookup(self, name: str, registry):
        try:
            known = name in registry
        except TypeError:
            known = True
        if known:
            try:
                factory = registry.get(name)
            except ConfigError as exc:
                self.fail(str(exc))
            if factory is not None:
                return factory
        names = list(registry.names()) if hasattr(registry, "names") else sorted(registry)
        self.fail(f"unknown stopping criterion {name!r}{_did_you_mean(name, names)}; "
                  f"installed: {', '.join(names) or 'none'}")

    def bind(self, node: _Call, factory) -> dict:
        """Match positional and keyword arguments to the factory's parameters."""
        name = node.name
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):  # a builtin without a signature: pass keywords through
            signature = None
        params = [] if signature is None else [
            p for p in signature.parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        open_keywords = signature is None or any(
            p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
        positional = [p.name for p in params if p.kind != p.KEYWORD_ONLY]
        accepted = [p.name for p in params]

        kwargs, seen_keyword, index = {}, False, 0
        for keyword, value, token in node.args:
            if isinstance(value, _Call):
                self.fail(f"{name}: {value.name}(...) is a criterion; criteria combine only "
                          "inside all_of(...) or any_of(...)")
            if keyword is None:
                if seen_keyword:
                    self.fail(f"{name}: positional argument {token.text!r} follows keyword "
                              "arguments")
                if index >= len(positional):
                    if node.form == "shorthand":
                        self.fail(f"{name} takes no parameters; write --stop {name}")
                    self.fail(f"{name} takes at most {len(positional)} positional "
                              f"argument{'s' * (len(positional) != 1)} "
                              f"({', '.join(positional) or 'none'}); received "
                              f"{sum(k is None for k, _, _ in node.args)}")
                keyword = positional[index]
                index += 1
            else:
                seen_keyword = True
                if keyword not in accepted and not open_keywords:
                    self.fail(f"{name} has no parameter {keyword!r}; accepted: "
                              f"{', '.join(accepted) or 'none'}"
                              f"{_did_you_mean(keyword, accepted)}")
            if keyword in kwargs:
                self.fail(f"{name}: {keyword} is given more than once")
            kwargs[keyword] = value.value
        missing = [p.name for p in params if p.default is p.empty and p.name not in kwargs]
        if missing:
            self.fail(f"{name}: missing required parameter{'s' * (len(missing) > 1)} "
                      f"{', '.join(missing)}; {name} takes {', '.join(accepted)}")
        return kwargs


def _is(token, punct: str) -> bool:
    return token is not None and token.kind == "punct" and token.text == punct


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
