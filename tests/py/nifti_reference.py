#!/usr/bin/env python3
"""Independent reference values for Pinhole's tests, computed with nibabel, pynrrd and scipy.

Subcommands (JSON on stdout, voxel arrays as raw little-endian files, i fastest):
  nifti PATH VOXELS_OUT         dims, 4x4 index->LPS matrix, min/max; voxels to VOXELS_OUT
                                (voxel_file.py: .npy in the narrowest exact dtype, `-`
                                for none, else raw float64)
  nrrd PATH VOXELS_OUT          same, read with pynrrd
  variant SRC OUT KIND          rewrite SRC with nibabel as KIND: nifti2-be (NIfTI-2,
                                big-endian), qform-only (sform_code 0), float-scaled
                                (int16 with a non-integer scl_slope)
  count LABELS ID               number of voxels equal to ID (an integer)
  edt LABELS ID INSIDE OUTSIDE  scipy.ndimage.distance_transform_edt of (labels == ID) and
                                of its complement, with sampling = voxel sizes; float32
"""
import json
import sys

import numpy as np

import voxel_file

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def nifti(path, voxels_out):
    import nibabel as nib

    img = nib.load(path)
    data = np.asarray(img.get_fdata(dtype=np.float64))
    if data.ndim > 3:
        data = data.reshape(data.shape[:3])
    voxel_file.save(data.ravel(order="F"), voxels_out)
    affine_lps = RAS_TO_LPS @ img.affine
    print(json.dumps({
        "dims": [int(d) for d in data.shape[:3]],
        "ijk_to_lps": affine_lps.tolist(),
        "min": float(data.min()),
        "max": float(data.max()),
        "stored_dtype": str(img.get_data_dtype()),
    }))


def nrrd_file(path, voxels_out):
    import nrrd

    data, header = nrrd.read(path)
    data = np.asarray(data, dtype=np.float64)
    directions = np.asarray(header["space directions"], dtype=np.float64)
    origin = np.asarray(header["space origin"], dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = directions.T
    m[:3, 3] = origin
    if header.get("space") in ("right-anterior-superior", "RAS"):
        m = RAS_TO_LPS @ m
    voxel_file.save(data.ravel(order="F"), voxels_out)
    print(json.dumps({
        "dims": [int(d) for d in data.shape],
        "ijk_to_lps": m.tolist(),
        "space": header.get("space"),
        "min": float(data.min()),
        "max": float(data.max()),
    }))


def variant(src, out, kind):
    import nibabel as nib

    img = nib.load(src)
    data = np.asarray(img.dataobj)
    if kind == "nifti2-be":
        new = nib.Nifti2Image(data, img.affine)
        new.header.set_qform(img.affine, code=1)
        new.header.set_sform(img.affine, code=1)
        new = nib.Nifti2Image(data.astype(">i2"), img.affine, new.header.as_byteswapped(">"))
    elif kind == "qform-only":
        new = nib.Nifti1Image(data, img.affine)
        new.header.set_qform(img.affine, code=1)
        new.header.set_sform(None, code=0)
    elif kind == "float-scaled":
        new = nib.Nifti1Image(data.astype(np.int16), img.affine)
        new.header.set_data_dtype(np.int16)
        new.header.set_slope_inter(0.25, -7.5)
    else:
        raise SystemExit(f"unknown variant {kind}")
    nib.save(new, out)
    print(json.dumps({"written": out, "kind": kind}))


def edt(labels_path, label_id, inside_out, outside_out):
    import nibabel as nib
    from scipy import ndimage

    img = nib.load(labels_path)
    labels = np.asarray(img.dataobj)
    mask = labels == int(label_id)
    sampling = [float(z) for z in img.header.get_zooms()[:3]]
    inside = ndimage.distance_transform_edt(mask, sampling=sampling)
    outside = ndimage.distance_transform_edt(~mask, sampling=sampling)
    inside.ravel(order="F").astype("<f4").tofile(inside_out)
    outside.ravel(order="F").astype("<f4").tofile(outside_out)
    print(json.dumps({"voxels": int(mask.sum()), "sampling": sampling,
                      "max_inside_mm": float(inside.max())}))


def count(path, label_id):
    import nibabel as nib

    data = np.asarray(nib.load(path).dataobj)
    print(json.dumps(int((data == int(label_id)).sum())))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"nifti": nifti, "nrrd": nrrd_file, "edt": edt, "variant": variant, "count": count}[command](*args)
