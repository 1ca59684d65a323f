"""Which breed is this photo? `python -m dogbreeds predict IMAGE... [--model PATH_OR_URI]`.

Prints the three most likely breeds with their probabilities, one line per image, for any
format Pillow reads. An image that cannot be read gets one `error:` line and the others are
still predicted. Exit status: 0 when every image was predicted, 1 when any failed, 2 when the
model itself cannot be loaded (or the arguments are wrong).

`--model` is a checkpoint (`models/cnn-s50_14_6.pt`, no MLflow needed), an MLflow model folder,
or an MLflow URI (`models:/dogbreeds-cnn@champion`, `runs:/<run_id>/model`) looked up in the
study's store: `MLFLOW_TRACKING_URI`, else `mlflow.db` at the repository root. All three give
the same `serving.classifier.Classifier`, so they predict the same numbers.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from dogbreeds import DogbreedsError
from dogbreeds.data.images import UnreadableImage
from dogbreeds.serving.classifier import Classifier

DEFAULT_MODEL = "models:/dogbreeds-deformable@champion"
TOP_K = 3
OK, SOME_FAILED, NO_MODEL = 0, 1, 2


def load_classifier(model: str) -> Classifier:
    """A checkpoint file, an MLflow model folder or an MLflow URI -> Classifier."""
    path = Path(model)
    if path.suffix == ".pt" or path.is_file():
        return Classifier.from_checkpoint(path)
    from dogbreeds.serving import pyfunc

    return pyfunc.load(model).unwrap_python_model().classifier


def describe(image: Path, classifier: Classifier) -> str:
    """`path: breed p, breed p, breed p` for one image; raises for an unreadable one."""
    top = classifier.top(image.read_bytes(), TOP_K)
    return f"{image}: " + ", ".join(f"{breed} {prob:.3f}" for breed, prob in top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dogbreeds predict", description=__doc__.splitlines()[0]
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"checkpoint .pt, MLflow model folder or models:/ or runs:/ URI ({DEFAULT_MODEL})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:
        classifier = load_classifier(args.model)
    except DogbreedsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return NO_MODEL
    except Exception as exc:  # MLflow raises many kinds (unknown alias, no store, bad folder)
        print(f"error: cannot load model {args.model}: {exc}", file=sys.stderr)
        return NO_MODEL

    status = OK
    for image in args.images:
        try:
            print(describe(image, classifier), flush=True)
        except (UnreadableImage, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            print(f"{image}: error: {reason}", flush=True)
            status = SOME_FAILED
    return status


if __name__ == "__main__":
    sys.exit(main())
