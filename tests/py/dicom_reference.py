#!/usr/bin/env python3
"""Independent reference for Pinhole's DICOM series reader (pydicom).

Commands:
  series DIR OUT.f64   read every DICOM file in DIR, sort along the slice normal, print
                       {"dims": [i, j, k], "matrix": 4x4 index->LPS, "slice_thickness"}
                       as JSON and write the voxels (k, j, i C-order, i fastest) after
                       pydicom's apply_modality_lut as little-endian float64 to OUT.f64.
  two_series SRC DST N UID_A UID_B
                       copy the DICOM files of SRC into DST with SeriesInstanceUID UID_A
                       for the first N (by name) and UID_B for the rest (the shared
                       series' own UID is empty); print {"series": {uid: slices}}.
  testfile NAME        print the path of one of pydicom's bundled test files.
  make_jpeg OUT.dcm    write a monochrome 8-bit JPEG baseline (1.2.840.10008.1.2.4.50)
                       file made from pydicom's MR_small.dcm with Pillow's encoder.
"""

import io
import json
import os
import sys

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut


def is_dicom(path):
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def series(folder, out_path):
    names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    datasets = [pydicom.dcmread(os.path.join(folder, n)) for n in names
                if is_dicom(os.path.join(folder, n))]
    first = datasets[0]
    iop = [float(x) for x in first.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]
    row = np.array(iop[:3])
    col = np.array(iop[3:])
    row /= np.linalg.norm(row)
    col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)

    def position(ds):
        return np.array([float(x) for x in ds.get("ImagePositionPatient", [0, 0, 0])])

    datasets.sort(key=lambda ds: float(position(ds) @ normal))
    distances = [float(position(ds) @ normal) for ds in datasets]
    if len(datasets) > 1:
        dz = (distances[-1] - distances[0]) / (len(datasets) - 1)
    else:
        dz = float(first.get("SpacingBetweenSlices", first.get("SliceThickness", 1.0)))
    spacing = [float(x) for x in first.get("PixelSpacing", [1.0, 1.0])]
    matrix = np.eye(4)
    matrix[:3, 0] = row * spacing[1]
    matrix[:3, 1] = col * spacing[0]
    matrix[:3, 2] = normal * dz
    matrix[:3, 3] = position(datasets[0])
    volume = np.stack([apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
                       for ds in datasets])
    volume.astype("<f8").tofile(out_path)
    thickness = first.get("SliceThickness")
    print(json.dumps({
        "dims": [int(first.Columns), int(first.Rows), len(datasets)],
        "matrix": matrix.tolist(),
        "slice_thickness": None if thickness is None else float(thickness),
        "slice_spacing": dz,
    }))


def two_series(src, dst, count, uid_a, uid_b):
    names = sorted(n for n in os.listdir(src) if is_dicom(os.path.join(src, n)))
    counts = {}
    for index, name in enumerate(names):
        ds = pydicom.dcmread(os.path.join(src, name))
        ds.SeriesInstanceUID = uid_a if index < int(count) else uid_b
        ds.save_as(os.path.join(dst, name), enforce_file_format=True)
        counts[str(ds.SeriesInstanceUID)] = counts.get(str(ds.SeriesInstanceUID), 0) + 1
    print(json.dumps({"series": counts}))


def make_jpeg(out_path):
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    pixels = ds.pixel_array.astype(np.float64)
    pixels = np.round(255 * (pixels - pixels.min()) / (pixels.max() - pixels.min()))
    pixels = pixels.astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=90)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(out_path, enforce_file_format=True)


def main():
    command = sys.argv[1]
    if command == "series":
        series(sys.argv[2], sys.argv[3])
    elif command == "testfile":
        path = get_testdata_file(sys.argv[2])
        if path is None:
            sys.exit(f"pydicom has no test file {sys.argv[2]}")
        print(path)
    elif command == "two_series":
        two_series(*sys.argv[2:7])
    elif command == "make_jpeg":
        make_jpeg(sys.argv[2])
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
