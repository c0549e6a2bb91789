"""CLIP image/text targets computed with open_clip (OpenAI ViT-L/14 by default), offline only.

Pooled embeddings are the model's image embedding (768-d for ViT-L/14). Token embeddings are every visual
token after ``ln_post`` multiplied by the visual projection (257x768 for ViT-L/14), so token 0 is the pooled
embedding. ``normalize=True`` divides both by the norm of that CLS embedding, as MindEye does.

Text: ``embed_text`` embeds finished prompts exactly as given (the ``Target`` contract: the task templates
once); ``embed_class_names`` is the helper for callers holding bare class names, which applies the
``templates`` set (OpenAI's 80 ImageNet prompts by default) and averages, as CLIP's zero-shot recipe does.

``model`` may also be the path of an open_clip model config (``.json``), registered under its file stem.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from brainbench.errors import DataError
from brainbench.interfaces import Dataset, Target
from brainbench.options import Option, Options

DEFAULT_MODEL = "ViT-L-14-quickgelu"
DEFAULT_PRETRAINED_TAG = "openai"
WEIGHTS_ENV = "BRAINBENCH_CLIP_WEIGHTS"
RANDOM_WEIGHTS = "random"
TEMPLATE_SETS = ("openai", "simple", "none")


def _model_config(model: str) -> dict[str, Any]:
    import open_clip

    config = open_clip.get_model_config(model)
    if config is None:
        raise DataError(
            f"open_clip has no model config {model!r}; register one with open_clip.add_model_config(PATH) "
            f"or pick one of open_clip.list_models() (default {DEFAULT_MODEL!r})"
        )
    return config


def shapes_for(model: str) -> tuple[tuple[int], tuple[int, int]]:
    """(pooled shape, token shape) of ``model``, read from its config without building it."""
    config = _model_config(model)
    vision = config["vision_cfg"]
    dim = int(config["embed_dim"])
    image_size, patch = vision["image_size"], vision["patch_size"]
    image_size = image_size if isinstance(image_size, int) else image_size[0]
    grid = int(image_size) // int(patch)
    return (dim,), (1 + grid * grid, dim)


@lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime are part of the key so an overwritten file is hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_hash(path: Path) -> str:
    stat = path.stat()
    return _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _cached_pretrained_file(model: str, tag: str) -> Path | None:
    """The weights file of ``model``/``tag`` if a Hugging Face or OpenAI download cache already holds it."""
    import open_clip

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is first imported
    cfg = open_clip.get_pretrained_cfg(model, tag) or {}
    repo_and_file = cfg.get("hf_hub", "")
    if repo_and_file:
        repo_id, filename = os.path.split(repo_and_file)
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            for name in (
                (filename,) if filename else ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
            ):
                found = try_to_load_from_cache(repo_id, name)
                if isinstance(found, str) and os.path.isfile(found):
                    return Path(found)
    url = cfg.get("url", "")
    if url:
        legacy = Path.home() / ".cache" / "clip" / os.path.basename(url)
        if legacy.is_file():
            return legacy
    return None


def _missing_weights_message(model: str, tag: str, tried: str) -> str:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag) or {}
    repo_and_file = cfg.get("hf_hub", "")
    repo_id, filename = os.path.split(repo_and_file) if repo_and_file else ("", "")
    hint = ""
    if repo_id:
        hint = (
            f" The file open_clip expects is {filename or 'open_clip_model.safetensors'!r} from the "
            f"Hugging Face repo {repo_id!r}"
        )
        if cfg.get("url"):
            hint += f" (or OpenAI's {os.path.basename(cfg['url'])!r})"
        hint += "."
    return (
        f"CLIP weights for {model!r} not found ({tried}).{hint} brainbench never downloads weights: copy the "
        f"file to this machine and pass weights=PATH (CLI: --weights PATH) or set {WEIGHTS_ENV}=PATH, or "
        f"pre-fill the Hugging Face cache (HF_HOME) with it."
    )


def resolve_weights(
    model: str, weights: str | os.PathLike[str] | None, tag: str = DEFAULT_PRETRAINED_TAG
) -> Path:
    """The weights file to load: the option, else ${BRAINBENCH_CLIP_WEIGHTS}, else a pre-filled cache."""
    if weights is not None and str(weights) != "":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise DataError(_missing_weights_message(model, tag, f"weights={str(weights)!r} is not a file"))
        return path
    from_env = os.environ.get(WEIGHTS_ENV, "")
    if from_env:
        path = Path(from_env).expanduser()
        if not path.is_file():
            raise DataError(_missing_weights_message(model, tag, f"{WEIGHTS_ENV}={from_env!r} is not a file"))
        return path
    cached = _cached_pretrained_file(model, tag)
    if cached is None:
        raise DataError(
            _missing_weights_message(model, tag, f"no weights option, no {WEIGHTS_ENV}, empty cache")
        )
    return cached


def register_config_file(model: str) -> str:
    """``model`` itself, or for a path to an open_clip config ``NAME.json``: registers it and returns NAME."""
    if not str(model).endswith(".json"):
        return model
    path = Path(model).expanduser()
    if not path.is_file():
        raise DataError(f"open_clip model config {path} not found (model=PATH.json registers a config file)")
    import open_clip

    open_clip.add_model_config(path)
    return path.stem


def _auto_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def prompt_templates(name: str) -> list[Any]:
    """Prompt templates (callables class name -> text) of a named set."""
    if name == "none":
        return [lambda c: c]
    import open_clip

    if name == "openai":
        return list(open_clip.OPENAI_IMAGENET_TEMPLATES)
    if name == "simple":
        return list(open_clip.SIMPLE_IMAGENET_TEMPLATES)
    raise DataError(f"unknown prompt template set {name!r}; expected one of {', '.join(TEMPLATE_SETS)}")


class OpenClipTarget(Target):
    declared_options = Options(
        Option("model", str, DEFAULT_MODEL, "open_clip model name"),
        Option("weights", str, None, "local weights file (no download)", nullable=True),
        Option("pretrained_tag", str, DEFAULT_PRETRAINED_TAG, "open_clip pretrained tag, recorded with the cache"),
        Option("seed", int, 0, "seed for anything random in embedding", minimum=0, maximum=2**32 - 1),
        Option("normalize", bool, False, "L2-normalise each embedding"),
        Option("templates", str, "openai", "prompt templates embed_class_names applies to bare class names "
               "(embed_text embeds finished prompts as given)", choices=TEMPLATE_SETS),
        Option("batch_size", int, 64, "images per forward pass", minimum=1),
        Option("device", str, "auto", "auto | cpu | cuda | cuda:N"),
        Option("use_cache", bool, True, "read and write the embedding cache"),
        Option("cache_dir", str, None, "cache folder (default under BRAINBENCH_HOME)", nullable=True),
    )
    """CLIP embeddings of a dataset's images (pooled or tokens) and of texts, from open_clip."""

    name = "clip-vit-l-14"
    #: Pooled (768,) embeddings; :class:`OpenClipTokensTarget` gives the 257x768 tokens.
    tokens: bool = False

    def __init__(self, options: Any = None, *, tokens: bool | None = None, **values: Any) -> None:
        super().__init__(options, **values)
        o = self.options
        self.tokens = type(self).tokens if tokens is None else bool(tokens)
        model = register_config_file(o.model)
        self.model_name = model
        self.weights = o.weights
        self.pretrained_tag = o.pretrained_tag
        self.seed = o.seed
        self.normalize = o.normalize
        self.templates = o.templates
        self.batch_size = o.batch_size
        self.device = o.device
        self.use_cache = o.use_cache
        self.cache_dir = None if o.cache_dir is None else Path(o.cache_dir)
        # The registry name, whatever the model config: the model itself is in params() and the cache key.
        self.name = "clip-vit-l-14" + ("-tokens" if self.tokens else "")
        pooled_shape, token_shape = shapes_for(model)
        self.shape = token_shape if self.tokens else pooled_shape
        self._model: Any = None
        self._tokenizer: Any = None
        self._weights_file: Path | None = None
        self._weights_hash: str | None = None

    # ------------------------------------------------------------------ identity (what a cache is keyed by)

    @property
    def random_weights(self) -> bool:
        return self.weights == RANDOM_WEIGHTS

    def weights_file(self) -> Path | None:
        if self.random_weights:
            return None
        if self._weights_file is None:
            self._weights_file = resolve_weights(self.model_name, self.weights, self.pretrained_tag)
        return self._weights_file

    def weights_id(self) -> str:
        """sha256 of the weights file, or ``random-<seed>`` for random-init weights (tests and demos)."""
        if self._weights_hash is None:
            path = self.weights_file()
            self._weights_hash = f"random-{self.seed}" if path is None else weights_hash(path)
        return self._weights_hash

    @property
    def kind(self) -> str:
        return "tokens" if self.tokens else "pooled"

    @property
    def storage_dtype(self) -> str:
        # 257x768 tokens for 10k images are ~4 GB in float16; pooled vectors are small enough for float32
        return "float16" if self.tokens else "float32"

    def params(self) -> dict[str, Any]:
        out = super().params()
        out.update(
            clip_model=self.model_name,
            clip_weights=(
                f"random init seed {self.seed} (tests/demos only, not CLIP)"
                if self.random_weights
                else str(self.weights_file())
            ),
            clip_weights_sha256=self.weights_id(),
            clip_normalize_by_cls_norm=self.normalize,
            clip_text_templates=self.templates,
        )
        return out

    # ------------------------------------------------------------------------------------ the model

    def load_model(self) -> Any:
        """Build the open_clip model (once) on the chosen device, in eval mode, without any download."""
        if self._model is not None:
            return self._model
        # open_clip only ever gets a local file from us, never a tag; offline mode is a second guard.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import open_clip
        import torch

        path = self.weights_file()
        if path is None:
            torch.manual_seed(self.seed)
            model = open_clip.create_model(self.model_name, pretrained=None, device="cpu")
        else:
            try:
                model = open_clip.create_model(self.model_name, pretrained=str(path), device="cpu")
            except Exception as exc:  # torch.load, safetensors and state-dict checks raise many kinds
                raise DataError(
                    f"weights file {path} does not load into open_clip model {self.model_name!r}: {exc}"
                ) from exc
        self._model = model.to(_auto_device(self.device)).eval()
        return self._model

    def _model_device(self) -> Any:
        return next(self.load_model().parameters()).device

    def _preprocess(self, images: np.ndarray) -> Any:
        """(n,3,H,W) in [0,1] -> resized (shortest side), centre-cropped, CLIP-normalised tensor."""
        import torch
        import torch.nn.functional as F

        model = self.load_model()
        size = model.visual.image_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        batch = torch.as_tensor(np.asarray(images, dtype=np.float32), device=self._model_device())
        h, w = batch.shape[-2:]
        if (h, w) != (height, width):
            scale = max(height / h, width / w)
            new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
            batch = F.interpolate(
                batch, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True
            )
            top, left = (new_h - height) // 2, (new_w - width) // 2
            batch = batch[:, :, top : top + height, left : left + width]
        batch = batch.clamp(0.0, 1.0)
        mean = getattr(model.visual, "image_mean", None) or open_clip_mean()
        std = getattr(model.visual, "image_std", None) or open_clip_std()
        mean_t = torch.tensor(mean, device=batch.device).view(1, 3, 1, 1)
        std_t = torch.tensor(std, device=batch.device).view(1, 3, 1, 1)
        return (batch - mean_t) / std_t

    def _visual_tokens(self, pixels: Any) -> Any:
        """All projected tokens (n, 1+patches, D) of a standard CLS-pooled open_clip ViT."""
        visual = self.load_model().visual
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "final_ln_after_pool", False):
            raise DataError(f"open_clip model {self.model_name!r} pools with attention; it has no CLS tokens")
        x = visual._embeds(pixels)
        x = visual.transformer(x)
        x = visual.ln_post(x)
        return x @ visual.proj

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """Raw embeddings (n, *shape) float32 of images (n,3,H,W) in [0,1]; no CLS-norm division."""
        import torch

        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"images must have shape (n, 3, H, W) with values in [0, 1]; got {images.shape}")
        model = self.load_model()
        out = np.empty((len(images), *self.shape), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                pixels = self._preprocess(images[start : start + self.batch_size])
                if self.tokens:
                    features = self._visual_tokens(pixels)
                else:
                    features = model.encode_image(pixels)
                out[start : start + len(pixels)] = features.float().cpu().numpy()
        return out

    def finish(self, raw: np.ndarray) -> np.ndarray:
        """Apply the options that are not stored in a cache (division by the CLS embedding's norm)."""
        raw = np.asarray(raw, dtype=np.float32)
        if not self.normalize:
            return raw
        cls = raw[:, 0] if self.tokens else raw
        norms = np.linalg.norm(cls, axis=-1)
        norms = np.maximum(norms, np.finfo(np.float32).tiny)
        return raw / norms.reshape((-1,) + (1,) * (raw.ndim - 1))

    # ----------------------------------------------------------------------------- Target interface

    def dataset_images(self, dataset: Dataset, stimulus_ids: np.ndarray) -> np.ndarray:
        images = dataset.images(np.asarray(stimulus_ids, dtype=np.int64))
        if images is None:
            raise DataError(
                f"dataset {dataset.name!r} has no stimulus images, so target {self.name!r} cannot embed "
                "them; use a target stored with the data (e.g. synthetic-clip) or a dataset with images"
            )
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[0] != len(stimulus_ids) or images.shape[1] != 3:
            raise DataError(
                f"dataset {dataset.name!r}: images() returned shape {images.shape}; expected "
                f"({len(stimulus_ids)}, 3, H, W) float in [0, 1]"
            )
        return images

    def embed(self, dataset: Dataset, stimulus_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(stimulus_ids, dtype=np.int64)
        raw = np.empty((len(ids), *self.shape), dtype=np.float32)
        missing = np.ones(len(ids), dtype=bool)
        if self.use_cache and len(ids):
            from brainbench_clip.cache import read_cached

            found = read_cached(dataset, self, ids, root=self.cache_dir)
            if found is not None:
                values, missing = found
                raw[~missing] = values[~missing]
        if missing.any():
            todo = ids[missing]
            unique, inverse = np.unique(todo, return_inverse=True)
            encoded = np.empty((len(unique), *self.shape), dtype=np.float32)
            for start in range(0, len(unique), self.batch_size):
                chunk = unique[start : start + self.batch_size]
                encoded[start : start + len(chunk)] = self.encode_images(self.dataset_images(dataset, chunk))
            raw[missing] = encoded[inverse]
        return self.finish(raw)

    def cache_path(self, dataset: Dataset) -> Path | None:
        """The HDF5 file this target's embeddings of ``dataset`` are cached in (None with use_cache off)."""
        if not self.use_cache:
            return None
        from brainbench_clip.cache import cache_path

        return cache_path(dataset, self, root=self.cache_dir)

    def check_ready(self, dataset: Dataset) -> None:
        """Before any work: the weights are here, and the dataset has images or a cache was built for it."""
        root = getattr(dataset, "root", None)
        data = f" --data-path {root}" if root is not None else ""
        build = f"brainbench targets build --dataset {dataset.name}{data} --target {self.name} --weights PATH"
        try:
            self.weights_id()
        except DataError as err:
            raise DataError(
                f"dataset {dataset.name!r} needs target {self.name!r} (CLIP {self.model_name} {self.kind} "
                f"embeddings of its images), computed from CLIP weights: {err} With the weights file, build "
                f"the embedding cache once (resumable) with `{build}`, then run with --target-opt weights=PATH."
            ) from None
        cached = self.cache_path(dataset)
        if cached is not None and cached.exists():
            return
        try:
            images = dataset.images(np.zeros(1, dtype=np.int64))
        except Exception:  # an id-0 image that does not exist says nothing about the others
            return
        if images is None:
            raise DataError(
                f"target {self.name!r} embeds images, but dataset {dataset.name!r} has none here and no target "
                f"cache was built for it; build one where the images are with `{build}`"
            )

    def _tokenize(self, prompts: Sequence[str]) -> Any:
        import open_clip

        if self._tokenizer is None:
            self._tokenizer = open_clip.get_tokenizer(self.model_name)
        return self._tokenizer(list(prompts))

    def embed_text(self, texts: Sequence[str], dataset: Dataset | None = None) -> np.ndarray:
        """Unit-norm embeddings (n, D) of finished prompts, each embedded exactly as given (no template)."""
        import torch

        model = self.load_model()
        device = self._model_device()
        texts = [str(t) for t in texts]
        out = np.empty((len(texts), self.shape[-1]), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                chunk = texts[start : start + self.batch_size]
                features = model.encode_text(self._tokenize(chunk).to(device)).float()
                features = features / features.norm(dim=-1, keepdim=True)
                out[start : start + len(chunk)] = features.cpu().numpy()
        return out

    def embed_class_names(self, names: Sequence[str]) -> np.ndarray:
        """Unit-norm (n, D): each name through the ``templates`` set, prompts embedded, averaged, renormalised."""
        templates = prompt_templates(self.templates)
        prompts = [template(name) for name in names for template in templates]
        embedded = self.embed_text(prompts).reshape(len(names), len(templates), -1)
        mean = embedded.mean(axis=1)
        return (mean / np.linalg.norm(mean, axis=-1, keepdims=True)).astype(np.float32)


def open_clip_mean() -> tuple[float, float, float]:
    import open_clip

    return tuple(open_clip.OPENAI_DATASET_MEAN)


def open_clip_std() -> tuple[float, float, float]:
    import open_clip

    return tuple(open_clip.OPENAI_DATASET_STD)


class OpenClipTokensTarget(OpenClipTarget):
    """The 257x768 token embeddings (after ln_post and the projection) of :class:`OpenClipTarget`'s model."""

    name = "clip-vit-l-14-tokens"
    tokens = True

