"""The code of the logged MLflow model (MLflow's "models from code").

`pyfunc.model_kwargs` logs this file as the model instead of a pickled `BreedClassifier`:
loading the model runs this reviewed code rather than unpickling an object, and MLflow stops
warning about CloudPickle at every logging. The `dogbreeds` package travels with the model as
code (`code_paths`), so the import works wherever the model is loaded.
"""

from mlflow.models import set_model

from dogbreeds.serving.pyfunc import BreedClassifier

set_model(BreedClassifier())
