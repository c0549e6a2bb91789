"""Moved to brainbench.records.model. Kept for plugins written against brainbench <= 0.1, and for the models
they logged: a logged model's own code (its copy of ``mlflow_pyfunc.py``) imports
``CHECKPOINT_ARTIFACT``, ``SPEC_ARTIFACT`` and ``load_fitted`` from here when MLflow loads it."""

from brainbench.records.model import (
    CHECKPOINT_ARTIFACT,
    MODEL_NAME,
    MODEL_URI_TAG,
    SPEC_ARTIFACT,
    ModelIntegrityError,
    load_fitted,
    load_model,
    log_encoder_model,
    log_model_or_warn,
)

__all__ = ["CHECKPOINT_ARTIFACT", "MODEL_NAME", "MODEL_URI_TAG", "SPEC_ARTIFACT", "ModelIntegrityError",
           "load_fitted", "load_model", "log_encoder_model", "log_model_or_warn"]
