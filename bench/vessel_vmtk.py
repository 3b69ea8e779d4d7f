#!/usr/bin/env python3
"""Pinhole's vessel centerline against VMTK's on the chest CT's aorta, in one run.

Needs Python >= 3.12 with `pip install vmtk nibabel numpy` (PyPI vmtk 1.5 ships cp312
wheels only) and a release build of pinhole (`cargo build --release -p pinhole`).

    python3.12 bench/vessel_vmtk.py [--label aorta] [--data ../shared/data/chest-ct]

Pinhole: `pinhole measure vessel` (centerline + every cross-section), wall time of the
process and the library's own time (`elapsed_s`). VMTK: the label's surface (VTK discrete
marching cubes, light windowed-sinc smoothing, in mm) and vmtkCenterlines (Voronoi
diagram, fast marching with cost 1/R) seeded with pointlist at Pinhole's two ends, so
both lines join the same ends. Prints mean / max distance between the lines (each
point to the other polyline, symmetric), lengths and the timing ratio.
"""
import argparse
import json
import pathlib
import subprocess
import tempfile
import time

import nibabel as nib
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent


def point_to_polyline(points, line):
    """Distance from every point to the polyline `line` (segments)."""
    a, b = line[:-1], line[1:]
    ab = b - a
    denom = np.maximum((ab * ab).sum(1), 1e-12)
    out = np.empty(len(points))
    for n, p in enumerate(points):
        t = np.clip(((p - a) * ab).sum(1) / denom, 0.0, 1.0)
        closest = a + t[:, None] * ab
        out[n] = np.sqrt(((closest - p) ** 2).sum(1)).min()
    return out


def length(line):
    return float(np.sqrt((np.diff(line, axis=0) ** 2).sum(1)).sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT / "../shared/data/chest-ct"))
    ap.add_argument("--label", default="aorta")
    ap.add_argument("--pinhole", default=str(ROOT / "target/release/pinhole"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = pathlib.Path(args.data)
    labels_path = data / "labels.nii.gz"
    table = data / "structures.csv"

    # --- Pinhole -------------------------------------------------------------
    ours_wall, ours_lib = [], []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run([args.pinhole, "measure", "vessel", "--labels", str(labels_path),
                            "--labels-table", str(table), "--label", args.label, "--out", out],
                           check=True, capture_output=True)
            ours_wall.append(time.perf_counter() - t0)
            m = json.loads((pathlib.Path(out) / "measurements.json").read_text())
            ours_lib.append(m["elapsed_s"])
    ours_lps = np.array([s["point_lps"] for s in m["stations"]])
    label_id = m["label_id"]

    # --- VMTK ------------------------------------------------------------------
    from vmtk import vmtkscripts
    import vtk
    from vtk.util import numpy_support

    img = nib.load(str(labels_path))
    mask = (np.asarray(img.dataobj) == label_id).astype(np.uint8)
    spacing = np.asarray(img.header.get_zooms()[:3], dtype=float)
    # Index*spacing frame ("image mm"), rigidly related to LPS.
    ras_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps_from_ijk = ras_to_lps @ img.affine
    ijk_from_lps = np.linalg.inv(lps_from_ijk)

    def lps_to_image_mm(p):
        ijk = (ijk_from_lps @ np.c_[p, np.ones(len(p))].T).T[:, :3]
        return ijk * spacing

    t0 = time.perf_counter()
    image = vtk.vtkImageData()
    image.SetDimensions(*mask.shape)
    image.SetSpacing(*spacing)
    image.SetOrigin(0.0, 0.0, 0.0)
    flat = numpy_support.numpy_to_vtk(mask.ravel(order="F"), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(flat)
    mc = vtk.vtkDiscreteMarchingCubes()
    mc.SetInputData(image)
    mc.SetValue(0, 1)
    mc.Update()
    smooth = vtk.vtkWindowedSincPolyDataFilter()
    smooth.SetInputConnection(mc.GetOutputPort())
    smooth.SetNumberOfIterations(15)
    smooth.SetPassBand(0.1)
    smooth.NonManifoldSmoothingOn()
    smooth.NormalizeCoordinatesOn()
    smooth.Update()
    tri = vtk.vtkTriangleFilter()
    tri.SetInputConnection(smooth.GetOutputPort())
    tri.Update()
    surface = tri.GetOutput()
    t_surface = time.perf_counter() - t0

    seeds = lps_to_image_mm(ours_lps[[0, -1]])
    t1 = time.perf_counter()
    cl = vmtkscripts.vmtkCenterlines()
    cl.Surface = surface
    cl.SeedSelectorName = "pointlist"
    cl.SourcePoints = [float(v) for v in seeds[0]]
    cl.TargetPoints = [float(v) for v in seeds[1]]
    cl.AppendEndPoints = 1
    cl.Resampling = 1
    cl.ResamplingStepLength = 1.0
    cl.Execute()
    t_centerline = time.perf_counter() - t1
    line = cl.Centerlines
    vmtk_pts = numpy_support.vtk_to_numpy(line.GetPoints().GetData()).astype(float)
    # One polyline expected; take the first cell's point order.
    ids = line.GetCell(0).GetPointIds()
    vmtk_pts = vmtk_pts[[ids.GetId(i) for i in range(ids.GetNumberOfIds())]]

    ours = lps_to_image_mm(ours_lps)
    d_ours = point_to_polyline(ours, vmtk_pts)
    d_vmtk = point_to_polyline(vmtk_pts, ours)
    mean_d = float(np.concatenate([d_ours, d_vmtk]).mean())
    l_ours, l_vmtk = length(ours), length(vmtk_pts)
    t_vmtk = t_surface + t_centerline
    result = {
        "label": args.label,
        "surface_points": surface.GetNumberOfPoints(),
        "mean_distance_mm": mean_d,
        "max_distance_mm": float(max(d_ours.max(), d_vmtk.max())),
        "length_pinhole_mm": l_ours,
        "length_vmtk_mm": l_vmtk,
        "length_diff_pct": 100.0 * (l_ours - l_vmtk) / l_vmtk,
        "time_pinhole_wall_s": min(ours_wall),
        "time_pinhole_library_s": min(ours_lib),
        "time_vmtk_surface_s": t_surface,
        "time_vmtk_centerlines_s": t_centerline,
        "speedup_wall": t_vmtk / min(ours_wall),
        "speedup_library": t_vmtk / min(ours_lib),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
