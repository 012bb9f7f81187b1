"""What a registration must look like, checked when a plugin registers it.

A plugin's hook calls ``register(...)``; the host turns each call into ``(name, value,
aliases)`` with ``check_registration`` before anything enters a registry, so a malformed
registration (``register(object())``, ``register("weird", object())``, an ``Architecture``
with ``build=None`` or ``tasks=("teleport",)``, an optimizer registered as the int 42) is
refused with one line naming the plugin, and never fails later inside a command.

Every message is built with ``safe_repr``: a plugin's objects may have a ``repr`` that raises,
runs for ever long or spans lines.
"""

from __future__ import annotations

import re

from zoo.data.spec import KINDS as DATA_KINDS
from zoo.data.spec import TASKS
from zoo.errors import PluginError, printable

# The training defaults an architecture may set (what zoo.run reads from ``defaults``).
DEFAULT_KEYS = ("optimizer", "lr", "batch_size", "epochs", "patience", "monitor", "clip_norm",
                "loss", "schedule", "steps", "early_stopping", "validation_split", "shuffle")

# Names are typed on the command line and listed with commas (``--arch mlp,cnn``): one word.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}\Z")
# Stopping criteria and schedules are names in the spec grammar (``--stop``, ``--schedule``),
# metrics are prefixed to make names (``val_macro_f1``): identifiers.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
IDENTIFIER_KINDS = ("criteria", "schedules", "metrics")
# ``all_of``/``any_of`` are grammar of ``--stop`` specs, never registered criteria.
RESERVED = {"criteria": ("all_of", "any_of")}


def safe_repr(value, limit: int = 60) -> str:
    """``repr(value)`` on one line and at most ``limit`` characters, whatever ``value`` does."""
    try:
        text = repr(value)
    except BaseException as exc:  # noqa: BLE001 - a hostile __repr__ must not escape
        if isinstance(exc, KeyboardInterrupt):
            raise
        text = f"<{type(value).__name__} object>"
    text = one_line(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space and
    any other control character escaped (a plugin's message must not drive the terminal)."""
    return printable(" ".join(str(text).split()))


def _fail(label: str, message: str):
    raise PluginError(f"invalid {label}: {message}")


def check_name(kind: str, label: str, name, what: str = "name") -> str:
    identifier = kind in IDENTIFIER_KINDS
    pattern = _IDENTIFIER if identifier else _NAME
    if not isinstance(name, str) or not pattern.match(name):
        shape = ("an identifier" if identifier
                 else "one word of letters, digits, '_', '.', '+' or '-'")
        _fail(label, f"{what} must be {shape} (at most 64 characters); received {safe_repr(name)}")
    if name in RESERVED.get(kind, ()):
        _fail(label, f"{what} {name!r} is reserved by the --stop grammar")
    return name


def check_aliases(kind: str, label: str, aliases) -> tuple:
    if isinstance(aliases, (str, bytes)) or not isinstance(aliases, (tuple, list)):
        _fail(label, f"aliases must be a tuple of names; received {safe_repr(aliases)}")
    checked = tuple(check_name(kind, label, a, "alias") for a in aliases)
    if len(set(checked)) != len(checked):
        _fail(label, f"aliases repeat a name: {safe_repr(checked)}")
    return checked


def check_registration(kind: str, label: str, item, factory, aliases) -> tuple[str, object, tuple]:
    """``(name, value, aliases)`` of one ``register(...)`` call, or a ``PluginError``."""
    if kind in ("architectures", "datasets", "metrics"):
        if factory is not None:
            expected = {"architectures": "Architecture", "datasets": "DatasetInfo",
                        "metrics": "Metric"}[kind]
            _fail(label, f"register({expected}(...), aliases=()) takes one object; received "
                         f"{safe_repr(item)} and {safe_repr(factory)}")
        check = {"architectures": _check_architecture, "datasets": _check_dataset,
                 "metrics": _check_metric}[kind]
        value = check(item)
        name = value.name
    else:
        name = check_name(kind, label, item)
        if not callable(factory):
            _fail(label, f"{name}: the factory must be callable (usually a class); received "
                         f"{safe_repr(factory)}")
        value = factory
    return name, value, check_aliases(kind, label, aliases)


def _check_architecture(arch):
    from zoo.architecture import Architecture

    label = "architecture"
    if not isinstance(arch, Architecture):
        _fail(label, f"expected a zoo.architecture.Architecture; received {safe_repr(arch)}")
    name = check_name("architectures", label, arch.name)
    where = f"{label} {name}"
    if not isinstance(arch.summary, str):
        _fail(where, f"summary must be a string; received {safe_repr(arch.summary)}")
    _check_subset(where, "tasks", arch.tasks, TASKS)
    _check_subset(where, "data_kinds", arch.data_kinds, DATA_KINDS)
    if not callable(arch.build):
        _fail(where, f"build must be callable: build(spec, options) -> Layer; received "
                     f"{safe_repr(arch.build)}")
    if arch.loss is not None and not callable(arch.loss):
        _fail(where, f"loss must be None or callable; received {safe_repr(arch.loss)}")
    if not isinstance(arch.defaults, dict):
        _fail(where, f"defaults must be a dict; received {safe_repr(arch.defaults)}")
    unknown = [k for k in arch.defaults if k not in DEFAULT_KEYS]
    if unknown:
        _fail(where, f"unknown defaults {safe_repr(unknown)}; known: {', '.join(DEFAULT_KEYS)}")
    _check_options(where, arch.options)
    _check_presets(where, arch)
    return arch


def _check_presets(where: str, arch) -> None:
    """``presets``: training defaults by a value of the architecture's ``preset`` option."""
    if not isinstance(arch.presets, dict):
        _fail(where, f"presets must be a dict; received {safe_repr(arch.presets)}")
    choices = next((o.choices for o in arch.options if o.name == "preset"), None) or ()
    for preset, defaults in arch.presets.items():
        if preset not in choices:
            _fail(where, f"presets: no option 'preset' offers {safe_repr(preset)}")
        if not isinstance(defaults, dict):
            _fail(where, f"presets[{safe_repr(preset)}] must be a dict; received "
                         f"{safe_repr(defaults)}")
        unknown = [k for k in defaults if k not in DEFAULT_KEYS]
        if unknown:
            _fail(where, f"presets[{safe_repr(preset)}]: unknown defaults {safe_repr(unknown)}; "
                         f"known: {', '.join(DEFAULT_KEYS)}")


def _check_options(where: str, options) -> None:
    from zoo.architecture import Option

    if not isinstance(options, (tuple, list)):
        _fail(where, f"options must be a tuple of Option; received {safe_repr(options)}")
    seen = set()
    for opt in options:
        if not isinstance(opt, Option):
            _fail(where, f"options must be zoo.architecture.Option objects; received "
                         f"{safe_repr(opt)}")
        if not isinstance(opt.name, str) or not _IDENTIFIER.match(opt.name) or opt.name in seen:
            _fail(where, f"option names must be distinct identifiers; received "
                         f"{safe_repr(opt.name)}")
        seen.add(opt.name)
        if not (any(opt.type is t for t in (int, float, str, bool))
                or (isinstance(opt.type, str) and opt.type == "ints")):
            _fail(where, f"option {opt.name}: type must be int, float, str, bool or 'ints'; "
                         f"received {safe_repr(opt.type)}")
        try:
            opt.parse(opt.default)
        except Exception as exc:  # noqa: BLE001 - any failure means a broken default
            _fail(where, f"option {opt.name}: its default {safe_repr(opt.default)} is not valid: "
                         f"{one_line(exc)}")


def _check_subset(where: str, field: str, values, allowed) -> None:
    if isinstance(values, str) or not isinstance(values, (tuple, list)) or not values:
        _fail(where, f"{field} must be a non-empty tuple of {', '.join(allowed)}; received "
                     f"{safe_repr(values)}")
    wrong = [v for v in values if v not in allowed]
    if wrong:
        _fail(where, f"unknown {field} {safe_repr(wrong)}; expected any of {', '.join(allowed)}")


def _check_dataset(info):
    from zoo.data.dataset import DatasetInfo

    label = "dataset"
    if not isinstance(info, DatasetInfo):
        _fail(label, f"expected a zoo.data.dataset.DatasetInfo; received {safe_repr(info)}")
    name = check_name("datasets", label, info.name)
    where = f"{label} {name}"
    if not isinstance(info.summary, str):
        _fail(where, f"summary must be a string; received {safe_repr(info.summary)}")
    if info.task not in TASKS:
        _fail(where, f"task must be one of {', '.join(TASKS)}; received {safe_repr(info.task)}")
    if info.kind not in DATA_KINDS:
        _fail(where, f"kind must be one of {', '.join(DATA_KINDS)}; received "
                     f"{safe_repr(info.kind)}")
    if not callable(info.load):
        _fail(where, f"load must be callable: load(seed, **options) -> Dataset; received "
                     f"{safe_repr(info.load)}")
    return info


def _check_metric(metric):
    from zoo.training.metrics import Metric

    label = "metric"
    if not isinstance(metric, Metric):
        _fail(label, f"expected a zoo.training.metrics.Metric; received {safe_repr(metric)}")
    name = check_name("metrics", label, metric.name)
    where = f"{label} {name}"
    if not isinstance(metric.summary, str):
        _fail(where, f"summary must be a string; received {safe_repr(metric.summary)}")
    _check_subset(where, "tasks", metric.tasks, TASKS)
    if not callable(metric.compute):
        _fail(where, f"compute must be callable: compute(outputs, target, activate) -> float; "
                     f"received {safe_repr(metric.compute)}")
    for flag in ("maximise", "every_epoch"):
        if not isinstance(getattr(metric, flag), bool):
            _fail(where, f"{flag} must be True or False; received "
                         f"{safe_repr(getattr(metric, flag))}")
    return metric
