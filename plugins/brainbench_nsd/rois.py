"""NSD regions of interest: the release's atlases, ROI specs, and the per-voxel labels stored beside the betas.

Atlases as NSD publishes them (read with nibabel, axes (X, Y, Z), on the betas' grid): one volume per atlas in
``nsddata/ppdata/subjNN/func1pt8mm/roi/<atlas>.nii.gz``, -1 outside the brain mask, 0 no label, 1.. a label.
Label names come from ``nsddata/freesurfer/subjNN/label/<atlas>.mgz.ctab`` (``VALUE NAME ...`` lines) when
present, else from NSD's published numbering (``BUILTIN_LABELS``; the floc-* atlases need their ctab or a
label value).

An ROI spec names voxels (``parse_spec``): comma-separated terms, their union. A term is an atlas (every
labelled voxel: ``nsdgeneral``, ``streams``), ``atlas:label[+label...]`` (``prf-visualrois:V1v+V1d``,
``floc-faces:2`` by value), or a bare label name found in whichever atlas holds it (``V1v,V1d``).

Per-voxel labels (``rois_subjNN.hdf5``, the format docs/simulator.md agrees with the simulator), one entry per
betas column in the betas' column order: a dataset per atlas, (n_voxels,) int16 with the atlas value at that
voxel and the attribute ``labels`` (JSON value -> name); ``ijk`` (n_voxels, 3) int16, each voxel's NIfTI index;
file attributes ``mask`` (the ROI spec the betas hold), ``volume_shape`` (X, Y, Z) and ``order``. The NSD
dataset's ``roi=`` option selects betas columns by the same specs against this file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainbench.errors import DataError

DEFAULT_ROI = "nsdgeneral"
#: NSD's numbering where the release's own ctab may be absent (from the NSD data manual).
BUILTIN_LABELS: dict[str, dict[int, str]] = {
    "nsdgeneral": {1: "nsdgeneral"},
    "prf-visualrois": {1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d", 7: "hV4"},
    "streams": {1: "early", 2: "midventral", 3: "midlateral", 4: "midparietal", 5: "ventral", 6: "lateral",
                7: "parietal"},
}
#: Atlases whose labels prepare stores beside the betas when the release has them.
LABEL_ATLASES = ("nsdgeneral", "prf-visualrois", "streams", "floc-faces", "floc-bodies", "floc-places",
                 "floc-words")
ORDER = "C order over the (Z, Y, X) array as h5py reads NSD's session files, i.e. NIfTI X fastest"
IJK = "ijk"


def roi_folder(nsd_root: Path, subject: int) -> Path:
    return Path(nsd_root) / "nsddata" / "ppdata" / f"subj{subject:02d}" / "func1pt8mm" / "roi"


def atlas_file(nsd_root: Path, subject: int, atlas: str) -> Path:
    return roi_folder(nsd_root, subject) / f"{atlas}.nii.gz"


def ctab_file(nsd_root: Path, subject: int, atlas: str) -> Path:
    return Path(nsd_root) / "nsddata" / "freesurfer" / f"subj{subject:02d}" / "label" / f"{atlas}.mgz.ctab"


def labels_file_name(subject: int) -> str:
    return f"rois_subj{subject:02d}.hdf5"


def read_ctab(path: Path) -> dict[int, str]:
    """A FreeSurfer colour table as NSD ships it: ``VALUE NAME [R G B A]`` per line; ``#`` comments."""
    labels: dict[int, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) < 2 or not re.fullmatch(r"-?\d+", fields[0]):
            raise DataError(f"{path}: line {number} is not 'VALUE NAME ...': {line.strip()!r}")
        labels[int(fields[0])] = fields[1]
    return labels


@dataclass(frozen=True)
class Atlas:
    """One atlas: its values per voxel (any shape) and its label names (0 and below: no label)."""

    name: str
    values: np.ndarray
    labels: dict[int, str]
    source: str  # where it was read, for error messages

    def label_names(self) -> list[str]:
        return [name for value, name in sorted(self.labels.items()) if value > 0]

    def describe(self) -> str:
        return ", ".join(f"{value} {name}" for value, name in sorted(self.labels.items()) if value > 0) or "none named"


def load_atlas(nsd_root: Path, subject: int, name: str) -> Atlas:
    """An atlas of the raw release as a (Z, Y, X) int volume (h5py's order, like the session betas)."""
    path = atlas_file(nsd_root, subject, name)
    if not path.exists():
        present = sorted(p.name.removesuffix(".nii.gz") for p in path.parent.glob("*.nii.gz"))
        raise DataError(
            f"{path}: ROI atlas {name!r} not found; atlases in {path.parent}: {', '.join(present) or 'none'}"
        )
    from brainbench_nsd.prepare import field_library

    nibabel = field_library("nibabel")
    try:
        volume = np.asarray(nibabel.load(str(path)).get_fdata())
    except Exception as err:  # nibabel raises many kinds for a damaged file
        raise DataError(f"{path}: not a readable NIfTI file ({err})") from None
    if volume.ndim != 3:
        raise DataError(f"{path}: volume has shape {volume.shape}; expected 3-D (X, Y, Z)")
    ctab = ctab_file(nsd_root, subject, name)
    if ctab.exists():
        labels, source = read_ctab(ctab), f"{path} (names from {ctab})"
    else:
        labels, source = dict(BUILTIN_LABELS.get(name, {})), f"{path} (NSD's published numbering; no {ctab})"
    values = np.rint(volume).astype(np.int16).transpose(2, 1, 0)  # nibabel (X, Y, Z) -> h5py (Z, Y, X)
    return Atlas(name, values, labels, source)


# ------------------------------------------------------------------------------------------------ specs


@dataclass(frozen=True)
class Term:
    atlas: str | None  # None: find the labels in whichever atlas holds them
    labels: tuple[str, ...]  # empty: every labelled voxel of the atlas


def parse_spec(spec: str) -> list[Term]:
    """``"V1v,streams:ventral+lateral,nsdgeneral"`` -> terms (their union is the ROI)."""
    terms = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            raise DataError(f"ROI {spec!r}: an empty term; write e.g. nsdgeneral, V1v,V1d or streams:ventral")
        atlas, _, labels = part.partition(":")
        if ":" in part:
            names = tuple(n.strip() for n in labels.split("+"))
            if not atlas.strip() or not all(names):
                raise DataError(f"ROI {spec!r}: {part!r} must read atlas:label[+label...]")
            terms.append(Term(atlas.strip(), names))
        else:
            terms.append(Term(None, (part,)))
    return terms


def _values_of(atlas: Atlas, label: str, where: str) -> int:
    by_name = {name.lower(): value for value, name in atlas.labels.items() if value > 0}
    if label.lower() in by_name:
        return by_name[label.lower()]
    if re.fullmatch(r"\d+", label) and int(label) > 0:
        return int(label)
    raise DataError(
        f"{where}: atlas {atlas.name!r} has no label {label!r}; its labels: {atlas.describe()}"
    )


def select(spec: str, atlases: Mapping[str, Atlas], where: str) -> np.ndarray:
    """The ROI of ``spec`` as a bool array shaped like the atlases' values.

    ``atlases`` maps each available atlas name to its Atlas; ``where`` names what holds them (the release's
    ROI folder or a per-voxel labels file) in errors.
    """
    if not atlases:
        raise DataError(f"{where}: no ROI atlases to select {spec!r} from")
    shape = next(iter(atlases.values())).values.shape
    inside = np.zeros(shape, dtype=bool)
    for term in parse_spec(spec):
        if term.atlas is not None or term.labels[0] in atlases:
            name = term.atlas or term.labels[0]
            if name not in atlases:
                raise DataError(f"{where}: no ROI atlas {name!r}; available: {available(atlases)}")
            atlas = atlases[name]
            if term.atlas is None:  # the whole atlas
                inside |= atlas.values > 0
                continue
            wanted = [_values_of(atlas, label, atlas.source) for label in term.labels]
            inside |= np.isin(atlas.values, wanted)
            continue
        label = term.labels[0]
        holders = [a for a in atlases.values() if label.lower() in (n.lower() for n in a.label_names())]
        if not holders:
            raise DataError(f"{where}: no atlas has a label {label!r}; available: {available(atlases)}")
        if len(holders) > 1:
            names = ", ".join(f"{a.name}:{label}" for a in holders)
            raise DataError(f"{where}: label {label!r} is in {len(holders)} atlases; write one of {names}")
        inside |= holders[0].values == _values_of(holders[0], label, holders[0].source)
    return inside


def available(atlases: Mapping[str, Atlas]) -> str:
    """Every selectable ROI, for error messages: ``streams (1 early, ...); prf-visualrois (...)``."""
    return "; ".join(f"{name} ({atlas.describe()})" for name, atlas in sorted(atlases.items()))


def release_atlases(nsd_root: Path, subject: int, spec: str) -> dict[str, Atlas]:
    """The atlases ``spec`` needs and those whose labels prepare stores, as far as the release holds them.

    A bare label name is looked up in every label atlas present, so all of them are loaded.
    """
    folder = roi_folder(nsd_root, subject)
    wanted = {t.atlas or t.labels[0] for t in parse_spec(spec)}
    names = [n for n in LABEL_ATLASES if atlas_file(nsd_root, subject, n).exists()]
    names += sorted(n for n in wanted if n not in names and atlas_file(nsd_root, subject, n).exists())
    missing_atlases = [t.atlas for t in parse_spec(spec) if t.atlas and t.atlas not in names]
    if missing_atlases:
        load_atlas(nsd_root, subject, missing_atlases[0])  # raises, naming the file and what is there
    if not names:
        raise DataError(f"{folder}: no ROI atlases (expected e.g. nsdgeneral.nii.gz)")
    return {name: load_atlas(nsd_root, subject, name) for name in names}


# ------------------------------------------------------------------------------ per-voxel labels file


def write_voxel_labels(path: Path, mask: np.ndarray, atlases: Mapping[str, Atlas], spec: str) -> None:
    """``rois_subjNN.hdf5`` for the betas columns ``mask`` (Z, Y, X) selects; written then renamed."""
    import os

    import h5py

    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as handle:
        for name, atlas in atlases.items():
            ds = handle.create_dataset(name, data=atlas.values[mask].astype(np.int16))
            ds.attrs["labels"] = json.dumps({str(v): n for v, n in sorted(atlas.labels.items())})
            ds.attrs["source"] = atlas.source
        handle.create_dataset(IJK, data=np.argwhere(mask)[:, ::-1].astype(np.int16))
        handle.attrs["mask"] = spec
        handle.attrs["volume_shape"] = np.array(mask.shape[::-1], dtype=np.int64)
        handle.attrs["order"] = ORDER
    os.replace(tmp, path)


def read_voxel_labels(path: Path, n_voxels: int) -> dict[str, Atlas]:
    """The per-voxel atlases of a ``rois_subjNN.hdf5``, checked against the betas' column count."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err})") from None
    atlases = {}
    with handle:
        for name in handle:
            if name == IJK:
                continue
            ds = handle[name]
            if ds.shape != (n_voxels,):
                raise DataError(f"{path}: {name!r} has shape {ds.shape}; expected ({n_voxels},), one label per "
                                "betas column")
            try:
                labels = {int(k): str(v) for k, v in json.loads(ds.attrs.get("labels", "{}")).items()}
            except (ValueError, TypeError, AttributeError):
                raise DataError(f"{path}: {name!r} attribute 'labels' is not a JSON object of value -> name") from None
            atlases[name] = Atlas(name, ds[:].astype(np.int16), labels, f"{path}:{name}")
    return atlases


def label_counts(atlases: Mapping[str, Atlas], within: np.ndarray | None = None) -> dict[str, dict[str, int]]:
    """Voxels per named label of each atlas (within a selection when given)."""
    counts = {}
    for name, atlas in atlases.items():
        values = atlas.values if within is None else atlas.values[within]
        counts[name] = {label: int((values == value).sum()) for value, label in sorted(atlas.labels.items())
                        if value > 0}
    return counts
