"""The code of a logged brainbench model (MLflow "models from code"; see brainbench.records.model).

MLflow copies this file into the model's folder and runs that copy at ``mlflow.pyfunc.load_model``: it names
the model object with ``mlflow.models.set_model``. So loading a model runs code from its folder: whoever can
change the folder can change what runs. ``brainbench.records.model.load_model`` checks the copy's SHA-256 (and
every other file's) against what the store recorded at log time before MLflow runs it. Only MLflow imports
this file, so mlflow at module level is fine here.
"""

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class EncoderModel(PythonModel):
    """voxels (n, n_voxels) float32 -> the fitted encoder's embeddings (n, *target_shape) float32.

    ``model_config={"device": "cpu", "precision": "fp32"}`` at load overrides where and how torch
    encoders run (default: the best device, the run's precision).
    """

    def load_context(self, context: Any) -> None:
        from brainbench.records.model import CHECKPOINT_ARTIFACT, SPEC_ARTIFACT, load_fitted

        spec = json.loads(Path(context.artifacts[SPEC_ARTIFACT]).read_text())
        config = dict(getattr(context, "model_config", None) or {})
        self.fitted = load_fitted(
            spec, Path(context.artifacts[CHECKPOINT_ARTIFACT]), device=str(config.get("device", "auto")),
            precision=config.get("precision"),
        )

    # np.ndarray: a hint MLflow accepts without building a schema from it (the logged signature says the shapes)
    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        if isinstance(model_input, dict):  # a named-tensor input: the one array it holds
            (model_input,) = model_input.values()
        if hasattr(model_input, "to_numpy"):  # a DataFrame (the serving JSON's columns): one row per trial
            model_input = model_input.to_numpy()
        voxels = np.asarray(model_input, dtype=np.float32)
        return self.fitted.predict(voxels)


mlflow.models.set_model(EncoderModel())
