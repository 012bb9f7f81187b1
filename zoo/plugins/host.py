"""Plugin loading: pluggy, entry points of the group ``zoo``, and the registries they fill.

Each plugin is loaded on its own. A plugin that fails to import, uses a hook name that does not
exist, raises anything (``SystemExit`` included) while loading or registering, registers a name
or alias that is taken or something malformed (``zoo.plugins.validate``), or adds a command
whose name is taken is recorded with its name and a one-line reason, and the rest of zoo works
on. ``ZOO_STRICT_PLUGINS=1`` (or ``strict=True``) turns each of those into a ``PluginError``.
``ZOO_LOAD_PLUGINS=a,b`` loads only the named plugins. The rules: docs/plugin-hooks.md, "Trust
rules".
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from zoo import API_VERSION, hookspecs
from zoo.errors import ConfigError, PluginError
from zoo.plugins.validate import check_registration, one_line, safe_repr

ENTRY_POINT_GROUP = "zoo"

# Core components (losses, optimizers, criteria, datasets, schedules, metrics) are plugins too,
# registered before the entry points so a third party cannot shadow them by accident.
BUILTIN_MODULES = (
    "zoo.plugins.builtin.datasets",
    "zoo.plugins.builtin.losses",
    "zoo.plugins.builtin.optimizers",
    "zoo.plugins.builtin.criteria",
    "zoo.plugins.builtin.schedules",
    "zoo.plugins.builtin.metrics",
)

KINDS = {
    # registry kind: (hook name, singular label used in messages)
    "architectures": ("register_architectures", "architecture"),
    "datasets": ("register_datasets", "dataset"),
    "losses": ("register_losses", "loss"),
    "optimizers": ("register_optimizers", "optimizer"),
    "criteria": ("register_stopping_criteria", "stopping criterion"),
    "schedules": ("register_schedules", "schedule"),
    "metrics": ("register_metrics", "metric"),
}


class Registry:
    """A table of named things of one kind. Names and aliases share one namespace: once a word
    is taken, as a name or as an alias, nothing else can take it, and a name always resolves
    before an alias."""

    def __init__(self, label: str):
        self.label = label
        self._items: dict[str, object] = {}
        self._owners: dict[str, str] = {}
        self._aliases: dict[str, str] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._items or name in self._aliases

    def taken_by(self, name: str) -> str | None:
        canonical = self._aliases.get(name, name)
        return self._owners.get(canonical)

    def conflict(self, name: str, aliases=()) -> str | None:
        """Why ``name`` with ``aliases`` cannot be registered, or None."""
        for word in (name, *aliases):
            what = repr(word) if word == name else f"{name}: alias {word!r}"
            if word in self._items:
                return f"{self.label} {what} is already registered by {self._owners[word]}"
            if word in self._aliases:
                canonical = self._aliases[word]
                return (f"{self.label} {what} is already an alias of {canonical}, registered "
                        f"by {self._owners[canonical]}")
        return None

    def add(self, name: str, item, owner: str, aliases=()) -> None:
        problem = self.conflict(name, aliases)
        if problem is not None:
            raise PluginError(problem)
        self._items[name] = item
        self._owners[name] = owner
        for alias in aliases:
            self._aliases[alias] = name

    def replace(self, name: str, item, owner: str) -> None:
        """Put ``item`` in the place of the entry ``name``, which ``owner`` registered (Python
        code registering its own architecture again, as a notebook cell run twice)."""
        if name not in self._items or self._owners[name] != owner:
            raise PluginError(f"{self.label} {name!r} is not registered by {owner}; it cannot "
                              f"be replaced by it")
        self._items[name] = item

    def _canonical(self, name: str) -> str:
        return name if name in self._items else self._aliases.get(name, name)

    def get(self, name: str):
        canonical = self._canonical(name)
        if canonical not in self._items:
            installed = ", ".join(self.names()) or "none"
            raise ConfigError(f"unknown {self.label} {name!r}; installed: {installed}")
        return self._items[canonical]

    def canonical(self, name: str) -> str:
        """The registered name ``name`` stands for (itself, or what an alias points to)."""
        return self._aliases.get(name, name)

    def owner(self, name: str) -> str:
        return self._owners[self._canonical(name)]

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self):
        return sorted(self._items.items())


@dataclass
class PluginRecord:
    """What ``zoo plugins`` shows about one plugin."""

    name: str
    version: str | None = None
    module: str | None = None
    builtin: bool = False
    hooks: list = field(default_factory=list)
    registered: dict = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "module": self.module,
                "builtin": self.builtin, "hooks": self.hooks, "registered": self.registered,
                "error": self.error}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class PluginHost:
    """Loads the plugins once and holds the registries they fill."""

    def __init__(self, strict: bool | None = None, load: list[str] | None = None):
        self.strict = _env_flag("ZOO_STRICT_PLUGINS") if strict is None else strict
        if load is None and os.environ.get("ZOO_LOAD_PLUGINS"):
            load = [p.strip() for p in os.environ["ZOO_LOAD_PLUGINS"].split(",") if p.strip()]
        self.only = load
        self.pm = pluggy.PluginManager("zoo")
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.registries = {kind: Registry(label) for kind, (_, label) in KINDS.items()}
        self._load()

    # -- the registries, by name -------------------------------------------------------------
    @property
    def architectures(self) -> Registry:
        return self.registries["architectures"]

    @property
    def datasets(self) -> Registry:
        return self.registries["datasets"]

    @property
    def losses(self) -> Registry:
        return self.registries["losses"]

    @property
    def optimizers(self) -> Registry:
        return self.registries["optimizers"]

    @property
    def criteria(self) -> Registry:
        return self.registries["criteria"]

    @property
    def schedules(self) -> Registry:
        return self.registries["schedules"]

    @property
    def metrics(self) -> Registry:
        return self.registries["metrics"]

    @property
    def problems(self) -> list[PluginRecord]:
        return [r for r in self.records.values() if r.error]

    # -- loading -----------------------------------------------------------------------------
    def _fail(self, record: PluginRecord, reason: str) -> None:
        reason = one_line(reason)
        record.error = reason if record.error is None else f"{record.error}; {reason}"
        if self.strict:
            raise PluginError(f"plugin {record.name}: {reason}")

    def _guard(self, record: PluginRecord, what: str, call):
        """``(True, call())``, or ``(False, None)`` with the plugin's failure recorded.

        Whatever a plugin raises is isolated, ``SystemExit`` included: a plugin must not end
        zoo. Only Ctrl-C goes through.
        """
        try:
            return True, call()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - see the docstring
            self._fail(record, f"{what}: {describe_exception(exc)}")
            return False, None

    def _load(self) -> None:
        for module_name in BUILTIN_MODULES:
            module = importlib.import_module(module_name)
            self._add_module(PluginRecord(module_name, builtin=True, module=module_name), module)
        seen = set()
        for ep in self._entry_points():
            if self.only is not None and ep.name not in self.only:
                continue
            seen.add(ep.name)
            record = PluginRecord(ep.name, module=ep.value, version=_version(ep))
            if ep.name in self.records or self.pm.has_plugin(ep.name):
                # Refused before its module is imported: zoo runs no code of a plugin it drops.
                taken = self.records.get(ep.name)
                record.name = self._unique_name(f"{ep.name} ({_distribution(ep)})")
                self.records[record.name] = record
                owner = _describe_record(taken) if taken else "another plugin"
                self._fail(record, f"the plugin name {ep.name!r} is already taken by {owner}")
                continue
            self.records[ep.name] = record
            ok, module = self._guard(record, "failed to import", ep.load)
            if ok:
                self._add_module(record, module)
        for name in sorted(set(self.only or ()) - seen):
            record = self.records[self._unique_name(name)] = PluginRecord(name)
            installed = ", ".join(sorted({ep.name for ep in self._entry_points()})) or "none"
            self._fail(record, f"not found: no installed plugin is named {name!r} "
                               f"(ZOO_LOAD_PLUGINS); installed: {installed}")
        self._call_register_hooks()

    def _unique_name(self, name: str) -> str:
        unique, n = name, 1
        while unique in self.records:
            n += 1
            unique = f"{name} #{n}"
        return unique

    def _entry_points(self):
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
        # zoo's own distribution first, so built-in names win over a third party's duplicates.
        return sorted(eps, key=lambda ep: (ep.dist is None or ep.dist.name != "archzoo", ep.name))

    def _add_module(self, record: PluginRecord, module) -> None:
        self.records[record.name] = record
        ok, needed = self._guard(record, "failed to read ZOO_API", lambda: _api_of(module))
        if not ok:
            return
        if needed is not None and needed.split(".")[0] != API_VERSION:
            self._fail(record, f"needs zoo plugin API {needed[:40]}; "
                               f"this zoo provides {API_VERSION}")
            return
        twice = False
        try:  # pluggy reads the module's attributes: a hostile object may raise anything
            twice = self.pm.has_plugin(record.name) or self.pm.is_registered(module)
            if not twice:
                self.pm.register(module, name=record.name)
                self.pm.check_pending()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a wrong hook must not end zoo
            if self.pm.has_plugin(record.name):
                self.pm.unregister(name=record.name)
            reason = (one_line(exc) if isinstance(exc, pluggy.PluginValidationError)
                      else describe_exception(exc))
            self._fail(record, f"invalid hook: {reason}")
            return
        if twice:
            self._fail(record, "is registered twice")
            return
        record.hooks = sorted(
            caller.name for caller in self.pm.get_hookcallers(module) or ()
        )

    def _call_register_hooks(self) -> None:
        for kind, (hook_name, _) in KINDS.items():
            caller = getattr(self.pm.hook, hook_name)
            # get_hookimpls() is in registration order (pluggy *calls* them in reverse); the
            # first plugin to register a name keeps it.
            for impl in caller.get_hookimpls():
                record = self.records[impl.plugin_name]
                staged: list[tuple] = []

                def register(item, factory=None, aliases=(), _staged=staged):
                    _staged.append((item, factory, aliases))

                if impl.hookwrapper or getattr(impl, "wrapper", False):
                    self._fail(record, f"{hook_name} must be a plain hook, not a wrapper")
                    continue
                ok, _ = self._guard(record, f"raised in {hook_name}",
                                    lambda f=impl.function, r=register: f(r))
                if ok:  # a hook that raised registers nothing
                    for item, factory, aliases in staged:
                        self._register(kind, record, hook_name, item, factory, aliases)

    def _register(self, kind, record, hook_name, item, factory, aliases) -> None:
        registry = self.registries[kind]
        label = KINDS[kind][1]
        try:
            name, value, aliases = check_registration(kind, label, item, factory, aliases)
        except PluginError as exc:
            self._fail(record, f"{hook_name}: {exc}")
            return
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - e.g. a property of the item that raises
            self._fail(record, f"{hook_name} registered an invalid {label}: "
                               f"{describe_exception(exc)}")
            return
        problem = registry.conflict(name, aliases)
        if problem is not None:
            self._fail(record, f"{hook_name}: {problem}; refused")
            return
        from zoo.architecture import Architecture
        from zoo.data.dataset import DatasetInfo
        from zoo.training.metrics import Metric

        if isinstance(value, (Architecture, DatasetInfo, Metric)) and not value.plugin:
            value = dataclasses.replace(value, plugin=record.name)
        registry.add(name, value, record.name, aliases)
        record.registered.setdefault(kind, []).append(name)

    def add_commands(self, cli) -> None:
        """Let plugins add click commands; each plugin's additions are checked afterwards.

        A command whose name is taken (a zoo command, or one an earlier plugin added) is
        refused and the original kept; a plugin that raises adds nothing.
        """
        import click

        owners = {name: "zoo" for name in cli.commands}
        for impl in self.pm.hook.register_commands.get_hookimpls():
            record = self.records[impl.plugin_name]
            before = cli.commands
            cli.commands = dict(before)
            ok, _ = self._guard(record, "raised in register_commands",
                                lambda f=impl.function: f(cli))
            after, cli.commands = cli.commands, before
            if not ok or not isinstance(after, dict):
                continue
            for name in sorted(set(before) - set(after)):
                self._fail(record, f"register_commands removed the command {name!r}; kept")
            for name, command in after.items():
                if before.get(name) is command:
                    continue
                if name in before:
                    taken = "a zoo command" if owners[name] == "zoo" else \
                        f"added by plugin {owners[name]}"
                    self._fail(record, f"register_commands: command {name!r} is already "
                                       f"{taken}; refused")
                elif not isinstance(name, str) or not isinstance(command, click.Command):
                    self._fail(record, f"register_commands added {safe_repr(command)} as "
                                       f"{safe_repr(name)}; expected a click command")
                else:
                    before[name] = command
                    owners[name] = record.name
                    record.registered.setdefault("commands", []).append(name)

    def report_problems(self, stream=None) -> None:
        """One line per broken plugin on stderr, so a user knows why something is missing."""
        stream = stream or sys.stderr
        for record in self.problems:
            status = "partly loaded" if record.registered else "not loaded"
            print(f"zoo: plugin {one_line(record.name)} {status}: {record.error}", file=stream)


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` on one line, even for an exception whose ``str`` raises."""
    try:
        message = one_line(str(exc))
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001
        message = "(its message cannot be shown)"
    if len(message) > 300:
        message = message[:297] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _api_of(module) -> str | None:
    needed = getattr(module, "ZOO_API", None)
    return None if needed is None else one_line(str(needed))


def _version(ep) -> str | None:
    try:
        return ep.dist.version if ep.dist is not None else None
    except Exception:  # noqa: BLE001 - broken metadata: the plugin is still reported by name
        return None


def _distribution(ep) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {_version(ep)}" if dist is not None else ep.value


def _describe_record(record: PluginRecord) -> str:
    if record.builtin or record.module and record.module.startswith("zoo_plugins."):
        return f"zoo's built-in plugin {record.name}"
    version = f" {record.version}" if record.version else ""
    return f"the plugin {record.name}{version} ({record.module})"


_HOST: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide plugin host, loaded on first use."""
    global _HOST
    if _HOST is None:
        _HOST = PluginHost()
    return _HOST


def resolve_host(host: PluginHost | None = None) -> PluginHost:
    """``host`` if given, else the process-wide one.

    Every library entry point that needs a registry takes ``host=None`` and resolves it here
    once, then passes the resolved host down to everything it calls: a run set up with its own
    host never reads the process-wide one.
    """
    return host if host is not None else get_host()


def reset_host(host: PluginHost | None = None) -> None:
    """Forget the loaded plugins (tests), or install a given host."""
    global _HOST
    _HOST = host
