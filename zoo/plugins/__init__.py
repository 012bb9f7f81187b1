"""The plugin host: pluggy, entry points of the group ``zoo``, and the registries they fill.

``host`` loads plugins and owns the registries; ``builtin`` holds zoo's own registrations of
datasets, losses, optimizers and stopping criteria, made through the same hooks a plugin uses.
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
]
