#!/usr/bin/env python3
"""Independent checks for `pinhole plan ablation` (numpy, scipy, nibabel); prints JSON.

  deepest LABELS CSV NAME   the deepest voxel of label NAME (scipy EDT with the NIfTI
                            voxel sizes), in LPS mm: {"label_id", "center_lps", "depth_mm"}
  coverage ABLATION_JSON    recompute, on the analysis grid the report gives, the sphere
                            tumour (from its "x,y,z,r" spec), the union of the reported
                            spheroid zones, the tumour + margin region (scipy EDT) and the
                            minimal signed margin (scipy EDTs of the zone, half-voxel
                            corrected): {"coverage_tumor_pct", "coverage_margin_pct",
                            "min_margin_mm", "tumor_voxels", "zone_voxels"}
  centroid LABELS CSV NAME  centroid of label NAME's voxels in LPS mm (nibabel affine,
                            RAS negated): {"label_id", "centroid_lps", "voxels"}
  sha256 FILE               {"sha256": hex digest}
"""

import csv
import hashlib
import json
import sys

import numpy as np


def deepest(labels_path, csv_path, name):
    import nibabel as nib
    from scipy import ndimage

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    label_id = next(int(r["id"]) for r in rows if r["structure"] == name)
    img = nib.load(labels_path)
    data = np.asarray(img.dataobj)
    mask = data == label_id
    edt = ndimage.distance_transform_edt(mask, sampling=img.header.get_zooms()[:3])
    ijk = np.unravel_index(np.argmax(edt), edt.shape)
    ras = img.affine @ np.r_[np.array(ijk, float), 1.0]
    return {
        "label_id": label_id,
        "center_lps": [-float(ras[0]), -float(ras[1]), float(ras[2])],
        "depth_mm": float(edt.max()),
    }


def centroid(labels_path, csv_path, name):
    import nibabel as nib

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    label_id = next(int(r["id"]) for r in rows if r["structure"] == name)
    img = nib.load(labels_path)
    ijk = np.argwhere(np.asarray(img.dataobj) == label_id).astype(float)
    ras = img.affine @ np.r_[ijk.mean(axis=0), 1.0]
    return {
        "label_id": label_id,
        "centroid_lps": [-float(ras[0]), -float(ras[1]), float(ras[2])],
        "voxels": int(len(ijk)),
    }


def coverage(report_path):
    from scipy import ndimage

    with open(report_path) as f:
        rep = json.load(f)
    g = rep["analysis_grid"]
    dims = g["dims"]
    h = np.array(g["spacing_mm"], float)
    origin = np.array(g["origin_lps"], float)
    direction = np.array(g["direction"], float)
    # i fastest in the file order; here arrays are indexed [i, j, k].
    i, j, k = np.meshgrid(*[np.arange(n, dtype=float) for n in dims], indexing="ij")
    idx = np.stack([i * h[0], j * h[1], k * h[2]], axis=-1)
    pts = idx @ direction.T + origin
    x, y, z, r = (float(v) for v in rep["tumor"]["spec"].split(","))
    tumor = ((pts - [x, y, z]) ** 2).sum(-1) <= r * r
    zone = np.zeros(dims, bool)
    for zn in rep["zones"]:
        c = np.array(zn["center_lps"])
        a = np.array(zn["axis_lps"])
        d = pts - c
        t = d @ a
        radial2 = np.maximum((d * d).sum(-1) - t * t, 0.0)
        zone |= (t / (zn["long_axis_mm"] / 2)) ** 2 + radial2 / (zn["short_axis_mm"] / 2) ** 2 <= 1.0
    margin = rep["margin_mm"]
    region = ndimage.distance_transform_edt(~tumor, sampling=h) <= margin + 1e-6
    d_out = ndimage.distance_transform_edt(~zone, sampling=h)  # outside: to nearest zone voxel
    d_in = ndimage.distance_transform_edt(zone, sampling=h)  # inside: to nearest non-zone voxel
    hmin = h.min()
    signed_margin = np.where(zone, d_in - hmin / 2, -(d_out - hmin / 2))
    return {
        "coverage_tumor_pct": 100.0 * (tumor & zone).sum() / tumor.sum(),
        "coverage_margin_pct": 100.0 * (region & zone).sum() / region.sum(),
        "min_margin_mm": float(signed_margin[tumor].min()),
        "tumor_voxels": int(tumor.sum()),
        "tumor_covered_voxels": int((tumor & zone).sum()),
        "zone_voxels": int(zone.sum()),
    }


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"sha256": digest.hexdigest()}


def main():
    commands = {"deepest": deepest, "centroid": centroid, "coverage": coverage, "sha256": sha256}
    if len(sys.argv) < 3 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    json.dump(commands[sys.argv[1]](*sys.argv[2:]), sys.stdout)


if __name__ == "__main__":
    main()
