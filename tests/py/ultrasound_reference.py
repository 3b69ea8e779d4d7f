#!/usr/bin/env python3
"""Independent reference reslice with SimpleITK (ITK's ResampleImageFilter), written from
the plane convention in `crates/ultrasound/src/plane.rs`, not from the Rust code.

Usage: ultrasound_reference.py CT LABELS PLANES_JSON OUT_DIR OUTSIDE_HU

PLANES_JSON holds a list of planes, each {"image_to_lps": 4x4 row-major, "width": W,
"height": H}: pixel (i, j)'s centre lies at origin + i*col_x + j*col_y (LPS mm).

For plane n writes OUT_DIR/<n>_ct.f32 (raw little-endian float32, i fastest) with the CT
resampled linearly (outside: OUTSIDE_HU) and OUT_DIR/<n>_labels.u16 (uint16) with the
labels resampled nearest-neighbour (outside: 0). Prints JSON with the CT's HU range.

* Both images are read by SimpleITK itself (ITK's NIfTI reader, LPS physical space).
* The frame is a 3-D image of size (W, H, 1): origin = the plane's origin, spacing =
  (|col_x|, |col_y|, 1), direction columns = (col_x/|col_x|, col_y/|col_y|, normal);
  resampled with the identity transform, so ITK maps each output pixel's physical point
  into the CT through the CT's own index <-> physical geometry.
"""

import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def reference_frame(plane):
    m = np.array(plane["image_to_lps"], dtype=np.float64)
    cx, cy, origin = m[:3, 0], m[:3, 1], m[:3, 3]
    sx, sy = np.linalg.norm(cx), np.linalg.norm(cy)
    ux, uy = cx / sx, cy / sy
    n = np.cross(ux, uy)
    n /= np.linalg.norm(n)
    direction = np.column_stack([ux, uy, n])
    frame = sitk.Image([int(plane["width"]), int(plane["height"]), 1], sitk.sitkUInt8)
    frame.SetOrigin(origin.tolist())
    frame.SetSpacing([float(sx), float(sy), 1.0])
    frame.SetDirection(direction.flatten().tolist())  # row-major
    return frame


def main():
    ct_path, labels_path, planes_path, out_dir, outside = sys.argv[1:6]
    out_dir = Path(out_dir)
    ct = sitk.Cast(sitk.ReadImage(ct_path), sitk.sitkFloat32)
    labels = sitk.Cast(sitk.ReadImage(labels_path), sitk.sitkUInt16)
    planes = json.loads(Path(planes_path).read_text())
    identity = sitk.Transform(3, sitk.sitkIdentity)
    for n, plane in enumerate(planes):
        frame = reference_frame(plane)
        resliced = sitk.Resample(ct, frame, identity, sitk.sitkLinear, float(outside),
                                 sitk.sitkFloat32)
        sitk.GetArrayFromImage(resliced).astype("<f4").tofile(out_dir / f"{n}_ct.f32")
        nearest = sitk.Resample(labels, frame, identity, sitk.sitkNearestNeighbor, 0,
                                sitk.sitkUInt16)
        sitk.GetArrayFromImage(nearest).astype("<u2").tofile(out_dir / f"{n}_labels.u16")
    values = sitk.GetArrayViewFromImage(ct)
    print(json.dumps({"hu_min": float(values.min()), "hu_max": float(values.max()),
                      "planes": len(planes)}))


if __name__ == "__main__":
    main()
