"""`python -m dogbreeds summary`: params and MACs of the three nets at a given alpha and side."""

from __future__ import annotations

import argparse

from dogbreeds.nets.models import MODELS, net_size


def summary_table(width_mult: float, resolution: int) -> str:
    """A Markdown table of every net's params and MACs at the given alpha and side."""
    lines = [
        f"| net | params | MACs (alpha={width_mult:g}, {resolution}x{resolution}) |",
        "|---|---:|---:|",
    ]
    for name, net in MODELS.items():
        params, macs = net_size(name, width_mult, resolution)
        lines.append(f"| {name} ({net.__name__}) | {params:,} | {macs / 1e6:,.1f} M |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dogbreeds summary", description="Params and MACs of the three nets."
    )
    parser.add_argument("--width-mult", type=float, default=1.0, help="MobileNet's alpha")
    parser.add_argument("--resolution", type=int, default=224, help="input side, 224 * rho")
    args = parser.parse_args(argv)
    if args.width_mult <= 0 or args.resolution < 1:
        parser.error("--width-mult must be > 0 and --resolution >= 1")
    print(summary_table(args.width_mult, args.resolution))


if __name__ == "__main__":
    main()
