#!/usr/bin/env python3
"""Foundation benchmark: Pinhole vs nibabel / pydicom / scipy, measured in one run.

    python3 bench/foundation.py [--repeats 5]

Builds `pinhole-bench` in release mode, then times on ../shared/data:
  * loading the chest CT (NIfTI .nii.gz, 512x512x133) — nibabel get_fdata vs Pinhole
  * loading the DICOM series (20 JPEG 2000 slices) — pydicom (+pylibjpeg) vs Pinhole
  * the exact EDT of the whole chest label map (distance to the nearest labelled voxel)
    — scipy.ndimage.distance_transform_edt vs Pinhole
Best of N wall-clock runs each; prints a Markdown table with ratios (peer / Pinhole).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("PINHOLE_DATA", ROOT.parent / "shared" / "data"))


def best_of(repeats, fn):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def nibabel_load(path):
    import nibabel as nib
    return np.asarray(nib.load(path).get_fdata())


def pydicom_series(folder):
    import pydicom
    slices = [pydicom.dcmread(p) for p in sorted(Path(folder).iterdir()) if p.is_file()]
    normal = np.cross(*np.reshape(np.asarray(slices[0].ImageOrientationPatient, float), (2, 3)))
    slices.sort(key=lambda s: float(np.dot(normal, np.asarray(s.ImagePositionPatient, float))))
    from pydicom.pixels import apply_modality_lut
    return np.stack([apply_modality_lut(s.pixel_array, s) for s in slices])


def scipy_edt_timing(path, repeats):
    """Times the EDT alone: the label map is loaded once beforehand, as in pinhole-bench."""
    import nibabel as nib
    from scipy import ndimage
    img = nib.load(path)
    background = np.asarray(img.dataobj) == 0
    sampling = img.header.get_zooms()[:3]
    return best_of(repeats, lambda: ndimage.distance_transform_edt(background, sampling=sampling))


def pinhole(binary, *args):
    out = subprocess.run([binary, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "pinhole-bench"], cwd=ROOT, check=True)
    binary = str(ROOT / "target" / "release" / "pinhole-bench")
    ct = str(DATA / "chest-ct" / "ct.nii.gz")
    labels = str(DATA / "chest-ct" / "labels.nii.gz")
    dicom = str(DATA / "dicom-ct-series")
    r = str(args.repeats)
    rows = [
        ("load chest CT (NIfTI gz, 35 M voxels)", "nibabel",
         best_of(args.repeats, lambda: nibabel_load(ct)), pinhole(binary, "load", ct, r)["seconds"]),
        ("load DICOM series (20 × JPEG 2000)", "pydicom+pylibjpeg",
         best_of(args.repeats, lambda: pydicom_series(dicom)), pinhole(binary, "load", dicom, r)["seconds"]),
        ("EDT of the chest label map (mm)", "scipy.ndimage",
         scipy_edt_timing(labels, args.repeats), pinhole(binary, "edt", labels, r)["seconds"]),
    ]
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores; "
          f"python {sys.version.split()[0]}; best of {args.repeats}")
    print("| operation | peer | peer s | Pinhole s | peer / Pinhole |")
    print("|---|---|---|---|---|")
    for name, peer, peer_s, ours_s in rows:
        print(f"| {name} | {peer} | {peer_s:.3f} | {ours_s:.3f} | {peer_s / ours_s:.2f}× |")


if __name__ == "__main__":
    main()
