"""GOD: BData files written by the ``bdpy`` package itself, read back through brainbench; zero-shot task."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from brainbench.errors import DataError
from brainbench.interfaces import EvalContext, Target
from brainbench.plugins import get_plugins

bdpy = pytest.importorskip("bdpy")

N_VOXELS, N_VC = 40, 30
TRAIN_CATS, TEST_CATS, TEST_REPEATS = (1443537, 1518878, 1621127), (2084071, 2123394, 2391049), 3


def god_samples(seed: int = 0):
    """Rows as GOD has them: 2 images per train category, 1 image x 3 repeats per test category, imagery."""
    rng = np.random.default_rng(seed)
    stim, dtype = [], []
    for cat in TRAIN_CATS:
        stim += [cat + 0.000011, cat + 0.000022]
        dtype += [1, 1]
    for _ in range(TEST_REPEATS):
        for cat in TEST_CATS:
            stim.append(cat + 0.000031)
            dtype.append(2)
    for cat in TEST_CATS:
        stim.append(float(cat))
        dtype.append(3)
    stim, dtype = np.array(stim), np.array(dtype, dtype=float)
    voxels = rng.standard_normal((len(stim), N_VOXELS))
    runs = np.arange(len(stim)) // 4 + 1.0
    return voxels, stim, dtype, runs


def write_bdpy_file(path: Path, seed: int = 0, nan_at: tuple[int, int] | None = None) -> np.ndarray:
    voxels, stim, dtype, runs = god_samples(seed)
    if nan_at is not None:
        voxels[nan_at] = np.nan
    data = bdpy.BData()
    data.add(voxels, "VoxelData")
    data.add(dtype[:, None], "DataType")
    data.add(runs[:, None], "Run")
    data.add(stim[:, None], "stimulus_id")
    data.add(stim[:, None], "Label")  # GOD's Label: the stimulus id, whose integer part is the synset
    data.add_metadata("ROI_VC", np.r_[np.ones(N_VC), np.full(N_VOXELS - N_VC, np.nan)], "visual cortex", "VoxelData")
    data.add_metadata("ROI_V1", np.r_[np.ones(10), np.full(N_VOXELS - 10, np.nan)], "V1", "VoxelData")
    data.save(str(path))
    return voxels


def test_bdpy_written_file_reads_back(tmp_path):
    voxels = write_bdpy_file(tmp_path / "Subject3.h5", seed=3)
    (tmp_path / "class_names.json").write_text(json.dumps({"n02084071": "dog", "2123394": "cat"}))
    dataset = get_plugins().datasets.create("god", root=tmp_path)
    assert dataset.subjects() == [3] and dataset.n_voxels(3) == N_VC
    assert dataset.splits() == ["train", "test", "imagery"]
    train, test, imagery = (dataset.trials(3, s) for s in ("train", "test", "imagery"))
    assert (train.n_trials, test.n_trials, imagery.n_trials) == (6, 9, 3)
    np.testing.assert_allclose(train.load(), voxels[:6, :N_VC], rtol=1e-6)
    assert train.stimulus_ids[0] == 1443537000011 and len(np.unique(test.stimulus_ids)) == 3
    assert test.sessions is not None and test.sessions[0] == 2
    names = dataset.category_names()
    test_categories = dataset.categories(test.stimulus_ids[:3])
    assert [names[c] for c in test_categories] == ["dog", "cat", "n02391049"]
    assert dataset.categories(imagery.stimulus_ids).tolist() == test_categories.tolist()
    described = dataset.describe()
    assert described["trials"][3] == {"voxels": N_VC, "train": 6, "test": 9, "imagery": 3}
    v1 = get_plugins().datasets.create("god", root=tmp_path / "Subject3.h5", roi="ROI_V1")
    assert v1.n_voxels(3) == 10


def test_legacy_names_read_the_same(tmp_path):
    (tmp_path / "modern").mkdir()
    write_bdpy_file(tmp_path / "modern" / "Subject1.h5")
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    with h5py.File(tmp_path / "modern" / "Subject1.h5", "r") as src, h5py.File(legacy / "Subject1.h5", "w") as dst:
        dst.create_dataset("dataSet", data=src["dataset"][()])
        for part in ("key", "description", "value"):
            dst.create_dataset(f"metaData/{part}", data=src[f"metadata/{part}"][()])
    modern = get_plugins().datasets.create("god", root=tmp_path / "modern")
    old = get_plugins().datasets.create("god", root=legacy)
    np.testing.assert_array_equal(modern.trials(1, "test").load(), old.trials(1, "test").load())
    np.testing.assert_array_equal(modern.trials(1, "test").stimulus_ids, old.trials(1, "test").stimulus_ids)


def test_errors_name_the_file_and_key(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        get_plugins().datasets.create("god", root=tmp_path / "nowhere")
    with pytest.raises(DataError, match="no Subject"):
        get_plugins().datasets.create("god", root=tmp_path)
    write_bdpy_file(tmp_path / "Subject1.h5")
    with pytest.raises(DataError, match=r"Subject1\.h5: ROI key 'ROI_FFA' not found; ROI keys present: ROI_VC"):
        get_plugins().datasets.create("god", root=tmp_path, roi="ROI_FFA")
    with pytest.raises(DataError, match=r"subject\(s\) \[2\]"):
        get_plugins().datasets.create("god", root=tmp_path, subjects=[2])
    with h5py.File(tmp_path / "Subject1.h5", "a") as h5:
        value = h5["metadata/value"][()]
        del h5["metadata/value"]
        h5.create_dataset("metadata/value", data=value[:, :-1])
    with pytest.raises(DataError, match=r"metadata/value has shape .*expected \(\d+ keys, 44 columns\)"):
        get_plugins().datasets.create("god", root=tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    write_bdpy_file(bad / "Subject1.h5", nan_at=(7, 2))
    with pytest.raises(DataError, match="NaN or infinite voxel values in split 'test'"):
        get_plugins().datasets.create("god", root=bad).trials(1, "test")


# ---------------------------------------------------------------------------------- simulator layout


def write_simulator_layout(root: Path, dim: int = 16, seed: int = 0) -> np.ndarray:
    """The synthetic-god layout: Subject1.h5 with image_index, and stimuli.hdf5 with embeddings."""
    rng = np.random.default_rng(seed)
    n_cat = 8  # categories 0..3 train (2 images each), 4..7 test (1 image each + 1 extra image for 7)
    category = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 7])
    class_dirs = rng.standard_normal((n_cat, dim))
    clip = class_dirs[category] + 0.3 * rng.standard_normal((len(category), dim))
    text = class_dirs[:, None, :] + 0.2 * rng.standard_normal((n_cat, 3, dim))
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "stimuli.hdf5", "w") as h5:
        h5["clip_pooled"] = clip.astype(np.float32)
        h5["category"] = category
        h5.create_dataset("category_names", data=[f"thing {k}" for k in range(n_cat)], dtype=h5py.string_dtype())
        h5["text_embeddings"] = text.astype(np.float32)
    image_index = np.r_[np.arange(8), np.tile(np.arange(8, 12), 2)].astype(float)
    dtype = np.r_[np.ones(8), np.full(8, 2.0)]
    data = bdpy.BData()
    data.add(rng.standard_normal((len(dtype), 12)), "VoxelData")
    data.add(dtype[:, None], "DataType")
    data.add(image_index[:, None], "image_index")
    data.add(category[image_index.astype(int)][:, None].astype(float), "Label")
    data.add_metadata("ROI_VC", np.ones(12), "visual cortex", "VoxelData")
    data.save(str(root / "Subject1.h5"))
    return clip


class StoredTextTarget(Target):
    """Stands in for the synthetic-clip target: stored image and text embeddings, no model."""

    name = "stored-test"
    shape = (16,)

    def embed(self, dataset, stimulus_ids):
        return dataset.stored_embeddings("clip-pooled")[np.asarray(stimulus_ids)]

    def embed_text(self, texts, dataset=None):
        return dataset.stored_text_embeddings(texts)


def zeroshot_context(dataset, predictions, ids, tmp_path):
    return EvalContext(predictions, predictions, ids, dataset, StoredTextTarget(), 1, 0, tmp_path)


def test_simulator_layout_stored_embeddings_and_prompts(tmp_path):
    clip = write_simulator_layout(tmp_path)
    dataset = get_plugins().datasets.create("god", root=tmp_path)
    test = dataset.trials(1, "test")
    assert test.stimulus_ids.tolist() == [8, 9, 10, 11] * 2
    assert dataset.categories(np.array([9, 12])).tolist() == [5, 7]
    np.testing.assert_allclose(dataset.stored_embeddings("clip-pooled"), clip, rtol=1e-6)
    by_prompt = dataset.stored_text_embeddings(["a photo of a thing 5.", "thing 5"])
    np.testing.assert_allclose(by_prompt[0], by_prompt[1])
    assert dataset.stored_text_embeddings(["a photo of a zebra."]) is None


def test_zeroshot_scores_known_answers(tmp_path):
    write_simulator_layout(tmp_path)
    dataset = get_plugins().datasets.create("god", root=tmp_path)
    task = get_plugins().tasks.create("god-zeroshot")
    assert task.default_dataset == "synthetic-god" and task.default_target == "synthetic-clip"
    ids = np.array([8, 9, 10, 11])
    text = dataset.stored_text_embeddings([f"thing {k}" for k in (4, 5, 6, 7)])
    # Repeated rows are averaged per stimulus: the true class text plus opposite noise in the two repeats.
    noise = np.random.default_rng(1).standard_normal(text.shape).astype(np.float32)
    predictions = np.concatenate([text + noise, text - noise])
    results = {r.name: r for r in task.evaluate(zeroshot_context(dataset, predictions, np.r_[ids, ids], tmp_path))}
    assert results["top1"].value == 1.0 and results["top1"].chance == pytest.approx(1 / 4)
    assert results["top5"].value == 1.0 and results["top5"].chance == 1.0
    assert results["top1"].interval[0] < 0.9 and results["top1"].interval[1] == pytest.approx(1.0)
    shifted = text[[1, 2, 3, 0]]  # every prediction points at another class
    results = {r.name: r for r in task.evaluate(zeroshot_context(dataset, shifted, ids, tmp_path))}
    assert results["top1"].value == 0.0


def test_zeroshot_image_prototypes_exclude_test_images(tmp_path):
    clip = write_simulator_layout(tmp_path)
    dataset = get_plugins().datasets.create("god", root=tmp_path)
    task = get_plugins().tasks.create("god-zeroshot", prototypes="image")
    with pytest.raises(DataError, match="besides the test images"):
        task.evaluate(zeroshot_context(dataset, clip[[8, 9, 10, 11]], np.array([8, 9, 10, 11]), tmp_path))
    # Only class 7 has a non-test image (12); a one-class problem classifies its test image correctly.
    results = task.evaluate(zeroshot_context(dataset, clip[[11]], np.array([11]), tmp_path))
    assert results[0].name == "top1" and results[0].value == 1.0 and results[0].chance == 1.0


def test_zeroshot_rejects_bad_options():
    with pytest.raises(ValueError, match="templates"):
        get_plugins().tasks.create("god-zeroshot", templates=["no placeholder"])
    with pytest.raises(ValueError, match="prototypes"):
        get_plugins().tasks.create("god-zeroshot", prototypes="audio")


TINY_OPEN_CLIP = {
    "embed_dim": 24,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def test_zeroshot_with_the_real_open_clip_target_templates_each_prompt_once(tmp_path, capsys):
    """The real OpenClipTarget (a tiny random-init open_clip config): the tokenizer sees every prompt once."""
    import open_clip

    from brainbench_clip.openclip import OpenClipTarget
    from brainbench_god.zeroshot import DEFAULT_TEMPLATES

    write_bdpy_file(tmp_path / "Subject1.h5")
    names = {"n02084071": "goldfish", "n02123394": "airliner", "n02391049": "zebra"}
    (tmp_path / "class_names.json").write_text(json.dumps(names))
    config = tmp_path / "bb-tiny-god-clip.json"
    config.write_text(json.dumps(TINY_OPEN_CLIP))
    target = OpenClipTarget(model=str(config), weights="random", device="cpu")
    seen: list[str] = []
    tokenizer = open_clip.get_tokenizer(target.model_name)
    target._tokenizer = lambda texts: seen.extend(texts) or tokenizer(texts)  # records what is embedded

    dataset = get_plugins().datasets.create("god", root=tmp_path)
    test = dataset.trials(1, "test")
    predictions = np.random.default_rng(0).standard_normal((test.n_trials, 24)).astype(np.float32)
    task = get_plugins().tasks.create("god-zeroshot")
    ctx = EvalContext(predictions, predictions, test.stimulus_ids, dataset, target, 1, 0, tmp_path)
    results = {r.name: r for r in task.evaluate(ctx)}
    assert 0.0 <= results["top1"].value <= 1.0 and results["top1"].chance == pytest.approx(1 / 3)

    class_names = [dataset.category_names()[c] for c in np.unique(dataset.categories(test.stimulus_ids))]
    assert sorted(class_names) == ["airliner", "goldfish", "zebra"]
    expected = [template.format(name) for name in class_names for template in DEFAULT_TEMPLATES]
    assert seen == expected  # each prompt embedded once, exactly as the task wrote it
    assert len(set(seen)) == len(seen) == 3 * len(DEFAULT_TEMPLATES)
    assert all(p.count(" of ") == 1 and p.count(".") == 1 for p in seen)  # one template, not one inside another
    with capsys.disabled():
        print("\nGOD zero-shot prompts embedded by OpenClipTarget (tokenizer input, in order):")
        for prompt in seen:
            print(f"  {prompt}")


def test_simulated_god_read_through_the_real_reader_is_still_synthetic(tmp_path):
    from brainbench.simulate.god import write_synthetic_god

    write_synthetic_god(tmp_path / "sim", seed=0, subjects=(1,), scale="tiny")
    dataset = get_plugins().datasets.create("god", root=tmp_path / "sim")
    assert dataset.synthetic and dataset.describe()["synthetic"] is True
    assert dataset.default_target == "synthetic-clip"
    (tmp_path / "real").mkdir()
    write_bdpy_file(tmp_path / "real" / "Subject1.h5")
    assert not get_plugins().datasets.create("god", root=tmp_path / "real").synthetic
