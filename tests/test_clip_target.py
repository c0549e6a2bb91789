"""The open_clip CLIP target, run on a tiny random-init open_clip model registered for the tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from brainbench.errors import DataError
from brainbench.interfaces import Dataset, Trials
from brainbench.options import OptionError
from brainbench_clip.openclip import WEIGHTS_ENV, OpenClipTarget

TINY_MODEL = "bb-tiny-test-vit"
TINY_CONFIG = {
    "embed_dim": 48,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_TOKENS = (1 + (32 // 8) ** 2, 48)


@pytest.fixture(scope="session", autouse=True)
def tiny_model_config(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.set_num_threads(1)  # small models: extra threads only add contention
    path = tmp_path_factory.mktemp("open_clip_configs") / f"{TINY_MODEL}.json"
    path.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(path)
    return TINY_MODEL


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINBENCH_HOME", str(tmp_path / "bbhome"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)


class ImageDataset(Dataset):
    """Random images for stimuli 0..n-1; counts the images it hands out."""

    name = "test-images"

    def __init__(self, n: int = 12, size: tuple[int, int] = (32, 32), seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self._images = rng.random((n, 3, *size), dtype=np.float32)
        self.images_served = 0

    def subjects(self) -> list[int]:
        return [1]

    def n_voxels(self, subject: int) -> int:
        return 4

    def trials(self, subject: int, split: str) -> Trials:
        ids = np.arange(len(self._images))
        ids = ids[ids % 4 != 0] if split == "train" else ids[ids % 4 == 0]
        return Trials(np.zeros((len(ids), 4), np.float32), ids)

    def images(self, stimulus_ids: np.ndarray) -> np.ndarray:
        self.images_served += len(stimulus_ids)
        return self._images[np.asarray(stimulus_ids)]


class NoImages(ImageDataset):
    name = "voxels-only"

    def images(self, stimulus_ids: np.ndarray) -> None:
        return None


def tiny(tokens: bool = False, **options) -> OpenClipTarget:
    options.setdefault("weights", "random")
    return OpenClipTarget(tokens=tokens, model=TINY_MODEL, device="cpu", **options)


def reference_model(seed: int):
    """The same random-init model built directly with open_clip, for independent expectations."""
    torch.manual_seed(seed)
    return open_clip.create_model(TINY_MODEL, pretrained=None, device="cpu").eval()


def clip_normalised(images: np.ndarray):
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (torch.from_numpy(images) - mean) / std


def test_registered_targets_have_vit_l_14_shapes_without_loading_weights() -> None:
    from brainbench.plugins import load_plugins

    targets = load_plugins().targets
    pooled = targets.create("clip-vit-l-14")
    tokens = targets.create("clip-vit-l-14-tokens")
    assert pooled.shape == (768,) and tokens.shape == (257, 768)
    assert pooled.name == "clip-vit-l-14" and tokens.name == "clip-vit-l-14-tokens"
    assert pooled._model is None and tokens._model is None  # nothing built, nothing loaded


def test_shape_follows_the_model_config() -> None:
    assert tiny().shape == (48,)
    assert tiny(tokens=True).shape == TINY_TOKENS
    images = ImageDataset(n=3).images(np.arange(3))
    assert tiny().encode_images(images).shape == (3, 48)
    assert tiny(tokens=True).encode_images(images).shape == (3, *TINY_TOKENS)


def test_pooled_and_tokens_match_open_clip_forward() -> None:
    images = ImageDataset(n=5).images(np.arange(5))
    model = reference_model(seed=0)
    model.visual.output_tokens = True  # open_clip returns the unprojected patch tokens after ln_post
    with torch.no_grad():
        pooled_ref, patch_tokens = model.visual(clip_normalised(images))
        projected_patches = (patch_tokens @ model.visual.proj).numpy()

    pooled = tiny(batch_size=2).encode_images(images)
    tokens = tiny(tokens=True, batch_size=2).encode_images(images)
    np.testing.assert_allclose(pooled, pooled_ref.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tokens[:, 0], pooled, rtol=1e-4, atol=1e-5)  # CLS token is the pooled one
    np.testing.assert_allclose(tokens[:, 1:], projected_patches, rtol=1e-4, atol=1e-5)


def test_resize_and_crop_keep_a_uniform_image_uniform() -> None:
    colour = np.array([0.2, 0.5, 0.9], dtype=np.float32).reshape(1, 3, 1, 1)
    native = np.broadcast_to(colour, (1, 3, 32, 32)).copy()
    wide = np.broadcast_to(colour, (1, 3, 48, 80)).copy()
    target = tiny()
    np.testing.assert_allclose(target.encode_images(wide), target.encode_images(native), rtol=1e-4, atol=1e-5)
    other = np.full((1, 3, 32, 32), 0.7, dtype=np.float32)
    assert not np.allclose(target.encode_images(other), target.encode_images(native), atol=1e-3)


def test_normalize_divides_by_the_cls_norm_as_mindeye() -> None:
    dataset, ids = ImageDataset(n=4), np.arange(4)
    raw_tokens = tiny(tokens=True).embed(dataset, ids)
    tokens = tiny(tokens=True, normalize=True).embed(dataset, ids)
    cls_norm = np.linalg.norm(raw_tokens[:, 0], axis=-1)
    np.testing.assert_allclose(tokens * cls_norm[:, None, None], raw_tokens, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(tokens[:, 0], axis=-1), 1.0, rtol=1e-5)
    assert not np.allclose(np.linalg.norm(tokens[:, 1], axis=-1), 1.0)  # patches keep their relative size
    pooled = tiny(normalize=True).embed(dataset, ids)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=-1), 1.0, rtol=1e-5)


def test_embed_batches_and_keeps_order_with_repeated_ids() -> None:
    dataset = ImageDataset(n=10)
    ids = np.array([7, 2, 7, 0, 9, 2])
    target = tiny(batch_size=2, use_cache=False)
    out = target.embed(dataset, ids)
    assert dataset.images_served == 4  # each distinct stimulus encoded once
    expected = target.encode_images(ImageDataset(n=10).images(ids))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out[0], out[2])


def test_dataset_without_images_is_a_data_error_naming_it() -> None:
    with pytest.raises(DataError, match="voxels-only.*no stimulus images"):
        tiny().embed(NoImages(), np.arange(3))


def test_bad_image_shape_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"\(n, 3, H, W\)"):
        tiny().encode_images(np.zeros((2, 32, 32, 3), dtype=np.float32))


def test_missing_weights_say_how_to_provide_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty Hugging Face cache and home: nothing pre-filled, and nothing may be downloaded.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    target = OpenClipTarget()  # real ViT-L-14-quickgelu config
    with pytest.raises(DataError) as error:
        target.embed(ImageDataset(n=2), np.arange(2))
    message = str(error.value)
    assert WEIGHTS_ENV in message and "weights=PATH" in message
    assert "open_clip_model.safetensors" in message and "timm/vit_large_patch14_clip_224.openai" in message

    with pytest.raises(DataError, match="nowhere.bin"):
        OpenClipTarget(weights=tmp_path / "nowhere.bin").load_model()
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "also-missing.safetensors"))
    with pytest.raises(DataError, match=f"{WEIGHTS_ENV}=.*also-missing"):
        OpenClipTarget().weights_id()


def test_weights_file_loads_through_open_clip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "tiny_clip.pt"
    torch.save(reference_model(seed=3).state_dict(), weights)
    images = ImageDataset(n=3).images(np.arange(3))

    from_file = tiny(weights=weights)
    same_init = tiny(seed=3)
    other_init = tiny(seed=4)
    np.testing.assert_allclose(from_file.encode_images(images), same_init.encode_images(images), atol=1e-6)
    assert not np.allclose(from_file.encode_images(images), other_init.encode_images(images), atol=1e-3)
    assert from_file.weights_id() == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert from_file.params()["clip_weights"] == str(weights)

    monkeypatch.setenv(WEIGHTS_ENV, str(weights))
    from_env = OpenClipTarget(model=TINY_MODEL, device="cpu")
    np.testing.assert_allclose(from_env.encode_images(images), same_init.encode_images(images), atol=1e-6)

    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="broken.pt"):
        tiny(weights=broken).load_model()


def test_random_weights_are_labelled_in_params() -> None:
    params = tiny(tokens=True, seed=5).params()
    assert params["clip_weights_sha256"] == "random-5"
    assert "tests/demos only" in params["clip_weights"]
    assert params["target_shape"] == "17x48" and params["clip_model"] == TINY_MODEL


class RecordingTokenizer:
    """Wraps the real tokenizer and records every text it is given."""

    def __init__(self, model: str) -> None:
        self.inner, self.seen = open_clip.get_tokenizer(model), []

    def __call__(self, texts):
        self.seen.extend(texts)
        return self.inner(texts)


def test_embed_text_embeds_finished_prompts_as_given() -> None:
    target = tiny()
    target._tokenizer = RecordingTokenizer(TINY_MODEL)
    prompts = ["an image of a goldfish.", "an image of a airliner.", "an image of a goldfish."]
    text = target.embed_text(prompts)
    assert target._tokenizer.seen == prompts  # each text once, no template of the target's own
    assert text.shape == (3, 48) and text.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(text[0], text[2], atol=1e-6)
    assert not np.allclose(text[0], text[1], atol=1e-3)
    model = reference_model(seed=0)
    with torch.no_grad():
        expected = model.encode_text(open_clip.get_tokenizer(TINY_MODEL)(prompts[:1])).numpy()
    np.testing.assert_allclose(text[:1], expected / np.linalg.norm(expected), rtol=1e-4, atol=1e-5)


def test_class_names_go_through_the_template_set_once() -> None:
    target = tiny(templates="simple")
    target._tokenizer = RecordingTokenizer(TINY_MODEL)
    names = ["goldfish", "airliner"]
    by_name = target.embed_class_names(names)
    templates = open_clip.SIMPLE_IMAGENET_TEMPLATES
    assert target._tokenizer.seen == [t(n) for n in names for t in templates]
    expected = target.embed_text([t("goldfish") for t in templates]).mean(axis=0)
    np.testing.assert_allclose(by_name[0], expected / np.linalg.norm(expected), rtol=1e-4, atol=1e-5)
    bare = tiny(templates="none").embed_class_names(names[:1])
    np.testing.assert_allclose(bare, tiny().embed_text(names[:1]), rtol=1e-4, atol=1e-5)
    with pytest.raises(OptionError, match="templates not one of openai, simple, none"):  # refused by its declaration
        tiny(templates="fancy")


def test_model_config_file_is_registered(tmp_path: Path) -> None:
    path = tmp_path / "bb-tiny-from-file.json"
    path.write_text(json.dumps(TINY_CONFIG))
    target = OpenClipTarget(model=str(path), weights="random", device="cpu")
    assert target.model_name == "bb-tiny-from-file" and target.shape == (48,)
    with pytest.raises(DataError, match="open_clip model config .*nothing.json not found"):
        OpenClipTarget(model=str(tmp_path / "nothing.json"), weights="random")


def test_missing_weights_are_reported_before_work_with_the_cache_command(tmp_path: Path) -> None:
    dataset = ImageDataset()
    dataset.root = tmp_path
    with pytest.raises(DataError) as caught:
        OpenClipTarget(model=TINY_MODEL).check_ready(dataset)
    message = str(caught.value)
    assert "needs target 'clip-vit-l-14'" in message and "BRAINBENCH_CLIP_WEIGHTS" in message
    assert f"brainbench targets build --dataset test-images --data-path {tmp_path}" in message
    tiny().check_ready(dataset)  # weights and images: ready
    with pytest.raises(DataError, match="has none here and no target cache was built"):
        tiny().check_ready(NoImages())


def test_real_vit_l_14_gives_257_by_768_tokens_on_the_meta_device() -> None:
    # The real architecture, built without memory or weights: checks the token path and the declared shape.
    with torch.device("meta"):
        model = open_clip.create_model("ViT-L-14-quickgelu", pretrained=None, device="meta")
    assert sum(p.numel() for p in model.visual.parameters()) == 303_966_208  # ViT-L/14 image tower
    target = OpenClipTarget(tokens=True)
    target._model = model  # skip weight resolution: only shapes are checked here
    tokens = target._visual_tokens(torch.empty(2, 3, 224, 224, device="meta"))
    assert tuple(tokens.shape) == (2, *target.shape) == (2, 257, 768)
    assert tuple(model.encode_image(torch.empty(2, 3, 224, 224, device="meta")).shape) == (2, 768)
