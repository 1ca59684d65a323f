"""`python -m dogbreeds preset tiny`: a preset of params (presets/<name>.yaml) as `-S` options.

A preset is a YAML file of params.yaml's dotted keys and the values it gives them, read with
the project's YAML reader. The same overrides reach params two ways, with the same result
(tests/test_preset.py applies both): `apply` sets them in a params tree (the tests' projects,
`fixedcost`), `set_options` spells them as `dvc exp run -S key=value` options (`make smoke`):

    dvc exp run $(python -m dogbreeds preset tiny)

Every value is printed without spaces or quotes, so the shell's word splitting hands DVC one
option per key (`make smoke` also turns off globbing: `[synthetic]` is a glob to a shell).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from dogbreeds.common.dotted import set_keys
from dogbreeds.params import parse_yaml, read_yaml

ROOT = Path(__file__).resolve().parents[3]  # the repository: presets/, params.yaml
PRESETS = ROOT / "presets"
PLAIN = re.compile(r"[\w.:/+-]+")  # a string DVC's -S grammar (Hydra's) reads as itself


def names() -> list[str]:
    return sorted(path.stem for path in PRESETS.glob("*.yaml"))


def overrides(name: str) -> dict[str, Any]:
    """The preset's dotted keys and values, in the file's order."""
    path = PRESETS / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"no preset '{name}' ({path}); known: {', '.join(names())}")
    tree = read_yaml(path)
    if not isinstance(tree, dict) or not all(isinstance(key, str) for key in tree):
        raise ValueError(f"{path}: a preset is a mapping of dotted params keys to values")
    return tree


def apply(tree: dict, name: str) -> dict:
    """Set the preset's keys in a params tree (in place; returned). Every key must already be
    in the tree, as `dvc exp run -S` requires: a misspelt key is an error, not a new key."""
    keys = overrides(name)
    for key in keys:
        node = tree
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"preset '{name}': {key} is not a params key")
            node = node[part]
    return set_keys(tree, keys)


def spelt(value: Any) -> str:
    """A value as DVC's -S grammar reads it back: [1,2], {a:1}, true, null, 0.01, cpu."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(map(spelt, value)) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{spelt(k)}:{spelt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and PLAIN.fullmatch(value) and parse_yaml(value) == value:
        return value  # not one that would read back as a number, a bool or null
    raise ValueError(f"{value!r}: not a value a preset can pass as a -S option")


def set_options(name: str) -> list[str]:
    """The preset as `dvc exp run` options: ["-S", "key=value", ...]."""
    options = []
    for key, value in overrides(name).items():
        options += ["-S", f"{key}={spelt(value)}"]
    return options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dogbreeds preset",
        description="Print a preset of params (presets/<name>.yaml) as dvc exp run -S options.",
    )
    parser.add_argument("name", choices=names(), help="the preset")
    args = parser.parse_args(argv)
    print(" ".join(set_options(args.name)))
    return 0
