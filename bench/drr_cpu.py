#!/usr/bin/env python3
"""CPU DRR benchmark: Pinhole (`pinhole-bench drr`) against Plastimatch `drr -A cpu -i
exact` and RTK's Joseph forward projector, 512² detector (400 mm) on the chest CT,
SAD 850 mm, SID 1020 mm, frontal view. Prints a Markdown table with ratios.

Setup (not in CI):

    apt-get install -y plastimatch
    python3 -m venv /tmp/rtk && /tmp/rtk/bin/pip install itk-rtk==2.7.0.post1 SimpleITK numpy
    cargo build --release -p pinhole-bench
    /tmp/rtk/bin/python bench/drr_cpu.py [--ct CT] [--size 512] [--repeats 3]

Times are render-only, best of `--repeats` (each tool loads the CT once outside the timed
part, except Plastimatch, whose own "Total time" line includes only its ray tracing —
the reported time is the rendering of one view after the volume is loaded). Pinhole also
reports CPU seconds per render (all threads), which is less sensitive to other load on a
shared machine. Plastimatch ignores NIfTI direction cosines, so the CT is reoriented to
LPS first (SimpleITK `DICOMOrient`). RTK rotates about its y axis, so the volume is
handed to it centred on the origin with patient z as RTK y.
"""

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def ours(bench, ct, size, integrator, repeats):
    out = subprocess.run([bench, "drr", ct, str(size), integrator, str(repeats)],
                         check=True, capture_output=True, text=True)
    info = json.loads(out.stdout)
    return info["seconds"], info.get("cpu_seconds")


def plastimatch(ct_lps, centre, size, repeats, threads, tmp):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    best = float("inf")
    for _ in range(repeats):
        out = subprocess.run(
            ["plastimatch", "drr", "-A", "cpu", "-i", "exact", "-r", f"{size} {size}",
             "-z", "400 400", "--sad", "850", "--sid", "1020", "-y", "0",
             "-o", " ".join(map(str, centre)), "-t", "pfm", "-O", f"{tmp}/pm_", ct_lps],
            check=True, capture_output=True, text=True, env=env)
        m = re.findall(r"Total time:\s*([0-9.eE+-]+)", out.stdout + out.stderr)
        if not m:
            raise RuntimeError("no 'Total time' in plastimatch output:\n" + out.stdout[-2000:])
        best = min(best, float(m[-1]))
    return best


def rtk_joseph(ct_lps_image, size, repeats, threads):
    import itk
    import SimpleITK as sitk
    from itk import RTK as rtk

    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(threads)
    hu = sitk.GetArrayFromImage(ct_lps_image).astype(np.float32)  # [z, y, x] (LPS)
    mu = np.where(hu <= 0, 0.0192 * (1 + np.maximum(hu, -1000) / 1000),
                  0.0192 + hu * (0.0573 - 0.0192) / 1000).astype(np.float32)
    sx, sy, sz = ct_lps_image.GetSpacing()
    # RTK axes: X = patient x, Y = patient z (rotation axis), Z = patient y (beam axis).
    arr = np.ascontiguousarray(np.transpose(mu, (1, 0, 2))[:, ::-1, :])  # [y, z, x]
    volume = itk.GetImageFromArray(arr)
    spacing = (sx, sz, sy)
    volume.SetSpacing(spacing)
    volume.SetOrigin([-(n - 1) / 2 * s for n, s in zip(volume.GetLargestPossibleRegion().GetSize(), spacing)])
    geometry = rtk.ThreeDCircularProjectionGeometry.New()
    geometry.AddProjection(850.0, 1020.0, 0.0)
    ImageType = itk.Image[itk.F, 3]
    source = rtk.ConstantImageSource[ImageType].New()
    pitch = 400.0 / size
    source.SetOrigin([-(size - 1) / 2 * pitch, -(size - 1) / 2 * pitch, 0.0])
    source.SetSpacing([pitch, pitch, 1.0])
    source.SetSize([size, size, 1])
    source.SetConstant(0.0)
    best = float("inf")
    keep = []
    for _ in range(repeats):
        projector = rtk.JosephForwardProjectionImageFilter[ImageType, ImageType].New()
        projector.SetInput(0, source.GetOutput())
        projector.SetInput(1, volume)
        projector.SetGeometry(geometry)
        keep.append(projector)  # ITK outputs hold weak references to their source
        source.Update()
        start = time.perf_counter()
        projector.Update()
        best = min(best, time.perf_counter() - start)
        image = itk.GetArrayFromImage(projector.GetOutput())
    return best, float(image.mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ct", default=str(ROOT / "../shared/data/chest-ct/ct.nii.gz"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--bench", default=str(ROOT / "target/release/pinhole-bench"))
    args = parser.parse_args()

    import SimpleITK as sitk

    rows = []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        img = sitk.Cast(sitk.DICOMOrient(sitk.ReadImage(args.ct), "LPS"), sitk.sitkInt16)
        ct_lps = f"{tmp}/ct.mha"
        sitk.WriteImage(img, ct_lps)
        centre = img.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in img.GetSize()])
        for integrator, label in (("siddon", "Pinhole Siddon (exact)"),
                                  ("trilinear500", "Pinhole trilinear, 500 samples")):
            wall, cpu = ours(args.bench, args.ct, args.size, integrator, args.repeats)
            rows.append((label, wall, cpu))
        rows.append(("Plastimatch `drr -i exact`",
                     plastimatch(ct_lps, centre, args.size, args.repeats, args.threads, tmp), None))
        try:
            wall, _ = rtk_joseph(img, args.size, args.repeats, args.threads)
            rows.append(("RTK Joseph", wall, None))
        except ImportError as e:
            rows.append((f"RTK Joseph (not installed: {e})", float("nan"), None))

    reference = {name: t for name, t, _ in rows}
    pm = reference["Plastimatch `drr -i exact`"]
    rtk_t = reference.get("RTK Joseph", float("nan"))
    print(f"\nChest CT, {args.size}² detector, {args.threads} threads, best of {args.repeats}; "
          f"load average at start {load:.1f}\n")
    print("| Renderer | s / DRR | CPU s / DRR | vs Plastimatch | vs RTK Joseph |")
    print("|---|---|---|---|---|")
    for name, t, cpu in rows:
        cpu_text = f"{cpu:.2f}" if cpu is not None else "–"
        print(f"| {name} | {t:.3f} | {cpu_text} | {pm / t:.2f}× | {rtk_t / t:.2f}× |")


if __name__ == "__main__":
    main()
