"""Image metrics of retrieved candidates: PixCorr and SSIM (no weights), and the feature-network metrics
(AlexNet(2)/(5), Inception, EfficientNet-B1, SwAV) computed only from weight files already on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainbench.errors import DataError

#: SwAV's ResNet-50 file as torch.hub saves it (facebookresearch/swav); torchvision's come from its enums.
SWAV_WEIGHTS = "swav_800ep_pretrain.pth.tar"


def feature_weight_files() -> dict[str, str]:
    from torchvision.models import AlexNet_Weights, EfficientNet_B1_Weights, Inception_V3_Weights

    files = {
        "alexnet": AlexNet_Weights.IMAGENET1K_V1.url,
        "inception": Inception_V3_Weights.IMAGENET1K_V1.url,
        "efficientnet": EfficientNet_B1_Weights.IMAGENET1K_V1.url,
    }
    return {**{name: url.rsplit("/", 1)[-1] for name, url in files.items()}, "swav": SWAV_WEIGHTS}


def missing_feature_weights() -> list[str]:
    """Names of the feature-metric networks whose weights are not on disk (no download is attempted)."""
    folder = checkpoint_dir()
    return [name for name, file in feature_weight_files().items() if not (folder / file).exists()]


def _grey(images: np.ndarray) -> np.ndarray:
    """(n, 3, H, W) in [0, 1] -> (n, H, W) luminance."""
    return np.tensordot(np.array([0.299, 0.587, 0.114], dtype=np.float32), images, axes=([0], [1]))


def pixcorr(candidates: np.ndarray, truths: np.ndarray) -> float:
    """Mean Pearson correlation of the flattened pixels of each pair (same size, (n, 3, H, W))."""
    a = candidates.reshape(len(candidates), -1).astype(np.float64)
    b = truths.reshape(len(truths), -1).astype(np.float64)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    corr = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(corr.mean())


def ssim(candidates: np.ndarray, truths: np.ndarray, sigma: float = 1.5) -> float:
    """Mean structural similarity of the grey-scale pairs (Gaussian window, the usual constants)."""
    from scipy.ndimage import gaussian_filter

    c1, c2 = 0.01**2, 0.03**2
    scores = []
    for x, y in zip(_grey(candidates).astype(np.float64), _grey(truths).astype(np.float64), strict=True):
        mx, my = gaussian_filter(x, sigma), gaussian_filter(y, sigma)
        vx = gaussian_filter(x * x, sigma) - mx * mx
        vy = gaussian_filter(y * y, sigma) - my * my
        cov = gaussian_filter(x * y, sigma) - mx * my
        index = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        scores.append(index.mean())
    return float(np.mean(scores))


# ------------------------------------------------------------------------------------ feature metrics
#: ImageNet normalisation all five networks were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: AlexNet ``features`` indices read out: 4 is the ReLU after the 2nd conv (AlexNet(2)), 11 the ReLU after
#: the 5th conv (AlexNet(5)), the layers the MindEye/Brain-Diffuser evaluations name.
ALEXNET_LAYERS = {"alexnet2_2way": 4, "alexnet5_2way": 11}


@dataclass(frozen=True)
class FeatureMetric:
    """One feature-network image metric: its name, the network (weight file) and how it is scored."""

    name: str
    network: str
    kind: str  # "2way" (higher is better, chance 0.5) or "distance" (1 - Pearson r, lower is better)
    description: str

    @property
    def higher_is_better(self) -> bool:
        return self.kind == "2way"


FEATURE_METRICS = (
    FeatureMetric("alexnet2_2way", "alexnet", "2way", "2-way identification on AlexNet layer 2 features"),
    FeatureMetric("alexnet5_2way", "alexnet", "2way", "2-way identification on AlexNet layer 5 features"),
    FeatureMetric("inception_2way", "inception", "2way", "2-way identification on InceptionV3 pooled features"),
    FeatureMetric(
        "efficientnet_distance", "efficientnet", "distance", "correlation distance of EfficientNet-B1 features"
    ),
    FeatureMetric("swav_distance", "swav", "distance", "correlation distance of SwAV ResNet-50 features"),
)

#: Input side per network: AlexNet, EfficientNet-B1 and ResNet-50 at 224, InceptionV3 at 299.
INPUT_SIZE = {"alexnet": 224, "inception": 299, "efficientnet": 224, "swav": 224}


def checkpoint_dir() -> Path:
    """torch.hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints`` when TORCH_HOME is set)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _read_state_dict(path: Path) -> dict[str, Any]:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated download or a pickle that is not plain tensors
        raise DataError(f"{path}: not a readable weights file ({error})") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # SwAV's training checkpoints nest it
    if not isinstance(state, dict):
        raise DataError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    # DistributedDataParallel saves parameters as "module.<name>".
    return {key.removeprefix("module."): value for key, value in state.items()}


def _load(model: Any, state: dict[str, Any], path: Path, optional: str | None = None) -> Any:
    """Load ``state`` into ``model``; keys under ``optional`` may be missing, any other gap is an error."""
    result = model.load_state_dict(state, strict=optional is None)
    if optional is not None:
        missing = [key for key in result.missing_keys if not key.startswith(optional)]
        if missing:
            raise DataError(f"{path}: weights for {len(missing)} layers missing, e.g. {missing[:3]}")
    return model.eval()


def load_network(network: str, folder: Path | None = None) -> Any:
    """The feature network ``network`` with its weights from the local checkpoint folder (never downloaded).

    The returned module maps ImageNet-normalised (n, 3, s, s) images to the features scored: AlexNet's
    ``features`` trunk (layers read out by :func:`network_features`), else the pooled feature vector.
    """
    import torch
    from torchvision import models

    if network not in INPUT_SIZE:
        raise ValueError(f"unknown feature network {network!r}; known: {', '.join(INPUT_SIZE)}")
    path = (folder or checkpoint_dir()) / feature_weight_files()[network]
    if not path.exists():
        raise DataError(f"{path}: {network} weights not on disk (they are never downloaded)")
    state = _read_state_dict(path)
    try:
        if network == "alexnet":
            model = _load(models.alexnet(weights=None), state, path)
            return model.features
        if network == "inception":
            # The published weights expect transform_input=True (torchvision sets it with its weights enum).
            model = models.inception_v3(weights=None, aux_logits=False, transform_input=True, init_weights=False)
            state = {key: value for key, value in state.items() if not key.startswith("AuxLogits.")}
            model = _load(model, state, path)
            model.fc = torch.nn.Identity()
            return model
        if network == "efficientnet":
            model = _load(models.efficientnet_b1(weights=None), state, path)
            model.classifier = torch.nn.Identity()
            return model
        if network == "swav":
            # SwAV's checkpoint has the trunk only (plus projection head / prototypes, ignored): no fc.
            model = models.resnet50(weights=None)
            model.fc = torch.nn.Identity()
            return _load(model, state, path, optional="fc.")
    except RuntimeError as error:  # shape mismatches and unexpected keys from load_state_dict
        raise DataError(f"{path}: not {network} weights ({error})") from error
    raise AssertionError(network)  # every name in INPUT_SIZE is handled above


def _prepare(images: np.ndarray, size: int) -> Any:
    """(n, 3, H, W) in [0, 1] -> ImageNet-normalised float tensor resized to (n, 3, size, size)."""
    import torch
    import torch.nn.functional as F

    batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if batch.shape[-2:] != (size, size):
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (batch - mean) / std


def network_features(network: str, model: Any, images: np.ndarray, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Flattened features per metric name of ``network`` for (n, 3, H, W) images in [0, 1], batched."""
    import torch

    if images.ndim != 4 or images.shape[1] != 3:
        raise DataError(f"image metrics: images must be (n, 3, H, W), got {images.shape}")
    names = [m.name for m in FEATURE_METRICS if m.network == network]
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in names}
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = _prepare(images[start : start + batch_size], INPUT_SIZE[network])
            if network == "alexnet":
                wanted = {index: name for name, index in ALEXNET_LAYERS.items()}
                for index, layer in enumerate(model[: max(wanted) + 1]):
                    x = layer(x)
                    if index in wanted:  # the next layer is a max-pool (not in place): x is safe to keep
                        chunks[wanted[index]].append(x.flatten(1).numpy())
            else:
                chunks[names[0]].append(model(x).flatten(1).numpy())
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def _unit_scale(features: np.ndarray) -> np.ndarray:
    """Rows divided by their largest magnitude, in float64: correlations are scale-free, and this keeps
    features of very small or very large magnitude (e.g. from untrained networks) away from float limits."""
    rows = features.reshape(len(features), -1).astype(np.float64)
    peak = np.abs(rows).max(axis=1, keepdims=True)
    return np.divide(rows, peak, out=np.zeros_like(rows), where=peak > 0)


def correlation_distance(candidates: np.ndarray, truths: np.ndarray) -> float:
    """Mean over pairs of 1 - Pearson r of the flattened features (0 for identical features; a constant
    row has no correlation with anything and counts as distance 1)."""
    a, b = _unit_scale(candidates), _unit_scale(truths)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    corr = np.divide((a * b).sum(axis=1), norms, out=np.zeros_like(norms), where=norms > 0)
    return float(np.mean(1.0 - corr))


def score_features(metric: str, candidates: np.ndarray, truths: np.ndarray) -> float | None:
    """Score paired features for ``metric`` (a FEATURE_METRICS name); None for 2-way with fewer than 2 pairs."""
    from brainbench.retrieval_metrics import two_way_identification

    kind = next((m.kind for m in FEATURE_METRICS if m.name == metric), None)
    if kind is None:
        raise ValueError(f"unknown feature metric {metric!r}")
    if kind == "distance":
        return correlation_distance(candidates, truths)
    if len(candidates) < 2:
        return None
    return float(two_way_identification(_unit_scale(candidates), _unit_scale(truths)))


def feature_metrics(
    candidates: np.ndarray, truths: np.ndarray, batch_size: int = 16, folder: Path | None = None
) -> tuple[dict[str, float], list[str]]:
    """The feature metrics whose network weights are on disk, and the networks skipped for lack of them.

    2-way identification needs two or more pairs; with one pair only the distances are returned.
    """
    if len(candidates) != len(truths):
        raise DataError(f"image metrics: {len(candidates)} candidate images vs {len(truths)} ground truths")
    folder = folder or checkpoint_dir()
    files = feature_weight_files()
    missing = [name for name in files if not (folder / files[name]).exists()]
    values: dict[str, float] = {}
    for network in files:
        if network in missing:
            continue
        model = load_network(network, folder)
        predicted = network_features(network, model, candidates, batch_size)
        actual = network_features(network, model, truths, batch_size)
        for name, features in predicted.items():
            value = score_features(name, features, actual[name])
            if value is not None:
                values[name] = value
        del model  # one network in memory at a time
    return values, missing
