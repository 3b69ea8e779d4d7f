"""Independent nearest-structure distances for the guidance server tests (brute force).

usage: guidance_reference.py LABELS.nii.gz STRUCTURES.csv QUERY.json
QUERY.json: {"points_lps": [[x, y, z], ...], "labels": ["aorta", ...]}
Prints {"distances": [{label: mm, ...} per point], "label_at": [name or null per point]}:
for every point, the distance (mm) from the point to the nearest voxel centre of each
label, computed with nibabel's affine (RAS) turned to LPS and plain numpy.
"""
import csv
import json
import sys

import nibabel as nib
import numpy as np


def main(labels_path, table_path, query_path):
    img = nib.load(labels_path)
    data = np.asanyarray(img.dataobj).astype(np.int64)
    ras = img.affine
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ras
    with open(table_path) as fh:
        rows = list(csv.DictReader(fh))
    id_of = {r["structure"]: int(r["id"]) for r in rows}
    name_of = {v: k for k, v in id_of.items()}
    query = json.load(open(query_path))
    points = np.asarray(query["points_lps"], float)
    coords = {}
    for name in query["labels"]:
        if name not in id_of:
            continue
        ijk = np.argwhere(data == id_of[name])
        if len(ijk) == 0:
            continue
        coords[name] = ijk @ lps[:3, :3].T + lps[:3, 3]
    out = {"distances": [], "label_at": []}
    inv = np.linalg.inv(lps)
    for p in points:
        out["distances"].append({n: float(np.sqrt(((c - p) ** 2).sum(1)).min()) for n, c in coords.items()})
        ijk = np.rint(inv[:3, :3] @ p + inv[:3, 3]).astype(int)
        inside = all(0 <= ijk[a] < data.shape[a] for a in range(3))
        out["label_at"].append(name_of.get(int(data[tuple(ijk)])) if inside else None)
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:4])
