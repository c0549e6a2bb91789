"""Image metrics of retrieved candidates that need no network weights (PixCorr, SSIM), and the check
for the torchvision weights the feature metrics (AlexNet, Inception, EfficientNet-B1, SwAV) need."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
    import torch

    folder = Path(torch.hub.get_dir()) / "checkpoints"
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
