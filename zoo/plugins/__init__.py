"""The plugin host: pluggy, entry points of the group ``zoo``, and the registries they fill.

``host`` loads plugins and owns the registries; ``builtin`` holds zoo's own registrations of
datasets, losses, optimizers and stopping criteria, made through the same hooks a plugin uses.

The host is passed, not looked up: library functions take ``host=None`` and resolve it once with
``resolve_host`` (the process-wide ``get_host()`` when none is given), then hand it down. Only the
CLI, the outermost caller, uses ``get_host()`` directly.
"""

from zoo.plugins.host import (
    BUILTIN_MODULES,
    ENTRY_POINT_GROUP,
    KINDS,
    PluginHost,
    PluginRecord,
    Registry,
    get_host,
    reset_host,
    resolve_host,
)

__all__ = [
    "BUILTIN_MODULES",
    "ENTRY_POINT_GROUP",
    "KINDS",
    "PluginHost",
    "PluginRecord",
    "Registry",
    "get_host",
    "reset_host",
    "resolve_host",
]
