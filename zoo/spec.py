"""Specs: a registered name with its settings, as typed on the command line.

One syntax and one parser for every configurable name (``--optimizer``, ``--loss``,
``--schedule``, ``--dataset``, ``--stop``)::

    spec      := call
    call      := NAME                       defaults:          adam
               | NAME '=' value             first parameter:   max_epochs=50
               | NAME '(' [args] ')'        call:              sgd(momentum=0.9, nesterov=true)
    args      := arg (',' arg)* [',']       positional arguments come first
    arg       := value | NAME '=' value
    value     := number | true | false | None | bare word | 'quoted' | "quoted"

A tokenizer and a recursive-descent parser; nothing is ever evaluated. A bare word is a string
(``monitor=val_loss``); quote a string that would read as a number, a boolean or None. Each
error is one line naming the flag and spec, the position, what was expected and what was found;
an unknown name lists the installed ones and an unknown parameter the accepted ones.

``parse_spec(text, registry, kind)`` returns a ``Spec``: the canonical name, the factory and the
keyword arguments bound to its signature. ``format_spec`` writes a spec back, so a run's
settings are stored as spec strings that parse to the same thing.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from zoo.errors import ConfigError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INT = re.compile(r"[+-]?\d+\Z")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?\Z")
_WORD = re.compile(r"[^\s(),=\"']+\Z")
_PUNCT = "(),="
_QUOTES = "'\""
_CONSTANTS = {"true": True, "false": False, "none": None, "null": None}
# Specs come from the command line and from checkpoints: calls (``--stop``'s all_of/any_of)
# nested deeper than this are refused before the recursive-descent parser (and the composites
# built from it) could exhaust the stack. Parentheses may go one level deeper, for the innermost
# criterion's own call, so the repr of any accepted spec parses back. Real specs nest 2 or 3.
MAX_DEPTH = 32
# ``name(`` at the start of a text: how ``--dataset`` tells a spec from a path.
CALL_START = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*\(")


@dataclass(frozen=True)
class Kind:
    """How specs of one kind are described in messages.

    Args:
        flag: the command-line flag, e.g. ``--optimizer``.
        label: the registry's label, e.g. ``optimizer`` ("unknown optimizer 'x'").
        noun: the short word in "expected a NOUN name", e.g. ``criterion``.
        example: what an empty spec should have been, e.g. ``adam or sgd(momentum=0.9)``.
        reserved: parameters zoo passes itself, with where they are set instead
            (``{"lr": "--lr"}``); a spec may not give them.
        skip_first: the factory's first parameter is zoo's (a dataset loader's ``seed``).
        nesting: what "... nest more than N levels deep" calls too deep a spec.
    """

    flag: str
    label: str
    noun: str
    example: str
    reserved: dict = field(default_factory=dict)
    skip_first: bool = False
    nesting: str = "calls"


OPTIMIZER = Kind("--optimizer", "optimizer", "optimizer", "adam or sgd(momentum=0.9)",
                 reserved={"lr": "--lr"})
LOSS = Kind("--loss", "loss", "loss", "mse or softmax_cross_entropy(label_smoothing=0.1)")
SCHEDULE = Kind("--schedule", "schedule", "schedule", "constant or cosine(warmup_epochs=5)")
DATASET = Kind("--dataset", "dataset", "dataset", "spirals or spirals(arms=3)", skip_first=True)
CRITERION = Kind("--stop", "stopping criterion", "criterion",
                 "max_epochs=50 or early_stopping(patience=5)", nesting="criteria")
METRIC = Kind("--metric", "metric", "metric", "val_accuracy or val_f1_macro")


@dataclass(frozen=True)
class Spec:
    """A parsed spec: ``name`` (canonical), its ``factory`` and the bound ``kwargs``."""

    name: str
    factory: Callable
    kwargs: dict

    def __str__(self) -> str:
        return format_spec(self.name, self.kwargs)

    def build(self, kind: Kind, text: str, **zoo_kwargs):
        """Call the factory; its ConfigError/TypeError/ValueError become one spec error."""
        try:
            return self.factory(**zoo_kwargs, **self.kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{kind.flag} {text!r}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{kind.flag} {text!r}: {self.name}: {exc}") from None


# -- values --------------------------------------------------------------------------------------

def word_value(text: str):
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
    """A value in spec syntax: the parser reads it back to ``value``."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if _WORD.match(value) and word_value(value) == value:
            return value
        quote = "'" if "'" not in value else '"'
        return f"{quote}{value}{quote}"
    return repr(value)


def format_spec(name: str, kwargs: dict) -> str:
    """``sgd(momentum=0.9, nesterov=true)``; a bare ``name`` when there are no settings."""
    if not kwargs:
        return name
    return f"{name}({', '.join(f'{k}={format_value(v)}' for k, v in kwargs.items())})"


def did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- the syntax tree -----------------------------------------------------------------------------

@dataclass
class Token:
    kind: str  # "word", "string" or "punct"
    text: str
    pos: int


@dataclass
class Value:
    value: object
    token: Token


@dataclass
class Call:
    name: str
    token: Token
    form: str  # "bare" (NAME), "shorthand" (NAME=value) or "call" (NAME(...))
    args: list = field(default_factory=list)  # (keyword or None, node, token)


def _is(token, punct: str) -> bool:
    return token is not None and token.kind == "punct" and token.text == punct


class Parser:
    """Tokens, grammar and argument binding for one spec text of one ``Kind``."""

    # Names whose arguments are themselves calls (``--stop``'s all_of/any_of): their nesting
    # is what MAX_DEPTH limits; any call may add one more level.
    composite_names: tuple = ()

    def __init__(self, spec: str, kind: Kind):
        self.spec = spec
        self.kind = kind
        self.tokens = self._tokenize()
        self.i = 0
        self.depth = 0  # parentheses open now
        self.composites = 0  # composite calls open now

    def fail(self, message: str):
        spec = self.spec if len(self.spec) <= 120 else self.spec[:117] + "..."
        raise ConfigError(f"{self.kind.flag} {spec!r}: {message}")

    def _tokenize(self) -> list:
        spec, tokens, i = self.spec, [], 0
        while i < len(spec):
            ch = spec[i]
            if ch.isspace():
                i += 1
            elif ch in _PUNCT:
                tokens.append(Token("punct", ch, i))
                i += 1
            elif ch in _QUOTES:
                end = spec.find(ch, i + 1)
                if end < 0:
                    self.fail(f"unterminated string {spec[i:]!r}: expected a closing {ch}")
                tokens.append(Token("string", spec[i + 1:end], i))
                i = end + 1
            else:
                j = i
                while j < len(spec) and not spec[j].isspace() and spec[j] not in _PUNCT + _QUOTES:
                    j += 1
                tokens.append(Token("word", spec[i:j], i))
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
    def parse(self) -> Call:
        if not self.tokens:
            article = "an" if self.kind.label[0] in "aeiou" else "a"
            self.fail(f"expected {article} {self.kind.label} such as {self.kind.example}")
        node = self.call()
        extra = self.peek()
        if extra is not None:
            self.fail(f"unexpected {extra.text!r} after {self.before(extra)!r}")
        return node

    def call(self) -> Call:
        token = self.take()
        if token is None or token.kind != "word" or not _NAME.match(token.text):
            found = "nothing" if token is None else repr(token.text)
            self.fail(f"expected a {self.kind.noun} name, found {found}")
        if _is(self.peek(), "="):
            self.take()
            value = self.value(f"{token.text}=")
            return Call(token.text, token, "shorthand", [(None, value, value.token)])
        if _is(self.peek(), "("):
            return Call(token.text, token, "call", self.arguments(token.text))
        return Call(token.text, token, "bare")

    def arguments(self, name: str) -> list:
        self.take()  # "("
        self.depth += 1
        self.composites += name in self.composite_names
        if self.composites > MAX_DEPTH or self.depth > MAX_DEPTH + 1:
            self.fail(f"{self.kind.nesting} nest more than {MAX_DEPTH} levels deep")
        args: list = []
        while True:
            token = self.peek()
            if token is None:
                self.fail(f"expected ')' to close {name + '('!r}")
            if _is(token, ")"):
                self.take()
                self.depth -= 1
                self.composites -= name in self.composite_names
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
                self.fail(f"expected a {self.kind.noun} name before '(', found {token.text!r}")
            return Call(token.text, token, "call", self.arguments(token.text))
        value = token.text if token.kind == "string" else word_value(token.text)
        return Value(value, token)

    # -- names and arguments -----------------------------------------------------------------
    def lookup(self, name: str, registry):
        """The factory registered as ``name`` (an alias works), or one error listing names."""
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
        self.fail(f"unknown {self.kind.label} {name!r}{did_you_mean(name, names)}; "
                  f"installed: {', '.join(names) or 'none'}")

    def nested(self, node: Call, value: Call):
        """A call where a value belongs (only ``--stop`` composites take calls)."""
        self.fail(f"{node.name}: {value.name}(...) is not a value; expected a number, true, "
                  "false, None or a word")

    def bind(self, node: Call, factory) -> dict:
        """Match positional and keyword arguments to the factory's parameters."""
        name = node.name
        params, open_keywords = parameters(factory, self.kind)
        positional = [p.name for p in params if p.kind != p.KEYWORD_ONLY]
        accepted = [p.name for p in params]

        kwargs, seen_keyword, index = {}, False, 0
        for keyword, value, token in node.args:
            if isinstance(value, Call):
                self.nested(node, value)
            if keyword is None:
                if seen_keyword:
                    self.fail(f"{name}: positional argument {token.text!r} follows keyword "
                              "arguments")
                if index >= len(positional):
                    if node.form == "shorthand":
                        self.fail(f"{name} takes no parameters; write {self.kind.flag} {name}")
                    self.fail(f"{name} takes at most {len(positional)} positional "
                              f"argument{'s' * (len(positional) != 1)} "
                              f"({', '.join(positional) or 'none'}); received "
                              f"{sum(k is None for k, _, _ in node.args)}")
                keyword = positional[index]
                index += 1
            else:
                seen_keyword = True
                if keyword in self.kind.reserved:
                    self.fail(f"{name}: {keyword} is not set in {self.kind.flag}; give it with "
                              f"{self.kind.reserved[keyword]}")
                if keyword not in accepted and not open_keywords:
                    self.fail(f"{name} has no parameter {keyword!r}; accepted: "
                              f"{', '.join(accepted) or 'none'}"
                              f"{did_you_mean(keyword, accepted)}")
            if keyword in kwargs:
                self.fail(f"{name}: {keyword} is given more than once")
            kwargs[keyword] = value.value
        missing = [p.name for p in params if p.default is p.empty and p.name not in kwargs]
        if missing:
            self.fail(f"{name}: missing required parameter{'s' * (len(missing) > 1)} "
                      f"{', '.join(missing)}; {name} takes {', '.join(accepted)}")
        return kwargs


def parameters(factory, kind: Kind | None = None) -> tuple[list, bool]:
    """The parameters a spec may set on ``factory``, and whether it takes any ``**keyword``.

    Leaves out ``*args``/``**kwargs``, the parameters zoo passes itself (``kind.reserved``)
    and, for dataset loaders, the leading ``seed``. A factory without a signature takes any
    keyword.
    """
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: pass keywords through
        return [], True
    params = list(signature.parameters.values())
    if kind is not None and kind.skip_first and params:
        params = params[1:]
    reserved = kind.reserved if kind is not None else {}
    open_keywords = any(p.kind == p.VAR_KEYWORD for p in params)
    params = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
              and p.name not in reserved]
    return params, open_keywords


def describe_parameters(factory, kind: Kind | None = None) -> list[dict]:
    """``[{"name", "default"}]`` of what a spec may set (``zoo list`` / ``zoo info``).

    ``default`` is None for a required parameter (``"required": True`` says so).
    """
    params, _ = parameters(factory, kind)
    out = []
    for p in params:
        required = p.default is p.empty
        default = None if required else p.default
        if isinstance(default, tuple):
            default = list(default)
        out.append({"name": p.name, "default": default, "required": required})
    return out


def parameters_text(factory, kind: Kind | None = None) -> str:
    """``momentum=0.0, nesterov=false`` (``epochs`` for a required parameter)."""
    parts = []
    for p in describe_parameters(factory, kind):
        parts.append(p["name"] if p["required"] else
                     f"{p['name']}={format_value(p['default'])}")
    return ", ".join(parts)


def parse_spec(text, registry, kind: Kind) -> Spec:
    """Parse one spec of ``kind`` against ``registry`` (a ``Registry`` or a dict).

    Raises:
        ConfigError: one line naming the flag, the spec and what was expected.
    """
    if not isinstance(text, str):
        raise ConfigError(f"{kind.flag} expects a spec string such as {kind.example}; "
                          f"received {type(text).__name__} {text!r}")
    parser = Parser(text, kind)
    node = parser.parse()
    factory = parser.lookup(node.name, registry)
    canonical = node.name
    if hasattr(registry, "canonical"):
        canonical = registry.canonical(node.name)
    return Spec(canonical, factory, parser.bind(node, factory))
