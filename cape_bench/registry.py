"""Lazy registries: a name maps to a "module:attribute" string, imported on first use.

Lazy so that `cape-bench list` or a support-copy run never imports timm or
open_clip; aliases and "did you mean" so a typo costs one line, not a
traceback. Nothing here names a method: each method folder registers itself in
its light `__init__.py` (found by scanning the `cape_bench.methods` package),
and outside packages add methods through the entry-point group
`cape_bench.methods` (name -> "module:attribute").
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from cape_bench.errors import RegistryError


@dataclass
class _Entry:
    target: str
    aliases: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    loaded: Any = None


@dataclass
class Registry:
    """Names -> lazily imported objects, with aliases and suggestions."""

    kind: str
    package: str
    entry_point_group: str | None = None
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict)
    _discovered: bool = False

    def register(self, name: str, target: str, aliases: tuple[str, ...] = (), **info: Any) -> None:
        """Register `target` ("package.module:Attribute") under `name` and `aliases`.

        `info` is metadata shown by `cape-bench list` without importing the target
        (e.g. `support="text"`, `summary="..."`).
        """
        if name in self._entries or name in self._aliases:
            raise RegistryError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = _Entry(target, tuple(aliases), dict(info))
        for alias in aliases:
            self._aliases[alias] = name

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def target(self, name: str) -> str:
        """The "module:attribute" string behind a name."""
        return self._entries[self.canonical(name)].target

    def info(self, name: str) -> dict[str, Any]:
        return dict(self._entries[self.canonical(name)].info)

    def canonical(self, name: str) -> str:
        """Resolve an alias; raise with suggestions for an unknown name."""
        self._discover()
        key = name.strip().lower().replace("_", "-")
        for candidate in (name, key):
            if candidate in self._entries:
                return candidate
            if candidate in self._aliases:
                return self._aliases[candidate]
        known = list(self._entries) + list(self._aliases)
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise RegistryError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.names())})")

    def get(self, name: str) -> Any:
        """The registered object (imported on first use)."""
        entry = self._entries[self.canonical(name)]
        if entry.loaded is None:
            module_name, _, attribute = entry.target.partition(":")
            module = importlib.import_module(module_name)
            entry.loaded = getattr(module, attribute)
        return entry.loaded

    def aliases_of(self, name: str) -> tuple[str, ...]:
        return self._entries[self.canonical(name)].aliases

    def _discover(self) -> None:
        """Import the light `__init__` of every subpackage/module of `package` once."""
        if self._discovered:
            return
        self._discovered = True
        root = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(root.__path__, prefix=f"{self.package}."):
            if module.ispkg:
                importlib.import_module(module.name)
        if self.entry_point_group is not None:
            for point in entry_points(group=self.entry_point_group):
                if point.name not in self._entries:
                    self._entries[point.name] = _Entry(point.value, info={"source": point.dist.name if point.dist else "plugin"})


METHODS = Registry("method", package="cape_bench.methods", entry_point_group="cape_bench.methods")
PROTOCOLS = Registry("protocol", package="cape_bench.protocols")
