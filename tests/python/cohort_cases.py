"""A test cohort built from real data: crops, storage flips and sphere targets of the
TotalSegmentator example abdomen CT (``abdomen-ct/example_ct_sm.nii.gz`` and its label
map ``example_seg.nii.gz``, TotalSegmentator repository ``tests/reference_files/``,
Apache-2.0; see ``shared/data/README.md``).

Every derived volume keeps the world geometry: a crop shifts the affine's origin by the
crop's first voxel, a storage flip reverses one array axis and maps index ``i`` to
``n - 1 - i`` in the affine, so the same voxel sits at the same LPS position. A flipped
case therefore must plan the same best path as its unflipped peer (``same_as``).

NOT FOR CLINICAL USE.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import nibabel as nib
import numpy as np

#: nibabel affines are RAS; LPS = diag(-1, -1, 1) . RAS.
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: TotalSegmentator v2 ("total") label ids used here.
LABEL_IDS: Dict[str, int] = {"kidney_right": 2, "kidney_left": 3, "liver": 5}
CT_NAME = "example_ct_sm.nii.gz"
LABELS_NAME = "example_seg.nii.gz"
DEFAULT_PROCEDURE = "kidney-biopsy"


def data_dir() -> Path:
    """``$PINHOLE_DATA`` or the project's ``../shared/data``."""
    env = os.environ.get("PINHOLE_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass(frozen=True)
class Source:
    """The source CT (HU) and label map on one grid, with their headers."""

    ct: np.ndarray
    labels: np.ndarray
    affine_ras: np.ndarray
    ct_header: nib.Nifti1Header
    labels_header: nib.Nifti1Header


@dataclass(frozen=True)
class CaseSpec:
    """One manifest row and what the test expects of it."""

    case: str
    ct: str  # relative to the manifest folder
    labels: str
    target: str
    procedure: str = ""  # empty: the run's default
    expect_ok: bool = True
    #: A case whose best path this one must equal (same world geometry).
    same_as: Optional[str] = None


@dataclass(frozen=True)
class Cohort:
    root: Path
    manifest: Path
    cases: List[CaseSpec]

    def by_id(self) -> Dict[str, CaseSpec]:
        return {c.case: c for c in self.cases}


def load_source(data: Optional[Path] = None) -> Source:
    folder = (data or data_dir()) / "abdomen-ct"
    ct = nib.load(str(folder / CT_NAME))
    labels = nib.load(str(folder / LABELS_NAME))
    if not np.allclose(ct.affine, labels.affine) or ct.shape != labels.shape:
        raise ValueError("the example CT and label map are not on one grid")
    return Source(
        ct=np.asarray(ct.dataobj),
        labels=np.asarray(labels.dataobj),
        affine_ras=np.asarray(ct.affine, dtype=np.float64),
        ct_header=ct.header,
        labels_header=labels.header,
    )


# --------------------------------------------------------------------------- geometry


def crop(array: np.ndarray, affine_ras: np.ndarray, lo: Sequence[int], hi: Sequence[int]
         ) -> Tuple[np.ndarray, np.ndarray]:
    """The sub-box ``[lo, hi)`` and its affine (voxel ``lo`` keeps its world position)."""
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    affine = affine_ras.copy()
    affine[:3, 3] += affine_ras[:3, :3] @ np.asarray(lo, dtype=np.float64)
    return np.ascontiguousarray(array[box]), affine


def flip(array: np.ndarray, affine_ras: np.ndarray, axis: int) -> Tuple[np.ndarray, np.ndarray]:
    """``array`` reversed along ``axis`` and the affine mapping each voxel to where it was."""
    reindex = np.eye(4)
    reindex[axis, axis] = -1.0
    reindex[axis, 3] = array.shape[axis] - 1
    return np.ascontiguousarray(np.flip(array, axis)), affine_ras @ reindex


def label_box(labels: np.ndarray, label: str, margin_vox: Sequence[int]
              ) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """The label's bounding box grown by ``margin_vox`` per axis, inside the volume."""
    where = np.argwhere(labels == LABEL_IDS[label])
    if where.size == 0:
        raise ValueError(f"label {label} has no voxel")
    lo = np.maximum(where.min(0) - np.asarray(margin_vox), 0)
    hi = np.minimum(where.max(0) + 1 + np.asarray(margin_vox), labels.shape)
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi)


def interior_points_lps(source: Source, label: str, count: int) -> List[np.ndarray]:
    """``count`` voxel centres (LPS mm) of the label whose 6 neighbours are all in the
    label, spread along the label's interior ordered by distance to its centroid."""
    mask = source.labels == LABEL_IDS[label]
    interior = mask.copy()
    for axis in range(3):
        for shift in (1, -1):
            interior &= np.roll(mask, shift, axis=axis)
    for axis in range(3):  # np.roll wraps: the volume's faces are not interior
        index = [slice(None)] * 3
        for edge in (0, -1):
            index[axis] = edge
            interior[tuple(index)] = False
    voxels = np.argwhere(interior)
    if len(voxels) < count:
        raise ValueError(f"label {label}: only {len(voxels)} interior voxels")
    order = np.argsort(np.linalg.norm(voxels - voxels.mean(0), axis=1), kind="stable")
    picks = voxels[order[:: max(1, len(order) // (count + 1))][:count]]
    to_lps = LPS_FROM_RAS @ source.affine_ras
    return [(to_lps @ np.append(v.astype(np.float64), 1.0))[:3] for v in picks]


def sphere_target(center_lps: np.ndarray, radius_mm: float) -> str:
    """The planner's ``x,y,z,r`` target (LPS mm)."""
    return ",".join(f"{v:.4f}" for v in center_lps) + f",{radius_mm:g}"


# --------------------------------------------------------------------------- files


def write_pair(root: Path, name: str, source: Source, ct: np.ndarray, labels: np.ndarray,
               affine_ras: np.ndarray) -> Tuple[str, str]:
    """Writes ``inputs/<name>/ct.nii.gz`` and ``labels.nii.gz``; returns them relative
    to ``root``."""
    folder = root / "inputs" / name
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(ct, affine_ras, source.ct_header.copy()), str(folder / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(labels, affine_ras, source.labels_header.copy()),
             str(folder / "labels.nii.gz"))
    return f"inputs/{name}/ct.nii.gz", f"inputs/{name}/labels.nii.gz"


def write_crop(root: Path, name: str, source: Source, lo: Sequence[int], hi: Sequence[int]
               ) -> Tuple[str, str]:
    ct, affine = crop(source.ct, source.affine_ras, lo, hi)
    labels, _ = crop(source.labels, source.affine_ras, lo, hi)
    return write_pair(root, name, source, ct, labels, affine)


def write_manifest(path: Path, cases: Sequence[CaseSpec]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "ct", "labels", "target", "procedure"])
        for c in cases:
            writer.writerow([c.case, c.ct, c.labels, c.target, c.procedure])


# --------------------------------------------------------------------------- the cohort


def _flip_cases(root: Path, source: Source) -> List[CaseSpec]:
    cases = []
    for axis, letter in enumerate("ijk"):
        ct, affine = flip(source.ct, source.affine_ras, axis)
        labels, _ = flip(source.labels, source.affine_ras, axis)
        ct_rel, labels_rel = write_pair(root, f"flip-{letter}", source, ct, labels, affine)
        for kidney in ("kidney_left", "kidney_right"):
            cases.append(CaseSpec(f"flip{letter}-{kidney}", ct_rel, labels_rel, kidney,
                                  same_as=f"full-{kidney}"))
    return cases


def _sphere_cases(full: Tuple[str, str], flipped: Dict[str, Tuple[str, str]], source: Source
                  ) -> List[CaseSpec]:
    """Spheres ``x,y,z,r`` inside each kidney, away from its centre; two of each side
    again on flipped storage (``flipped``: letter -> (ct, labels))."""
    cases = []
    for kidney, side in (("kidney_left", "left"), ("kidney_right", "right")):
        points = interior_points_lps(source, kidney, 2)
        targets = [sphere_target(p, r) for p, r in zip(points, (6.0, 9.0))]
        for n, target in enumerate(targets):
            cases.append(CaseSpec(f"sphere-{side}-{n}", *full, target))
        for n, letter in ((0, "i"), (1, "k")):
            cases.append(CaseSpec(f"flip{letter}-sphere-{side}-{n}", *flipped[letter],
                                  targets[n], same_as=f"sphere-{side}-{n}"))
    return cases


def _posterior_box(source: Source, kidney: str
                   ) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """The kidney's i-range (+15 voxels), all slices, and along j everything posterior
    of the kidney's anterior edge (the back's skin stays in the crop)."""
    lo, hi = label_box(source.labels, kidney, (15, 0, 0))
    n_j, n_k = source.labels.shape[1:]
    if source.affine_ras[1, 1] > 0:  # j grows anterior (RAS +y): keep j < hi
        return (lo[0], 0, 0), (hi[0], hi[1], n_k)
    return (lo[0], lo[1], 0), (hi[0], n_j, n_k)


def _crop_cases(root: Path, source: Source) -> List[CaseSpec]:
    cases = []
    for kidney, side in (("kidney_left", "left"), ("kidney_right", "right")):
        for tag, margin in (("tight", (12, 12, 0)), ("wide", (20, 30, 0))):
            lo, hi = label_box(source.labels, kidney, margin)
            rel = write_crop(root, f"crop-{tag}-{side}", source, lo, hi)
            cases.append(CaseSpec(f"crop-{tag}-{side}", *rel, kidney))
        rel = write_crop(root, f"crop-posterior-{side}", source,
                         *_posterior_box(source, kidney))
        cases.append(CaseSpec(f"crop-posterior-{side}", *rel, kidney))
    lo, hi = label_box(source.labels, "liver", (10, 10, 0))
    rel = write_crop(root, "crop-liver", source, lo, hi)
    cases.append(CaseSpec("crop-liver", *rel, "liver", procedure="liver-biopsy"))
    return cases


def failing_crop_box(source: Source) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """A box along ``i`` holding all of kidney_right and no voxel of kidney_left."""
    left_i = np.argwhere(source.labels == LABEL_IDS["kidney_left"])[:, 0]
    right_i = np.argwhere(source.labels == LABEL_IDS["kidney_right"])[:, 0]
    shape = source.labels.shape
    if left_i.max() < right_i.min():
        return (int(left_i.max()) + 1, 0, 0), tuple(shape)
    if right_i.max() < left_i.min():
        return (0, 0, 0), (int(left_i.min()), shape[1], shape[2])
    raise ValueError("the kidneys overlap along i: no crop separates them")


def build_cohort(root: Path, data: Optional[Path] = None) -> Cohort:
    """Writes the cohort's inputs and ``manifest.csv`` under ``root``: 27 cases, one
    deliberately failing (``missing-kidney-left``: a crop without kidney_left)."""
    root.mkdir(parents=True, exist_ok=True)
    source = load_source(data)
    full = write_pair(root, "full", source, source.ct, source.labels, source.affine_ras)
    cases = [
        CaseSpec("full-kidney_left", *full, "kidney_left"),
        CaseSpec("full-kidney_right", *full, "kidney_right"),
        CaseSpec("full-liver", *full, "liver", procedure="liver-biopsy"),
    ]
    flips = _flip_cases(root, source)
    cases += flips
    flipped = {c.case[4]: (c.ct, c.labels) for c in flips}  # "flipi-..." -> "i"
    cases += _sphere_cases(full, flipped, source)
    cases += _crop_cases(root, source)
    rel = write_crop(root, "missing-kidney-left", source, *failing_crop_box(source))
    cases.append(CaseSpec("missing-kidney-left", *rel, "kidney_left", expect_ok=False))
    manifest = root / "manifest.csv"
    write_manifest(manifest, cases)
    return Cohort(root, manifest, cases)
