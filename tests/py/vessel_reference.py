#!/usr/bin/env python3
"""Independent checks for pinhole-vessel's tests, with nibabel and scipy.

Subcommands (JSON on stdout):
  labels-at LABELS POINTS_JSON   label value of the voxel nearest to each LPS point
                                 (POINTS_JSON: [[x, y, z], ...] in LPS mm), via the NIfTI
                                 affine (RAS) inverted with numpy
  adjacency LABELS ID...         pairs of the given label ids that touch (26-neighbourhood),
                                 found with scipy.ndimage.binary_dilation
"""
import json
import sys

import numpy as np


def load(path):
    import nibabel as nib

    img = nib.load(path)
    return img, np.asarray(img.dataobj)


def labels_at(path, points_json):
    img, data = load(path)
    with open(points_json) as f:
        lps = np.asarray(json.load(f), dtype=np.float64)
    ras = lps * np.array([-1.0, -1.0, 1.0])
    homogeneous = np.c_[ras, np.ones(len(ras))]
    ijk = (np.linalg.inv(img.affine) @ homogeneous.T).T[:, :3]
    idx = np.rint(ijk).astype(int)
    inside = np.all((idx >= 0) & (idx < np.array(data.shape[:3])), axis=1)
    values = [int(data[tuple(i)]) if ok else -1 for i, ok in zip(idx, inside)]
    print(json.dumps(values))


def adjacency(path, ids):
    from scipy import ndimage

    _, data = load(path)
    ids = [int(i) for i in ids]
    pairs = []
    structure = np.ones((3, 3, 3), dtype=bool)
    for n, a in enumerate(ids):
        grown = ndimage.binary_dilation(data == a, structure=structure)
        for b in ids[n + 1:]:
            if np.any(grown & (data == b)):
                pairs.append(sorted([a, b]))
    print(json.dumps(sorted(pairs)))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "labels-at":
        labels_at(*args)
    elif command == "adjacency":
        adjacency(args[0], args[1:])
    else:
        sys.exit(f"unknown command {command}")
