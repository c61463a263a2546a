"""Finding plugins through entry points; built-ins arrive through the same groups."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points

__all__ = ["GROUPS", "Registry", "registry", "PluginLoadError"]

log = logging.getLogger("kpipe.plugins")

GROUPS = {"sink": "kpipe.sinks", "deserializer": "kpipe.deserializers", "transform": "kpipe.transforms"}


class PluginLoadError(Exception):
    pass


@dataclass
class Registry:
    plugins: dict  # kind -> {name: descriptor}
    broken: dict   # kind -> {name: "distribution: error"}
    dists: dict    # (kind, name) -> (distribution, version)

    def names(self, kind: str) -> list[str]:
        return sorted(self.plugins.get(kind, {}))

    def get(self, kind: str, name: str):
        """The descriptor, or None when no plugin of that name is installed."""
        found = self.plugins.get(kind, {}).get(name)
        if found is None and name in self.broken.get(kind, {}):
            raise PluginLoadError(f"{kind} plugin {name!r} is installed but failed to load: "
                                  f"{self.broken[kind][name]}")
        return found


@lru_cache(maxsize=1)
def registry() -> Registry:
    plugins: dict = {k: {} for k in GROUPS}
    broken: dict = {k: {} for k in GROUPS}
    dists: dict = {}
    for kind, group in GROUPS.items():
        for ep in entry_points(group=group):
            dist = getattr(ep, "dist", None)
            origin = (dist.name, dist.version) if dist is not None else ("?", "?")
            if ep.name in plugins[kind] and dists[(kind, ep.name)][0] != origin[0]:
                # Two distributions claiming one name: refuse to guess which one runs.
                broken[kind][ep.name] = (f"claimed by both {dists[(kind, ep.name)][0]} and {origin[0]}")
                del plugins[kind][ep.name]
                continue
            try:
                plugins[kind][ep.name] = ep.load()
                dists[(kind, ep.name)] = origin
            except Exception as exc:  # a broken plugin must not break the others
                broken[kind][ep.name] = f"{origin[0]}: {type(exc).__name__}: {exc}"
                log.warning("%s plugin %r from %s failed to load: %s", kind, ep.name, origin[0], exc)
    if not plugins["sink"] and not broken["sink"]:
        raise PluginLoadError("no sinks are registered: is kpipe installed? "
                              "run: pip install -e .")
    return Registry(plugins, broken, dists)
