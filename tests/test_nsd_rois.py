"""NSD ROIs: `data prepare nsd --roi` on a raw-NSD tree written by nibabel / scipy.io / h5py (atlases as NIfTI,
names from .mgz.ctab or NSD's numbering), per-voxel labels beside the betas, and `--dataset-opt roi=...`."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from brainbench.errors import DataError
from brainbench_nsd.dataset import open_nsd
from brainbench_nsd.prepare import prepare_nsd
from brainbench_nsd.rois import parse_spec, read_ctab
from tests.nsd_fixtures import expected_prepared_betas, write_fake_nsd

TRIALS = 20
ALL_ATLASES = "nsdgeneral,prf-visualrois,streams,floc-faces"


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return write_fake_nsd(tmp_path_factory.mktemp("raw") / "NSD", sessions=2, trials_per_session=TRIALS,
                          volume=(9, 8, 7), n_ids=200)


def prepared(fake, folder, roi):
    return prepare_nsd(fake.root, folder, 1, trials_per_session=TRIALS, roi=roi)


def test_voxel_counts_per_roi_equal_the_atlas_labels(fake, tmp_path):
    result = prepared(fake, tmp_path / "all", ALL_ATLASES)
    union = np.zeros_like(fake.mask)
    for values in fake.atlases.values():
        union |= values > 0
    assert result.n_voxels == int(union.sum())
    # Every label of every atlas: the voxels stored with it are the atlas's voxels with its value.
    for atlas, names in fake.label_names.items():
        for value, name in names.items():
            assert result.label_counts[atlas][name] == int((fake.atlases[atlas] == value).sum()), (atlas, name)
    with h5py.File(result.voxel_labels) as f:
        assert f.attrs["mask"] == ALL_ATLASES and list(f.attrs["volume_shape"]) == [9, 8, 7]
        ijk = f["ijk"][:]
        for atlas, values in fake.atlases.items():  # each column's label is the atlas value at its voxel
            np.testing.assert_array_equal(f[atlas][:], values[ijk[:, 0], ijk[:, 1], ijk[:, 2]])
        assert json.loads(f["streams"].attrs["labels"])["5"] == "ventral"  # from the ctab
        assert json.loads(f["prf-visualrois"].attrs["labels"])["7"] == "hV4"  # NSD's numbering, no ctab
        assert json.loads(f["floc-faces"].attrs["labels"])["2"] == "FFA-1"  # only its ctab names it
    # The betas columns are those voxels in h5py's C order (X fastest), z-scored per session.
    with h5py.File(result.betas) as f:
        np.testing.assert_allclose(f["betas"][:], expected_prepared_betas(fake, union), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("spec", "atlas", "values"),
    [
        ("V1v,V1d", "prf-visualrois", [1, 2]),  # bare label names, found in the atlas holding them
        ("streams:ventral", "streams", [5]),
        ("prf-visualrois:V1v+V1d+V2v", "prf-visualrois", [1, 2, 3]),  # a union within one atlas
        ("floc-faces:FFA-1+2", "floc-faces", [2]),  # a name from the ctab and a value are the same label
        ("streams", "streams", list(range(1, 8))),  # an atlas alone: every labelled voxel
    ],
)
def test_prepare_keeps_exactly_the_voxels_of_an_roi(fake, tmp_path, spec, atlas, values):
    result = prepared(fake, tmp_path / "roi", spec)
    mask = np.isin(fake.atlases[atlas], values)
    assert result.n_voxels == int(mask.sum()) and result.roi == spec
    with h5py.File(result.betas) as f:
        np.testing.assert_allclose(f["betas"][:], expected_prepared_betas(fake, mask), rtol=1e-5, atol=1e-5)
        assert spec in f.attrs["source"]


def test_unknown_rois_are_named_with_the_atlas_file_and_its_labels(fake, tmp_path):
    with pytest.raises(DataError) as err:
        prepared(fake, tmp_path / "a", "prf-visualrois:V5")
    message = str(err.value)
    assert "prf-visualrois.nii.gz" in message and "no label 'V5'" in message
    assert "1 V1v, 2 V1d, 3 V2v, 4 V2d, 5 V3v, 6 V3d, 7 hV4" in message
    with pytest.raises(DataError, match=r"streams\.nii\.gz \(names from .*streams\.mgz\.ctab\).*5 ventral"):
        prepared(fake, tmp_path / "b", "streams:dorsal")
    with pytest.raises(DataError, match=r"no atlas has a label 'FFA'; available: floc-faces \(1 OFA, 2 FFA-1"):
        prepared(fake, tmp_path / "c", "FFA")
    with pytest.raises(DataError, match=r"Kastner2015\.nii\.gz: ROI atlas 'Kastner2015' not found; atlases in "
                                        r".*: floc-faces, nsdgeneral, prf-visualrois, streams"):
        prepared(fake, tmp_path / "d", "Kastner2015:V1")
    with pytest.raises(DataError, match="atlas:label"):
        parse_spec("streams:")


def test_ctab_lines_with_and_without_colours(tmp_path):
    path = tmp_path / "x.mgz.ctab"
    path.write_text("# a comment\n0\tUnknown\n1\tV1v\t255 0 0 0\n\n12  hV4\n")
    assert read_ctab(path) == {0: "Unknown", 1: "V1v", 12: "hV4"}
    path.write_text("zero Unknown\n")
    with pytest.raises(DataError, match="line 1 is not 'VALUE NAME"):
        read_ctab(path)


def write_targets(folder, n_ids=200, seed=0):
    pooled = np.random.default_rng(seed).standard_normal((n_ids, 768)).astype(np.float32)
    with h5py.File(folder / "clip_targets.hdf5", "w") as f:
        f.create_dataset("pooled", data=pooled)


def test_dataset_roi_option_selects_the_labelled_voxels_at_run_time(fake, tmp_path, monkeypatch):
    out = tmp_path / "prepared"
    prepared(fake, out, ALL_ATLASES)
    union = np.zeros_like(fake.mask)
    for values in fake.atlases.values():
        union |= values > 0
    full = expected_prepared_betas(fake, union)
    x, y, z = np.nonzero(union)
    order = np.lexsort((x, y, z))  # the betas' column order: X fastest
    columns_of = {name: values[x[order], y[order], z[order]] for name, values in fake.atlases.items()}
    is_test = fake.shared[fake.image_of_trial]
    for spec, chosen in (("V1v", columns_of["prf-visualrois"] == 1),
                         ("streams:ventral+lateral,floc-faces:OFA",
                          np.isin(columns_of["streams"], [5, 6]) | (columns_of["floc-faces"] == 1))):
        ds = open_nsd(out, roi=spec)
        assert ds.n_voxels(1) == int(chosen.sum()) and ds.describe()["roi"] == spec
        np.testing.assert_allclose(ds.trials(1, "test").load(), full[np.flatnonzero(is_test)][:, chosen],
                                   rtol=1e-5, atol=1e-5)
        labels = ds.voxel_labels(1)
        assert len(labels["streams"].values) == int(chosen.sum())
    unknown = r"rois_subj01\.hdf5:streams: atlas 'streams' has no label 'V9'; its labels: 1 early"
    with pytest.raises(DataError, match=unknown):
        open_nsd(out, roi="streams:V9").n_voxels(1)
    bare = tmp_path / "bare"
    prepared(fake, bare, "nsdgeneral")
    (bare / "rois_subj01.hdf5").unlink()
    with pytest.raises(DataError, match=r"rois_subj01\.hdf5: not found, so roi='V1v' cannot be selected"):
        open_nsd(bare, roi="V1v").n_voxels(1)

    # A run through the CLI: the encoder sees the ROI's voxels only.
    from brainbench.cli.app import build_app

    write_targets(out)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRAINBENCH_HOME", str(tmp_path / "home"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = CliRunner().invoke(build_app(), [
        "run", "ridge", "--dataset", "nsd", "--data-path", str(out), "--target", "synthetic-clip",
        "--dataset-opt", "roi=V1v", "--device", "cpu", "--tracking-uri", uri], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    n_v1v = int((columns_of["prf-visualrois"] == 1).sum())
    assert f"{n_v1v} voxels" in done.output
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("brainbench").experiment_id])[0]
    assert run.data.params["n_voxels"] == str(n_v1v) and run.data.params["dataset.roi"] == "V1v"
    # The run logs the noise ceiling of the voxels it read, per labelled region too; compare shows it.
    from brainbench.noise_ceiling import noise_ceiling

    test = open_nsd(out, roi="V1v").trials(1, "test")
    expected = noise_ceiling(test.load(), test.stimulus_ids)
    assert run.data.metrics["data.noise_ceiling_median"] == pytest.approx(expected.median)
    assert run.data.metrics["data.noise_ceiling.prf-visualrois.V1v"] == pytest.approx(expected.median)
    assert run.data.metrics["data.noise_ceiling_n"] == pytest.approx(3.0)  # the shared images' 3 repeats
    shown = CliRunner().invoke(build_app(), ["compare", "--all", "--tracking-uri", uri], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert (f"noise ceiling (NSD formula from the test repeats, median over voxels): subject 1 "
            f"{expected.median:.1f}% (ncsnr {expected.median_ncsnr:.3f})") in " ".join(shown.output.split())


@pytest.mark.parametrize("layout", ["mindeye1", "litemind"])
def test_layouts_without_voxel_labels_refuse_an_roi(tmp_path, layout):
    with pytest.raises(DataError, match=rf"roi='V1v' selects voxels .* is in the {layout} layout"):
        open_nsd(tmp_path, layout=layout, roi="V1v")
