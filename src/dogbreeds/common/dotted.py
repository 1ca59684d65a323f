"""Dotted keys into a nested params tree ("split.seed"), as `dvc exp run -S` spells them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def set_keys(tree: dict, updates: dict) -> dict:
    """Set dotted keys in a params tree in place, e.g. {"split.seed": 1}; returns the tree."""
    for key, value in updates.items():
        node = tree
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return tree


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: every leaf of a params tree under its dotted key (a
    leaf given as the tree comes back under the prefix)."""
    if not isinstance(tree, Mapping):
        return {prefix.rstrip("."): tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}{key}."))
    return flat
