"""A small named registry (timm style) for networks, weight sources and weight presets.

A registry maps a name such as ``"unet"`` to an object (a builder function, a
preset record). Registering a name twice is refused: a plug-in can never replace
a built-in network silently. Looking up an unknown name raises
:class:`~medimg.errors.ConfigError` listing the names that exist.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from medimg.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to objects, with refusal to overwrite and helpful lookup errors.

    Args:
        kind: What the registry holds, used in messages (``"network"``, ``"weight preset"``).

    Example:
        >>> networks = Registry("network")
        >>> @networks.register("tiny")
        ... def build_tiny(**params):
        ...     return params
        >>> networks.get("tiny") is build_tiny
        True
        >>> networks.names()
        ['tiny']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict] = {}

    def register(self, name: str, obj: T | None = None, **meta: object) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator.

        Args:
            name: Unique name (case-sensitive, as users write it in a workflow).
            obj: The object to register; omitted when used as a decorator.
            **meta: Free-form facts about the entry (for example ``task="segmentation"``).

        Returns:
            The registered object (or a decorator that registers and returns it).

        Raises:
            ConfigError: When ``name`` is already taken.

        Example:
            >>> presets = Registry("preset")
            >>> presets.register("a", {"url": "https://example.org/a.safetensors"})
            {'url': 'https://example.org/a.safetensors'}
        """

        def _add(item: T) -> T:
            if not name or not isinstance(name, str):
                raise ConfigError(f"{self.kind} name must be a non-empty string, got {name!r}")
            if name in self._items:
                raise ConfigError(
                    f"{self.kind} {name!r} is already registered ({self._describe(name)}); "
                    f"registries never overwrite a name, choose another one"
                )
            self._items[name] = item
            self._meta[name] = dict(meta)
            return item

        if obj is None:
            return _add
        return _add(obj)

    def _describe(self, name: str) -> str:
        item = self._items[name]
        module = getattr(item, "__module__", None)
        qualname = getattr(item, "__qualname__", None)
        return f"by {module}.{qualname}" if module and qualname else f"as {type(item).__name__}"

    def get(self, name: str) -> T:
        """Return the object registered as ``name``.

        Raises:
            ConfigError: Naming the unknown entry and listing the known ones.

        Example:
            >>> r = Registry("network"); _ = r.register("a", 1); r.get("a")
            1
        """
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; expected one of: {', '.join(self.names()) or '(none)'}"
            ) from None

    def meta(self, name: str) -> dict:
        """Return the metadata given at registration (a copy)."""
        self.get(name)
        return dict(self._meta[name])

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._items)

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its object (for tests and plug-in reloads)."""
        item = self.get(name)
        del self._items[name]
        del self._meta[name]
        return item

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"
