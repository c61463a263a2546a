"""Finding plugins through entry points; built-ins arrive through the same groups.

A plugin that fails to load (an import error, a descriptor for a newer plugin API) or a name
that two distributions claim never breaks the other plugins: it is logged as a warning here,
and becomes an error only where a spec uses the name (``Registry.get``), at that spec line.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field, fields
from functools import lru_cache
from importlib.metadata import entry_points

from kpipe.api import API_VERSION, MIN_API_VERSION

__all__ = ["GROUPS", "Registry", "registry", "PluginLoadError", "capability_flags"]

log = logging.getLogger("kpipe.plugins")

GROUPS = {"sink": "kpipe.sinks", "deserializer": "kpipe.deserializers", "transform": "kpipe.transforms"}


def capability_flags(caps) -> list[str]:
    """What a plugin's ``Capabilities`` promise, as listed by ``kpipe plugins`` and the reference
    docs: the true flags by name, and a number only where it differs from the default (so a
    sink that keeps ``max_in_flight`` at 1 lists nothing for it)."""
    if caps is None:
        return []
    defaults = {f.name: f.default for f in fields(caps)}
    return [k if v is True else f"{k}={v}" for k, v in vars(caps).items()
            if v and v != defaults.get(k)]


class PluginLoadError(Exception):
    pass


@dataclass
class Registry:
    plugins: dict  # kind -> {name: descriptor}
    broken: dict   # kind -> {name: "distribution: error"}
    dists: dict    # (kind, name) -> (distribution, version)
    conflicts: dict = field(default_factory=dict)  # (kind, name) -> [distribution, ...], two or more

    def names(self, kind: str) -> list[str]:
        return sorted(self.plugins.get(kind, {}))

    def get(self, kind: str, name: str):
        """The descriptor, or None when no plugin of that name is installed; ``PluginLoadError``
        when one is installed but cannot be used (it failed to load, or two distributions claim it)."""
        found = self.plugins.get(kind, {}).get(name)
        if found is None and name in self.broken.get(kind, {}):
            raise PluginLoadError(f"{kind} plugin {name!r} is installed but cannot be used: "
                                  f"{self.broken[kind][name]}")
        return found


def _check_api(plugin, dist: str) -> None:
    wanted = getattr(plugin, "api_version", None)
    if not isinstance(wanted, int):
        raise TypeError(f"the entry point is a {type(plugin).__name__}, not a kpipe.api plugin descriptor")
    if wanted > API_VERSION:
        raise ImportError(f"built for kpipe plugin API {wanted}, this kpipe has API {API_VERSION}: "
                          f"upgrade kpipe, or install a release of {dist} for API {API_VERSION}")
    if wanted < MIN_API_VERSION:
        raise ImportError(f"built for kpipe plugin API {wanted}, which this kpipe no longer accepts "
                          f"(oldest: {MIN_API_VERSION}): upgrade {dist}")


@lru_cache(maxsize=1)
def registry() -> Registry:
    plugins: dict = {k: {} for k in GROUPS}
    broken: dict = {k: {} for k in GROUPS}
    dists: dict = {}
    conflicts: dict = {}
    for kind, group in GROUPS.items():
        claims: dict = defaultdict(dict)  # name -> {distribution: (entry point, version)}
        for ep in entry_points(group=group):
            dist = getattr(ep, "dist", None)
            dist_name, version = (dist.name, dist.version) if dist is not None else ("?", "?")
            claims[ep.name].setdefault(dist_name, (ep, version))
        for name, by_dist in claims.items():
            if len(by_dist) > 1:
                # Two distributions claiming one name: refuse to guess which one runs.
                owners = sorted(by_dist)
                conflicts[(kind, name)] = owners
                broken[kind][name] = f"the name is claimed by {len(owners)} distributions: " \
                                     f"{', '.join(owners)}; uninstall all but one"
                log.warning("%s plugin name %r is claimed by %s; a spec that uses it fails",
                            kind, name, " and ".join(owners))
                continue
            ((dist_name, (ep, version)),) = by_dist.items()
            try:
                plugin = ep.load()
                _check_api(plugin, dist_name)
            except Exception as exc:  # a broken plugin must not break the others
                broken[kind][name] = f"{dist_name} {version}: {type(exc).__name__}: {exc}"
                log.warning("%s plugin %r from %s %s failed to load (a spec that uses it fails): "
                            "%s: %s", kind, name, dist_name, version, type(exc).__name__, exc)
                continue
            plugins[kind][name] = plugin
            dists[(kind, name)] = (dist_name, version)
    if not plugins["sink"] and not broken["sink"]:
        raise PluginLoadError("no sinks are registered: is kpipe installed? "
                              "run: pip install -e .")
    return Registry(plugins, broken, dists, conflicts)
