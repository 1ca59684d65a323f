"""Dotted keys into a nested params tree ("split.seed"), as `dvc exp run -S` spells them."""

from __future__ import annotations


def set_keys(tree: dict, updates: dict) -> dict:
    """Set dotted keys in a params tree in place, e.g. {"split.seed": 1}; returns the tree."""
    for key, value in updates.items():
        node = tree
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return tree
