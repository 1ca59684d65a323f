"""A trained net as an MLflow pyfunc model: a DataFrame of image bytes in, breed probabilities out.

MLflow serves, registers and loads "pyfunc" models without knowing about torch: the model is
this class (built by `mlflow_model.py`, logged as code) plus the checkpoint as an artifact plus
the `dogbreeds` package as code, so
`mlflow.pyfunc.load_model(...)` and `mlflow models serve` work in any environment that has
the pinned requirements, without the repository.

Input: a DataFrame with one column `image` of encoded image bytes (any format Pillow reads).
Output: a DataFrame with one float column per breed, in the checkpoint's breed order.
Over REST, bytes travel base64-encoded: {"dataframe_split": {"columns": ["image"],
"data": [["<base64>"]]}}; MLflow decodes them because the signature says `binary`.

`log_model` logs it into a training's run; `load` loads one back from the study's store.
"""

from __future__ import annotations

import io
import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from dogbreeds.tracking import store  # noqa: F401  (sets MLflow's environment before mlflow loads)

# isort: split

import mlflow.pyfunc
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from PIL import Image

from dogbreeds.compat import mlflow_checks_skipped
from dogbreeds.serving.classifier import Classifier
from dogbreeds.tracking.runs import Run
from dogbreeds.tracking.store import global_tracking_uri, store_root, tracking_uri

log = logging.getLogger(__name__)

MODEL_NAME = "model"  # the logged model's name inside each run: runs:/<run_id>/model
IMAGE_COLUMN = "image"
CHECKPOINT_ARTIFACT = "checkpoint"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # dogbreeds/, shipped with the model as code
MODEL_CODE = PACKAGE_DIR / "serving" / "mlflow_model.py"  # the model's definition, logged as code
# What the model needs at load time; pinned to the versions it was logged with.
REQUIREMENTS = ("torch", "torchvision", "pillow", "numpy", "pandas", "mlflow")


class BreedClassifier(mlflow.pyfunc.PythonModel):
    """The pyfunc wrapper around `serving.classifier.Classifier`."""

    def load_context(self, context) -> None:
        self.classifier = Classifier.from_checkpoint(Path(context.artifacts[CHECKPOINT_ARTIFACT]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """One row of breed probabilities per row of `model_input[IMAGE_COLUMN]`.

        The DataFrame hint tells MLflow to take the input schema from the logged signature
        (it infers none from this type) instead of warning at every logging that hints are
        missing."""
        if IMAGE_COLUMN not in model_input:
            raise ValueError(f"the input needs a column '{IMAGE_COLUMN}' of encoded image bytes")
        images = [bytes(data) for data in model_input[IMAGE_COLUMN]]
        probs = self.classifier.probabilities(images)
        return pd.DataFrame(probs.double().numpy(), columns=self.classifier.breeds)


def signature(breeds: list[str]) -> ModelSignature:
    """`image` (binary) in, one double per breed out."""
    outputs = Schema([ColSpec("double", breed) for breed in breeds])
    return ModelSignature(inputs=Schema([ColSpec("binary", IMAGE_COLUMN)]), outputs=outputs)


def example_image(classifier: Classifier) -> bytes:
    """A PNG at the net's resolution in the training set's mean colour: a valid, tiny input."""
    colour = tuple(round(255 * m) for m in classifier.mean)
    image = Image.new("RGB", (classifier.resolution, classifier.resolution), colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def input_example(classifier: Classifier) -> pd.DataFrame:
    return pd.DataFrame({IMAGE_COLUMN: [example_image(classifier)]})


def pip_requirements() -> list[str]:
    """Exact pins of what loading the model imports (MLflow would otherwise infer them by
    loading the model in a subprocess, which costs a torch import per training)."""
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            log.warning("%s is not installed: left out of the model's requirements", name)
    return pins


def model_kwargs(checkpoint: Path) -> dict:
    """Everything `mlflow.pyfunc.log_model` needs besides the name, for one checkpoint."""
    classifier = Classifier.from_checkpoint(checkpoint)
    return {
        "python_model": str(MODEL_CODE),  # models from code: no pickled object
        "artifacts": {CHECKPOINT_ARTIFACT: str(checkpoint)},
        "code_paths": [str(PACKAGE_DIR)],
        "signature": signature(classifier.breeds),
        "input_example": input_example(classifier),
        "pip_requirements": pip_requirements(),
    }


def log_model(run: Run, checkpoint: Path) -> str:
    """Log a checkpoint as the run's MLflow model (`runs:/<run_id>/model`); return its URI.

    A pyfunc with preprocessing, signature and input example (above). MLflow's model logging
    reads the global tracking URI (see `global_tracking_uri`), and would create the logged
    model in the globally active experiment, so it is created here, in the run's. Two of
    MLflow's checks are left out (`compat.mlflow_checks_skipped`).
    """
    experiment_id = run.client.get_run(run.run_id).info.experiment_id
    model = run.client.create_logged_model(
        experiment_id, name=MODEL_NAME, source_run_id=run.run_id
    )  # created here, in the run's experiment: MLflow would pick the globally active one
    with global_tracking_uri(run.client.tracking_uri), mlflow_checks_skipped():
        info = mlflow.models.Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=run.run_id,
            model_id=model.model_id,
            **model_kwargs(Path(checkpoint)),
        )
    log.info("logged %s as MLflow model %s", checkpoint, info.model_uri)
    return info.model_uri


def load(model: str, root: Path | None = None):
    """Load an MLflow model folder or URI (`models:/name@alias`, `runs:/id/model`) from the
    study's store (see `tracking_uri`) as a pyfunc."""
    with global_tracking_uri(tracking_uri(root or store_root())):
        return mlflow.pyfunc.load_model(model)
