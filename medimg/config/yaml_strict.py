"""YAML read strictly: no duplicate keys, no alias bombs, no oversized files, no Python tags.

PyYAML's ``safe_load`` keeps the last of two equal keys without a word (a workflow that
sets ``lr`` twice silently uses the second) and builds aliases by reference, so a small
file whose aliases nest ("billion laughs") expands to billions of nodes as soon as it is
copied, hashed or validated. :class:`StrictLoader` (a ``yaml.SafeLoader``) refuses both
before any value is built: a duplicate key names itself and both lines; a document whose
aliases would expand beyond :data:`MAX_EXPANDED_NODES` nodes, or that refers to itself,
is refused after composing, which takes time and memory proportional to the file.

Example:
    >>> load_yaml_text("a: 1\\nb: [1, 2]\\n", "x.yaml")
    {'a': 1, 'b': [1, 2]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from medimg.errors import ConfigError

MAX_EXPANDED_NODES = 100_000
"""Nodes a document may have once every alias is expanded (a large workflow has a few hundred)."""
MAX_YAML_BYTES = 4 * 1024 * 1024
"""Largest YAML file medimg reads (workflows and model records are a few KiB)."""
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Refused(yaml.YAMLError):
    """A document :class:`StrictLoader` will not build (the message says why)."""


def expanded_size(root: Node, limit: int = MAX_EXPANDED_NODES) -> int:
    """Number of nodes of ``root`` with every alias expanded, stopping early past ``limit``.

    Shared nodes (aliases) are counted once per use, from a per-node memo, so the cost is
    proportional to the composed document, not to its expansion.

    Raises:
        _Refused: the expansion exceeds ``limit``, or a node contains itself.
    """
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if key in active:
            raise _Refused(
                f"line {node.start_mark.line + 1}: an alias refers to its own anchor (recursive YAML)"
            )
        active.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            children: list[Node] = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                raise _Refused(
                    f"line {node.start_mark.line + 1}: aliases expand to more than {limit:,} values "
                    f"(an alias bomb?); workflows need no more than a few hundred"
                )
        active.discard(key)
        memo[key] = total
        return total

    return size(root)


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys and alias bombs.

    Example:
        >>> yaml.load("a: 1\\na: 2\\n", Loader=StrictLoader)
        Traceback (most recent call last):
        ...
        medimg.config.yaml_strict._Refused: line 2: duplicate key 'a' (first set on line 1)
    """

    def compose_document(self) -> Node | None:  # type: ignore[override]
        node = super().compose_document()
        if node is not None:
            expanded_size(node)
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:  # type: ignore[override]
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key; SafeConstructor reports it
                continue
            if first is not None:
                raise _Refused(f"line {line}: duplicate key {key!r} (first set on line {first})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str, source: str) -> Any:
    """Parse YAML text with :class:`StrictLoader`; errors are :class:`ConfigError` naming ``source``.

    Example:
        >>> load_yaml_text("[1, 2]", "--set x")
        [1, 2]
    """
    try:
        return yaml.load(text, Loader=StrictLoader)  # StrictLoader is a SafeLoader
    except _Refused as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply") from None


def load_yaml_file(path: str | Path, what: str = "YAML file") -> Any:
    """Read and parse a YAML file strictly (size-checked first).

    Example:
        >>> load_yaml_file("workflows/quickstart_seg.yaml")["task"]  # doctest: +SKIP
        'segmentation'
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {what} not found")
    size = p.stat().st_size
    if size > MAX_YAML_BYTES:
        raise ConfigError(
            f"{p}: {what} is {size / 2**20:.1f} MiB; refusing YAML over {MAX_YAML_BYTES // 2**20} MiB"
        )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: {what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return load_yaml_text(text, str(p))
