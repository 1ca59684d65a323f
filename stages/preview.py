"""DVC stage preview: the same test images clean and deformed, metrics/deform_preview.png.

A stage of its own so that a change of figure style never reruns the deform stage.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dogbreeds.analysis.plots import save_preview
from dogbreeds.common.cli import run_stage
from dogbreeds.common.fs import atomic_path
from dogbreeds.data.prepared import load_prepared
from dogbreeds.params import load_params


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    params = load_params()
    deformed, clean = load_prepared(
        Path("data/prepared"), params.model.resolution, ("test", "test_clean")
    )
    with atomic_path("metrics/deform_preview.png") as tmp:
        save_preview(deformed, clean, params.deform.preview_images, tmp)


if __name__ == "__main__":
    run_stage(main)
