#!/usr/bin/env python3
"""Ultrasound reslice: Pinhole (`pinhole-bench us-reslice`) against SimpleITK's
`Resample` (ITK's ResampleImageFilter, multi-threaded), the same 512 x 512 frames of
0.3 mm pixels on the chest CT in three orientations (as `bench/benches/ultrasound.rs`):
axial, oblique (30 deg about L, then 40 deg about S), sagittal-oblique (-50 deg about
S, then -35 deg about L, on a sagittal start). Times are best of `--repeats` after a
warm-up, reslicing only (both tools hold the CT in memory as float32). Also checks that
the two agree (max |difference| of the CT reslice, HU). Prints a Markdown table with
ratios.

    cargo build --release -p pinhole-bench
    python3 -m pip install SimpleITK numpy
    python3 bench/ultrasound_peer.py [--repeats 20]
"""

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("PINHOLE_DATA", ROOT.parent / "shared" / "data"))


def rotation(axis, deg):
    x, y, z = axis
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    t = 1 - c
    return np.array([
        [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
        [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
        [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
    ])


def plane(r, centre, size=512, pixel=0.3):
    x, y = r[:, 0] * pixel, r[:, 1] * pixel
    origin = centre - (size - 1) / 2 * (x + y)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, np.cross(r[:, 0], r[:, 1]), origin
    return {"image_to_lps": m.tolist(), "width": size, "height": size}


def frame_of(p):
    m = np.array(p["image_to_lps"])
    cx, cy = m[:3, 0], m[:3, 1]
    sx, sy = np.linalg.norm(cx), np.linalg.norm(cy)
    ux, uy = cx / sx, cy / sy
    n = np.cross(ux, uy)
    f = sitk.Image([p["width"], p["height"], 1], sitk.sitkUInt8)
    f.SetOrigin(m[:3, 3].tolist())
    f.SetSpacing([float(sx), float(sy), 1.0])
    f.SetDirection(np.column_stack([ux, uy, n]).flatten().tolist())
    return f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--bench", default=str(ROOT / "target/release/pinhole-bench"))
    a = ap.parse_args()
    ct_path, labels_path = DATA / "chest-ct/ct.nii.gz", DATA / "chest-ct/labels.nii.gz"
    ct = sitk.Cast(sitk.ReadImage(str(ct_path)), sitk.sitkFloat32)
    size, spacing = np.array(ct.GetSize()), np.array(ct.GetSpacing())
    direction = np.array(ct.GetDirection()).reshape(3, 3)
    centre = np.array(ct.GetOrigin()) + direction @ ((size - 1) / 2 * spacing)
    L, P, S = (1, 0, 0), (0, 1, 0), (0, 0, 1)
    sagittal = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], dtype=float)
    cases = {
        "axial": np.eye(3),
        "oblique 30/40": rotation(S, 40) @ rotation(L, 30),
        "sagittal-oblique -50/-35": rotation(S, -50) @ rotation(L, -35) @ sagittal,
    }
    planes = [plane(r, centre) for r in cases.values()]
    with tempfile.TemporaryDirectory() as tmp:
        pj = Path(tmp) / "planes.json"
        pj.write_text(json.dumps(planes))
        out = subprocess.run([a.bench, "us-reslice", str(ct_path), str(labels_path), str(pj),
                              str(a.repeats)], check=True, capture_output=True, text=True)
        ours = json.loads(out.stdout)
    identity = sitk.Transform(3, sitk.sitkIdentity)
    print(f"machine: {os.uname().nodename}, {os.cpu_count()} CPUs; SimpleITK "
          f"{sitk.Version.VersionString()} ({sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()} "
          f"threads); pinhole {ours['threads']} threads; loadavg {os.getloadavg()}")
    print("| plane (512 x 512, 0.3 mm) | Pinhole CT | Pinhole CT + labels | SimpleITK CT | ratio (CT) |")
    print("|---|---|---|---|---|")
    for (name, p), mine in zip(zip(cases, planes), ours["planes"]):
        frame = frame_of(p)
        sitk.Resample(ct, frame, identity, sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
        best = float("inf")
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            sitk.Resample(ct, frame, identity, sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
            best = min(best, time.perf_counter() - t0)
        ratio = best / mine["ct_seconds"]
        print(f"| {name} | {mine['ct_seconds'] * 1e3:.2f} ms | "
              f"{mine['ct_and_labels_seconds'] * 1e3:.2f} ms | {best * 1e3:.2f} ms | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
