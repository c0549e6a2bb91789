"""The HDF5 target cache and `brainbench targets build`: written once, read instead of re-encoding, resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import open_clip
import pytest
import torch
import typer
from typer.testing import CliRunner

from brainbench import hookimpl
from brainbench.errors import DataError
from brainbench.interfaces import Dataset, Trials
from brainbench_clip.cache import all_stimulus_ids, build_cache, cache_path, read_cached
from brainbench_clip.openclip import OpenClipTarget

TINY_MODEL = "bb-tiny-cache-vit"
TINY_CONFIG = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def register_tiny(folder: Path) -> None:
    path = folder / f"{TINY_MODEL}.json"
    path.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(path)


@pytest.fixture(scope="session")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)  # small models: extra threads only add contention
    folder = tmp_path_factory.mktemp("open_clip_configs")
    register_tiny(folder)
    return folder


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config_dir: Path) -> Path:
    home = tmp_path / "bbhome"
    monkeypatch.setenv("BRAINBENCH_HOME", str(home))
    return home


class ImageDataset(Dataset):
    """Two subjects whose train/test stimuli overlap; random images; counts what it serves."""

    name = "cache-test-images"

    def __init__(self, root: Path | None = None, n: int = 23, seed: int = 0, fail_images: bool = False) -> None:
        self.root = root
        self._images = np.random.default_rng(seed).random((n, 3, 32, 32), dtype=np.float32)
        self.fail_images = fail_images
        self.served: list[int] = []

    def subjects(self) -> list[int]:
        return [1, 2]

    def n_voxels(self, subject: int) -> int:
        return 3

    def trials(self, subject: int, split: str) -> Trials:
        n = len(self._images)
        ids = np.arange(subject - 1, n, 2) if split == "train" else np.array([0, 5, 5, n - 1])
        return Trials(np.zeros((len(ids), 3), np.float32), ids)

    def images(self, stimulus_ids: np.ndarray) -> np.ndarray:
        if self.fail_images:
            raise AssertionError("images() must not be called: the cache should answer")
        self.served.extend(int(i) for i in stimulus_ids)
        return self._images[np.asarray(stimulus_ids)]


def tiny(tokens: bool = False, **options) -> OpenClipTarget:
    return OpenClipTarget(tokens=tokens, model=TINY_MODEL, weights="random", device="cpu", **options)


class StopBuild(Exception):
    pass


def stop_after(k: int):
    def check(count: int) -> None:
        if count == k:
            raise StopBuild

    return check


@pytest.mark.parametrize("tokens", [False, True])
def test_build_stores_every_stimulus_once(tokens: bool, isolated_home: Path) -> None:
    dataset = ImageDataset()
    target = tiny(tokens)
    result = build_cache(dataset, target, batch_size=5)

    ids = all_stimulus_ids(dataset)
    assert len(ids) == 23
    assert result.path == cache_path(dataset, target)
    assert result.path.is_relative_to(isolated_home / "targets")
    assert (result.n_stimuli, result.n_encoded, result.n_skipped) == (23, 23, 0)
    assert sorted(dataset.served) == ids.tolist()  # each stimulus encoded exactly once
    with h5py.File(result.path, "r") as handle:
        np.testing.assert_array_equal(handle["stimulus_ids"][:], ids)
        assert handle["done"][:].all() and handle.attrs["complete"]
        assert handle["embeddings"].dtype == (np.float16 if tokens else np.float32)
        assert handle["embeddings"].shape == (23, *target.shape)
        assert handle.attrs["weights"] == "random-0" and handle.attrs["model"] == TINY_MODEL
        stored = handle["embeddings"][:].astype(np.float32)
    fresh = target.encode_images(ImageDataset().images(ids))
    tolerance = dict(rtol=2e-3, atol=2e-3) if tokens else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stored, fresh, **tolerance)


def test_embed_reads_the_cache_instead_of_encoding() -> None:
    build_cache(ImageDataset(), tiny(True), batch_size=8)
    reader = tiny(True, normalize=True)
    cached_only = ImageDataset(fail_images=True)
    ids = np.array([22, 3, 3, 0])
    out = reader.embed(cached_only, ids)
    assert reader._model is None  # the model was never even built
    expected = tiny(True, normalize=True, use_cache=False).embed(ImageDataset(), ids)
    np.testing.assert_allclose(out, expected, rtol=2e-3, atol=2e-3)
    assert out.dtype == np.float32

    other_seed = tiny(True, seed=1)  # another weights hash: another cache, so it encodes
    assert read_cached(cached_only, other_seed, ids) is None


def test_stimuli_missing_from_the_cache_are_encoded_on_the_fly() -> None:
    dataset = ImageDataset()
    with pytest.raises(StopBuild):
        build_cache(dataset, tiny(), batch_size=4, after_chunk=stop_after(2))  # rows 0..7 done
    later = ImageDataset()
    ids = np.array([1, 9, 20, 2])
    out = tiny().embed(later, ids)
    assert sorted(later.served) == [9, 20]
    expected = tiny(use_cache=False).embed(ImageDataset(), ids)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_interrupted_build_resumes_and_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    dataset = ImageDataset()
    with pytest.raises(StopBuild):
        build_cache(dataset, tiny(True), batch_size=4, after_chunk=stop_after(3))
    path = cache_path(dataset, tiny(True))
    with h5py.File(path, "r") as handle:
        assert int(handle["done"][:].sum()) == 12 and not handle.attrs["complete"]

    resumed = ImageDataset()
    result = build_cache(resumed, tiny(True), batch_size=4)
    assert (result.n_skipped, result.n_encoded) == (12, 11)
    assert sorted(resumed.served) == list(range(12, 23))  # finished rows were not encoded again

    straight = build_cache(ImageDataset(), tiny(True), batch_size=4, root=tmp_path / "straight")
    with h5py.File(path, "r") as a, h5py.File(straight.path, "r") as b:
        assert a["done"][:].all() and a.attrs["complete"]
        np.testing.assert_array_equal(a["embeddings"][:], b["embeddings"][:])


# The killed child uses a numpy stand-in for the model so that it starts in about a second (no torch import);
# what is under test here is the file surviving SIGKILL at any point of a chunk, not the encoder.
KILL_HELPERS = """
import time
import numpy as np
from brainbench.interfaces import Dataset, Trials

class ManyImages(Dataset):
    name = "kill-test-images"

    def __init__(self, n=400):
        self._images = np.random.default_rng(7).random((n, 3, 4, 4), dtype=np.float32)

    def subjects(self):
        return [1]

    def n_voxels(self, subject):
        return 1

    def trials(self, subject, split):
        ids = np.arange(len(self._images)) if split == "train" else np.array([0])
        return Trials(np.zeros((len(ids), 1), np.float32), ids)

    def images(self, stimulus_ids):
        return self._images[np.asarray(stimulus_ids)]

class SlowNumpyTarget:
    name, shape, model_name, batch_size = "numpy-tokens", (3, 48), "numpy", 3
    kind, storage_dtype = "tokens", "float16"

    def weights_id(self):
        return "fixed"

    def dataset_images(self, dataset, stimulus_ids):
        return dataset.images(stimulus_ids)

    def encode_images(self, images):
        time.sleep(0.01)  # a kill lands inside a chunk: while encoding, writing or flushing
        flat = images.reshape(len(images), -1)
        return np.stack([flat, 2 * flat, flat ** 2], axis=1)
"""

KILLED_BUILD = """
import sys
sys.path.insert(0, sys.argv[1])
from bb_kill_helpers import ManyImages, SlowNumpyTarget
from brainbench_clip.cache import build_cache

build_cache(ManyImages(), SlowNumpyTarget(), after_chunk=lambda k: print(f"chunk {k}", flush=True))
print("finished", flush=True)
"""


def test_build_killed_by_sigkill_resumes(tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bb_kill_helpers.py").write_text(KILL_HELPERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    from bb_kill_helpers import ManyImages, SlowNumpyTarget

    env = {**os.environ, "BRAINBENCH_HOME": str(isolated_home)}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_BUILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        seen = [child.stdout.readline().strip() for _ in range(2)]
        child.send_signal(signal.SIGKILL)  # no clean-up code runs in the child
    finally:
        child.wait(timeout=60)
    assert seen == ["chunk 1", "chunk 2"], child.stderr.read()
    assert child.returncode == -signal.SIGKILL

    dataset, target = ManyImages(), SlowNumpyTarget()
    path = cache_path(dataset, target)
    with h5py.File(path, "r") as handle:
        done = int(handle["done"][:].sum())
    assert 6 <= done < 400  # the two reported chunks survived the kill, and the build was not finished

    result = build_cache(dataset, target, batch_size=50)
    assert result.n_skipped == done and result.n_encoded == 400 - done
    straight = build_cache(dataset, target, batch_size=50, root=tmp_path / "straight")
    with h5py.File(path, "r") as a, h5py.File(straight.path, "r") as b:
        assert a["done"][:].all()
        np.testing.assert_array_equal(a["embeddings"][:], b["embeddings"][:])


def test_cache_of_other_stimuli_or_damaged_file_is_a_clear_error() -> None:
    result = build_cache(ImageDataset(n=23), tiny(), batch_size=8)
    with pytest.raises(DataError, match="differ.*--overwrite"):
        build_cache(ImageDataset(n=25), tiny(), batch_size=8)
    rebuilt = build_cache(ImageDataset(n=25), tiny(), batch_size=8, overwrite=True)
    assert rebuilt.n_stimuli == 25 and rebuilt.n_encoded == 25

    result.path.write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match=str(result.path.name)):
        tiny().embed(ImageDataset(), np.arange(3))


def test_dataset_without_images_leaves_no_cache_file(isolated_home: Path) -> None:
    class NoImages(ImageDataset):
        def images(self, stimulus_ids: np.ndarray) -> None:
            return None

    with pytest.raises(DataError, match="cache-test-images.*no stimulus images"):
        build_cache(NoImages(), tiny())
    assert not list(isolated_home.rglob("*.h5*"))


def test_cache_folder_depends_on_dataset_root(tmp_path: Path) -> None:
    a = cache_path(ImageDataset(root=tmp_path / "a"), tiny())
    b = cache_path(ImageDataset(root=tmp_path / "b"), tiny())
    assert a != b and a.name == b.name and a.name.endswith("--pooled.h5")


def cli_plugins():
    from brainbench.plugins import load_plugins

    @hookimpl
    def register_datasets(register):
        register("cache-test-images", lambda root=None, **options: ImageDataset(root=root, **options))

    return load_plugins(extra_modules=[("cache-test", SimpleNamespace(register_datasets=register_datasets))])


def test_cli_targets_build(monkeypatch: pytest.MonkeyPatch, isolated_home: Path) -> None:
    import brainbench.plugins
    from brainbench_clip import register_commands

    plugins = cli_plugins()
    monkeypatch.setattr(brainbench.plugins, "get_plugins", lambda: plugins)
    app = typer.Typer()
    register_commands(app)

    @app.callback()
    def main() -> None:
        """brainbench (test app)"""

    args = ["targets", "build", "--dataset", "cache-test-images", "--target", "clip-vit-l-14-tokens"]
    args += ["--model", TINY_MODEL, "--weights", "random", "--batch-size", "6", "--device", "cpu"]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "23 stimuli, 23 encoded now, 0 already done" in " ".join(first.output.split())
    second = runner.invoke(app, args)
    assert "0 encoded now, 23 already done" in " ".join(second.output.split())
    files = list((isolated_home / "targets").rglob("*.h5"))
    assert [f.name for f in files] == [f"{TINY_MODEL}--random-0--tokens.h5"]

    missing = runner.invoke(app, ["targets", "build", "--dataset", "cache-test-images", "--device", "cpu"])
    assert missing.exit_code != 0 and isinstance(missing.exception, DataError)
    assert "BRAINBENCH_CLIP_WEIGHTS" in str(missing.exception)
