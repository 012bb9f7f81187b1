"""What an architecture plugin registers: a name, a summary, tasks, options and a builder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zoo.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Option:
    """One architecture option: ``-o name=value`` on the command line.

    ``type`` is ``int``, ``float``, ``str``, ``bool`` or ``"ints"`` (a comma-separated
    list of integers such as ``channels=16,32``).
    """

    name: str
    type: Any
    default: Any
    help: str
    choices: tuple | None = None

    def parse(self, value):
        """Convert a string (or an already typed value) to this option's type, or raise."""
        try:
            if self.type == "ints":
                if isinstance(value, str):
                    parsed = tuple(int(v) for v in value.split(",") if v.strip())
                else:
                    parsed = tuple(int(v) for v in value)
            elif self.type is bool:
                if isinstance(value, bool):
                    parsed = value
                elif str(value).lower() in _TRUE:
                    parsed = True
                elif str(value).lower() in _FALSE:
                    parsed = False
                else:
                    raise ValueError
            elif self.type is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            else:
                parsed = self.type(value)
        except (TypeError, ValueError):
            kind = "comma-separated integers" if self.type == "ints" else self.type.__name__
            raise ConfigError(f"option {self.name} expects {kind}; received {value!r}") from None
        if self.choices is not None and parsed not in self.choices:
            raise ConfigError(
                f"option {self.name} must be one of {', '.join(map(str, self.choices))}; "
                f"received {value!r}"
            )
        return parsed

    def type_name(self) -> str:
        return "ints" if self.type == "ints" else self.type.__name__


@dataclass(frozen=True)
class Architecture:
    """An architecture as a plugin registers it.

    Args:
        name: what users type after ``--arch``.
        summary: one line for ``zoo list``.
        tasks: the tasks it supports, a subset of classify / regress / reconstruct.
        build: ``build(spec: DataSpec, options: dict) -> Layer``; returns an unbuilt model whose
            output fits ``spec.output_size`` (logits for classify). The host builds it.
        options: the options ``-o key=value`` accepts, with defaults.
        loss: optional ``loss(spec, options) -> str``, the registered loss to train with;
            by default softmax cross-entropy for classify and MSE otherwise.
        data_kinds: the kinds of data it can be built for.
        defaults: training defaults it trains well with when the user gives none, any of
            ``optimizer``, ``lr``, ``batch_size``, ``epochs``, ``patience``, ``clip_norm`` and
            ``monitor`` (the metric the default early stopping watches, ``val_loss`` if unset).
    """

    name: str
    summary: str
    tasks: tuple
    build: Callable
    options: tuple = ()
    loss: Callable | None = None
    data_kinds: tuple = ("vector", "sequence", "image")
    defaults: dict = field(default_factory=dict)
    plugin: str = field(default="", compare=False)

    def option(self, name: str) -> Option:
        for opt in self.options:
            if opt.name == name:
                return opt
        known = ", ".join(o.name for o in self.options) or "none"
        raise ConfigError(f"architecture {self.name} has no option {name!r}; its options: {known}")

    def resolve_options(self, given: dict | None = None) -> dict:
        """Defaults overlaid with ``given`` (strings or typed values), each checked."""
        resolved = {opt.name: opt.default for opt in self.options}
        for key, value in (given or {}).items():
            resolved[key] = self.option(key).parse(value)
        return resolved

    def task_for(self, data_task: str) -> str:
        """The task this architecture performs on data labelled for ``data_task``."""
        if data_task in self.tasks:
            return data_task
        if "reconstruct" in self.tasks:
            return "reconstruct"
        raise ConfigError(
            f"architecture {self.name} supports {', '.join(self.tasks)}; "
            f"the dataset's task is {data_task}"
        )

    def default_loss(self, spec, options: dict) -> str:
        if self.loss is not None:
            return self.loss(spec, options)
        return "softmax_cross_entropy" if spec.task == "classify" else "mse"
