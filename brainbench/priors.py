"""The fifth plugin kind: a prior maps brain embeddings to the embedding space a gallery is searched in.

MindEye and Lite-Mind do not query LAION-5B with the contrastive brain embedding itself: a DALL-E-2-style
diffusion prior, trained on (brain embedding, CLIP image embedding) pairs of the training set, turns it into
a sample from the CLIP image-embedding distribution first. A plugin provides priors with the
``register_priors`` hook (:mod:`brainbench.hookspecs`); the LAION task picks one with ``--task-opt prior=NAME``.

Arrays crossing this interface are numpy float32, one row per item; torch stays inside the prior.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from brainbench.interfaces import Configurable, Reporter, TrainSettings
from brainbench.recipes import PriorQuickRecipe  # defined in the recipes leaf; imported from here too

#: The task option value that means "query with the brain embedding itself" (no prior).
NO_PRIOR = "none"


class FittedPrior(ABC):
    """A trained prior: brain embeddings in, predicted image embeddings out."""

    #: What the fit used (epochs, batch, schedule, final loss, seconds); the task records it with the run.
    recipe: Mapping[str, Any] = MappingProxyType({})
    n_parameters: int = 0

    @abstractmethod
    def sample(self, brain: np.ndarray, *, seed: int = 0, batch_size: int = 1024) -> np.ndarray:
        """(n, d_brain) float32 -> (n, d_image) float32 predicted image embeddings (L2-normalised)."""

    @abstractmethod
    def save(self, path: Path) -> Path:
        """Write a safely loadable file (safetensors, no pickled code); returns the file written."""


class Prior(Configurable, ABC):
    """Builds and trains a :class:`FittedPrior` from paired brain and image embeddings."""

    name: ClassVar[str] = "prior"

    def check_ready(self) -> None:
        """Called before any training: raise a BrainbenchError for what is missing (a library). Default: none."""
        return None

    def quick_recipe(self) -> PriorQuickRecipe | None:
        """The options for demo-scale data; None: the defaults are quick already."""
        return None

    @abstractmethod
    def fit(
        self, brain: np.ndarray, images: np.ndarray, settings: TrainSettings, reporter: Reporter
    ) -> FittedPrior:
        """Train on rows ``brain`` (n, d_brain) paired with ``images`` (n, d_image), both float32."""

    @abstractmethod
    def load(self, path: Path) -> FittedPrior:
        """A prior this class saved, read back safely."""
