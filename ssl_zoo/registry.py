"""One registry type for objectives, datasets and backbones.

Entries come from Python entry points (``ssl_zoo.objectives`` etc.): the
built-ins are declared in ssl_zoo's own pyproject, plugins in theirs, so there
is one path for everyone. ``register`` adds entries at run time (tests, notebooks).
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Callable, Iterator

from ssl_zoo.errors import UserError


class Registry:
    def __init__(self, kind: str, group: str):
        self.kind = kind  # "objective", used in messages
        self.group = group  # entry-point group
        self._loaded: dict[str, Any] = {}
        self._extra: dict[str, Any] = {}

    def _entry_points(self) -> dict[str, Any]:
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        return sorted(set(self._entry_points()) | set(self._extra))

    def register(self, name: str, obj: Any = None) -> Callable | Any:
        """``registry.register("x", cls)`` or as a decorator ``@registry.register("x")``."""
        if obj is None:
            return lambda o: self.register(name, o)
        self._extra[name] = obj
        return obj

    def get(self, name: str) -> Any:
        if name in self._extra:
            return self._extra[name]
        if name not in self._loaded:
            eps = self._entry_points()
            if name not in eps:
                raise UserError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names()) or 'none'}")
            self._loaded[name] = eps[name].load()
        return self._loaded[name]

    def source(self, name: str) -> str:
        """Which distribution provides ``name`` (for `ssl-zoo list`)."""
        ep = self._entry_points().get(name)
        if ep is None:
            return "runtime"
        return ep.dist.name if ep.dist is not None else ep.value

    def __contains__(self, name: str) -> bool:
        return name in self._extra or name in self._entry_points()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


OBJECTIVES = Registry("objective", "ssl_zoo.objectives")
DATASETS = Registry("dataset", "ssl_zoo.datasets")
BACKBONES = Registry("backbone", "ssl_zoo.backbones")
