"""Plugin loading: pluggy, entry points of the group ``zoo``, and the registries they fill.

Each plugin is loaded on its own. A plugin that fails to import, uses a hook name that does not
exist, raises while registering or registers a name that is taken is recorded with its name and
the reason, and the rest of zoo works on. ``ZOO_STRICT_PLUGINS=1`` (or ``strict=True``) turns
each of those into a ``PluginError``. ``ZOO_LOAD_PLUGINS=a,b`` loads only the named plugins.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from zoo import API_VERSION, hookspecs
from zoo.errors import ConfigError, PluginError

ENTRY_POINT_GROUP = "zoo"

# Core components (losses, optimizers, criteria, datasets) are plugins too, registered before
# the entry points so a third party cannot shadow them by accident.
BUILTIN_MODULES = (
    "zoo.plugins.builtin.datasets",
    "zoo.plugins.builtin.losses",
    "zoo.plugins.builtin.optimizers",
    "zoo.plugins.builtin.criteria",
)

KINDS = {
    # registry kind: (hook name, singular label used in messages)
    "architectures": ("register_architectures", "architecture"),
    "datasets": ("register_datasets", "dataset"),
    "losses": ("register_losses", "loss"),
    "optimizers": ("register_optimizers", "optimizer"),
    "criteria": ("register_stopping_criteria", "stopping criterion"),
}


class Registry:
    """A table of named things of one kind. The host owns names, aliases and duplicates."""

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

    def add(self, name: str, item, owner: str, aliases=()) -> None:
        self._items[name] = item
        self._owners[name] = owner
        for alias in aliases:
            self._aliases[alias] = name

    def get(self, name: str):
        canonical = self._aliases.get(name, name)
        if canonical not in self._items:
            installed = ", ".join(self.names()) or "none"
            raise ConfigError(f"unknown {self.label} {name!r}; installed: {installed}")
        return self._items[canonical]

    def owner(self, name: str) -> str:
        return self._owners[self._aliases.get(name, name)]

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
    def problems(self) -> list[PluginRecord]:
        return [r for r in self.records.values() if r.error]

    # -- loading -----------------------------------------------------------------------------
    def _fail(self, record: PluginRecord, reason: str) -> None:
        record.error = reason if record.error is None else f"{record.error}; {reason}"
        if self.strict:
            raise PluginError(f"plugin {record.name}: {reason}")

    def _load(self) -> None:
        for module_name in BUILTIN_MODULES:
            module = importlib.import_module(module_name)
            self._add_module(PluginRecord(module_name, builtin=True, module=module_name), module)
        for ep in self._entry_points():
            if self.only is not None and ep.name not in self.only:
                continue
            record = PluginRecord(ep.name, module=ep.value)
            record.version = ep.dist.version if ep.dist is not None else None
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not take zoo down
                self.records[ep.name] = record
                self._fail(record, f"failed to import: {type(exc).__name__}: {exc}")
                continue
            self._add_module(record, module)
        self._call_register_hooks()

    def _entry_points(self):
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
        # zoo's own distribution first, so built-in names win over a third party's duplicates.
        return sorted(eps, key=lambda ep: (ep.dist is None or ep.dist.name != "archzoo", ep.name))

    def _add_module(self, record: PluginRecord, module) -> None:
        self.records[record.name] = record
        needed = getattr(module, "ZOO_API", None)
        if needed is not None and str(needed).split(".")[0] != API_VERSION:
            self._fail(record, f"needs zoo plugin API {needed}; this zoo provides {API_VERSION}")
            return
        if record.name in self.pm.list_name_plugin() or self.pm.is_registered(module):
            self._fail(record, "is registered twice")
            return
        try:
            self.pm.register(module, name=record.name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=record.name)
            self._fail(record, f"invalid hook: {exc}")
            return
        record.hooks = sorted(
            caller.name for caller in self.pm.get_hookcallers(module) or ()
        )

    def _call_register_hooks(self) -> None:
        for kind, (hook_name, label) in KINDS.items():
            registry = self.registries[kind]
            caller = getattr(self.pm.hook, hook_name)
            # get_hookimpls() is in registration order (pluggy *calls* them in reverse); the
            # first plugin to register a name keeps it.
            for impl in caller.get_hookimpls():
                record = self.records[impl.plugin_name]
                staged: list[tuple] = []

                def register(item, factory=None, aliases=(), _staged=staged):
                    _staged.append((item, factory, tuple(aliases)))

                try:
                    impl.function(register)
                except Exception as exc:
                    self._fail(record, f"raised in {hook_name}: {type(exc).__name__}: {exc}")
                    continue
                for item, factory, aliases in staged:
                    name, value = (item, factory) if isinstance(item, str) else (item.name, item)
                    if value is None or not isinstance(name, str) or not name:
                        self._fail(record, f"{hook_name} registered an invalid {label}: {item!r}")
                        continue
                    owner = registry.taken_by(name)
                    if owner is not None:
                        self._fail(record, f"{label} {name!r} is already registered by {owner}")
                        continue
                    if hasattr(value, "plugin") and not value.plugin:
                        value = _with_plugin(value, record.name)
                    registry.add(name, value, record.name, aliases)
                    record.registered.setdefault(kind, []).append(name)

    def add_commands(self, cli) -> None:
        """Let plugins add click commands; a plugin that raises is reported, not fatal."""
        for impl in self.pm.hook.register_commands.get_hookimpls():
            try:
                impl.function(cli)
            except Exception as exc:
                self._fail(self.records[impl.plugin_name],
                           f"raised in register_commands: {type(exc).__name__}: {exc}")

    def report_problems(self, stream=None) -> None:
        """One line per broken plugin on stderr, so a user knows why something is missing."""
        stream = stream or sys.stderr
        for record in self.problems:
            status = "partly loaded" if record.registered else "not loaded"
            print(f"zoo: plugin {record.name} {status}: {record.error}", file=stream)


def _with_plugin(value, plugin_name):
    import dataclasses

    if dataclasses.is_dataclass(value):
        return dataclasses.replace(value, plugin=plugin_name)
    return value


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
