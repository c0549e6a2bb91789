"""Write a simulated subject's ROIs as NSD publishes them, and per-voxel labels beside the betas.

- ``nsddata/ppdata/subjNN/func1pt8mm/roi/{nsdgeneral,prf-visualrois,streams}.nii.gz``: int16 volumes on the
  betas' grid (nibabel's (X, Y, Z)), -1 outside the brain, 0 no label;
- ``nsddata/freesurfer/subjNN/label/{atlas}.mgz.ctab``: ``VALUE NAME`` lines, from ``0 Unknown``;
- ``rois_subjNN.hdf5``: one entry per betas column (the nsdgeneral voxels in NSD's order): each atlas's
  value as an int16 dataset with a JSON ``labels`` attribute, and ``ijk`` (V, 3) NIfTI indices.
The format is written down in docs/simulator.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import h5py
import numpy as np

from brainbench.simulate.anatomy import ATLASES, Anatomy

VOXEL_ORDER = "C order over the (Z, Y, X) array (h5py's view of NSD's volumes): NIfTI X varies fastest"


def roi_folder(root: Path, subject: int) -> Path:
    return Path(root) / "nsddata" / "ppdata" / f"subj{subject:02d}" / "func1pt8mm" / "roi"


def ctab_folder(root: Path, subject: int) -> Path:
    return Path(root) / "nsddata" / "freesurfer" / f"subj{subject:02d}" / "label"


def rois_file(subject: int) -> str:
    return f"rois_subj{subject:02d}.hdf5"


def ctab_text(names: dict[int, str]) -> str:
    return "".join(f"{value} {name}\n" for value, name in sorted(names.items()))


def write_atlases(
    root: Path, subject: int, anatomy: Anatomy, atomic: Callable[[Path], AbstractContextManager[Path]]
) -> None:
    """Write the subject's ROI volumes, label tables and per-voxel labels (each file atomically)."""
    import nibabel as nib

    volumes, tables = roi_folder(root, subject), ctab_folder(root, subject)
    volumes.mkdir(parents=True, exist_ok=True)
    tables.mkdir(parents=True, exist_ok=True)
    affine = np.diag([anatomy.voxel_mm] * 3 + [1.0])
    affine[:3, 3] = -anatomy.voxel_mm * (np.array(anatomy.shape_xyz) - 1) / 2  # centred, RAS
    for atlas, names in ATLASES.items():
        image = nib.Nifti1Image(anatomy.volume(atlas), affine)
        image.header.set_xyzt_units("mm")
        with atomic(volumes / f"{atlas}.nii.gz") as tmp:
            nib.save(image, str(tmp.with_name(tmp.name + ".nii.gz")))  # nibabel picks the format by suffix
            tmp.with_name(tmp.name + ".nii.gz").replace(tmp)
        with atomic(tables / f"{atlas}.mgz.ctab") as tmp:
            tmp.write_text(ctab_text(names))
    with atomic(Path(root) / rois_file(subject)) as tmp, h5py.File(tmp, "w") as f:
        for atlas, names in ATLASES.items():
            dataset = f.create_dataset(atlas, data=anatomy.labels[atlas].astype(np.int16))
            dataset.attrs["labels"] = json.dumps({str(k): v for k, v in names.items()})
        f.create_dataset("ijk", data=anatomy.ijk.astype(np.int16))
        f.attrs["mask"] = "nsdgeneral"
        f.attrs["volume_shape"] = np.array(anatomy.shape_xyz, dtype=np.int64)
        f.attrs["order"] = VOXEL_ORDER
        f.attrs["synthetic"] = True
