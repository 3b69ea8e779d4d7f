#!/usr/bin/env python3
"""Intraprocedural CT rigid registration peer study: Pinhole `register-ct` vs elastix.

Cases are constructed (tests/py/intraop_cases.py, `registration`): the planning scan is
the shared real chest CT; the control scan is a short slab of the same patient moved
rigidly (<= ~8 deg, <= ~20 mm), deformed smoothly in the liver (peak 3-6 mm), re-contrasted
and re-noised. Truth is a set of >= 20 organ landmarks (control LPS -> planning LPS).

For each seed 1..N:
  * Pinhole: `PINHOLE register-ct --planning-ct CT --control-ct control.nii.gz --out DIR`,
    reading DIR/ct_registration.json {"control_to_planning_lps": 4x4, "converged": bool};
    TRE = |M control_lps - planning_lps|. Skipped (column null) when the binary lacks the
    command.
  * elastix (itk-elastix): fixed = planning CT cropped in z to the control slab's extent
    +/- 30 mm (identity start; without the crop most random samples fall outside the slab),
    moving = control; EulerTransform, AdvancedMattesMutualInformation, 3 resolutions,
    3000 random samples, 2 threads, no automatic initialisation. elastix's transform maps
    fixed (planning) points to moving (control) points: TRE = |T_e(planning_lps) -
    control_lps|. ITK reads NIfTI into LPS physical space, the frame of the truth.
  * Wall time of each method's own run (case construction excluded; for elastix the
    image reading and crop are included).

    python3 -m pip install itk-elastix scikit-image
    python3 bench/intraop_register.py --pinhole target/release/pinhole --cases 20 \
        --out bench/results/intraop_register_<date>.json
"""

import argparse
import datetime
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "py"))
import intraop_cases as ic  # noqa: E402


def tre_stats(errors):
    e = np.asarray(errors, dtype=np.float64)
    return {"mean_mm": float(e.mean()), "median_mm": float(np.median(e)), "max_mm": float(e.max())}


def pinhole_has_register_ct(binary):
    try:
        r = subprocess.run([binary, "register-ct", "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    return r.returncode == 0, (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]


def run_pinhole(binary, planning, control, out_dir):
    t0 = time.perf_counter()
    r = subprocess.run([binary, "register-ct", "--planning-ct", str(planning), "--control-ct",
                        str(control), "--out", str(out_dir)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        return {"error": (r.stderr or r.stdout)[-500:], "wall_s": wall}
    res = json.loads((out_dir / "ct_registration.json").read_text())
    return {"matrix": np.array(res["control_to_planning_lps"], dtype=np.float64),
            "converged": bool(res.get("converged", False)), "wall_s": wall}


def elastix_parameters(itk, samples, iterations):
    po = itk.ParameterObject.New()
    pm = po.GetDefaultParameterMap("rigid", 3)
    pm["Transform"] = ["EulerTransform"]
    pm["Metric"] = ["AdvancedMattesMutualInformation"]
    pm["NumberOfHistogramBins"] = ["32"]
    pm["NumberOfResolutions"] = ["3"]
    pm["ImageSampler"] = ["RandomCoordinate"]
    pm["NumberOfSpatialSamples"] = [str(samples)]
    pm["NewSamplesEveryIteration"] = ["true"]
    pm["MaximumNumberOfIterations"] = [str(iterations)]
    pm["AutomaticTransformInitialization"] = ["false"]
    pm["AutomaticScalesEstimation"] = ["true"]
    pm["DefaultPixelValue"] = ["-1024"]
    pm["WriteResultImage"] = ["false"]
    pm["RequiredRatioOfValidSamples"] = ["0.1"]
    po.AddParameterMap(pm)
    return po


def euler_fixed_to_moving(itk, tp):
    """4x4 of elastix's EulerTransform (maps fixed LPS -> moving LPS)."""
    p = [float(v) for v in tp.GetParameter(0, "TransformParameters")]
    centre = [float(v) for v in tp.GetParameter(0, "CenterOfRotationPoint")]
    zyx = tp.GetParameter(0, "ComputeZYX") if "ComputeZYX" in tp.GetParameterMap(0) else ["false"]
    t = itk.Euler3DTransform[itk.D].New()
    t.SetComputeZYX(zyx[0] == "true")
    t.SetCenter(centre)
    params = itk.OptimizerParameters[itk.D](6)
    for i, v in enumerate(p):
        params[i] = v
    t.SetParameters(params)
    m = np.eye(4)
    m[:3, :3] = np.array(itk.array_from_matrix(t.GetMatrix()))
    m[:3, 3] = np.array(t.GetOffset())
    return m


def run_elastix(itk, planning, control, control_z_lps, margin_mm, samples, iterations, threads):
    t0 = time.perf_counter()
    fixed = itk.imread(str(planning), itk.F)
    moving = itk.imread(str(control), itk.F)
    # Crop the planning CT to the slab's z-extent +/- margin (ITK index <-> LPS z).
    origin = np.array(fixed.GetOrigin())
    spacing = np.array(fixed.GetSpacing())
    direction = np.array(itk.array_from_matrix(fixed.GetDirection()))
    size = np.array(fixed.GetLargestPossibleRegion().GetSize())
    zdir = direction[2, 2] * spacing[2]
    ks = sorted(((np.array(control_z_lps) + np.array([-margin_mm, margin_mm])) - origin[2]) / zdir)
    k0 = int(max(0, math.floor(ks[0])))
    k1 = int(min(size[2] - 1, math.ceil(ks[1])))
    region = itk.ImageRegion[3]()
    region.SetIndex([0, 0, k0])
    region.SetSize([int(size[0]), int(size[1]), k1 - k0 + 1])
    roi = itk.RegionOfInterestImageFilter[type(fixed), type(fixed)].New(Input=fixed, RegionOfInterest=region)
    roi.Update()
    fixed_crop = roi.GetOutput()
    po = elastix_parameters(itk, samples, iterations)
    _, tp = itk.elastix_registration_method(fixed_crop, moving, parameter_object=po,
                                            number_of_threads=threads, log_to_console=False)
    wall = time.perf_counter() - t0
    return {"fixed_to_moving": euler_fixed_to_moving(itk, tp), "wall_s": wall,
            "fixed_crop_slices": [k0, k1]}


def warm_up_elastix(itk):
    """Load itk's lazily imported modules (several seconds) outside any timed run."""
    a = np.zeros((16, 16, 16), np.float32)
    a[4:12, 4:12, 4:12] = 100.0
    img = itk.image_from_array(a)
    po = elastix_parameters(itk, 200, 2)
    po.SetParameter(0, "NumberOfResolutions", "1")
    itk.elastix_registration_method(img, img, parameter_object=po, number_of_threads=1,
                                    log_to_console=False)
    itk.imread  # noqa: B018
    itk.RegionOfInterestImageFilter  # noqa: B018
    itk.Euler3DTransform  # noqa: B018


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pinhole", default=str(ROOT / "target" / "release" / "pinhole"))
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--ct", type=Path, default=ic.DATA / "ct.nii.gz")
    ap.add_argument("--labels", type=Path, default=ic.DATA / "labels.nii.gz")
    ap.add_argument("--structures", type=Path, default=ic.DATA / "structures.csv")
    ap.add_argument("--no-elastix", action="store_true")
    ap.add_argument("--elastix-samples", type=int, default=3000)
    ap.add_argument("--elastix-iterations", type=int, default=250)
    ap.add_argument("--elastix-threads", type=int, default=2)
    ap.add_argument("--crop-margin-mm", type=float, default=30.0)
    args = ap.parse_args()

    ct, labels, names, ids = ic.load_inputs(args)
    ct.path = str(args.ct.resolve())
    has_pinhole, why = pinhole_has_register_ct(args.pinhole)
    if not has_pinhole:
        print(f"pinhole register-ct unavailable ({args.pinhole}): {why}; Pinhole column skipped",
              file=sys.stderr)
    itk = None
    if not args.no_elastix:
        import itk as itk_mod

        itk = itk_mod
        warm_up_elastix(itk)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.first_seed, args.first_seed + args.cases):
            d = Path(tmp) / f"case{seed}"
            d.mkdir()
            truth = ic.build_registration(ct, labels, ids, names, seed, d)
            c = np.array([l["control_lps"] for l in truth["landmarks"]])
            p = np.array([l["planning_lps"] for l in truth["landmarks"]])
            rigid = np.array(truth["control_to_planning_rigid_lps"])
            row = {"seed": seed, "organ": truth["organ"], "landmarks": len(c),
                   "rigid_angle_deg": truth["rigid_angle_deg"],
                   "rigid_translation_mm": truth["rigid_translation_mm"],
                   "max_deformation_mm": truth["max_deformation_mm"],
                   "identity_tre": tre_stats(np.linalg.norm(c - p, axis=1)),
                   "true_rigid_tre": tre_stats(np.linalg.norm(ic.apply(rigid, c) - p, axis=1))}
            if has_pinhole:
                od = d / "pinhole"
                od.mkdir()
                r = run_pinhole(args.pinhole, args.ct, d / "control.nii.gz", od)
                if "matrix" in r:
                    row["pinhole"] = {"wall_s": r["wall_s"], "converged": r["converged"],
                                      "control_to_planning_lps": r["matrix"].tolist(),
                                      **tre_stats(np.linalg.norm(ic.apply(r["matrix"], c) - p, axis=1))}
                else:
                    row["pinhole"] = r
            if itk is not None:
                g = truth["control_grid"]
                z = [g["origin_lps"][2], g["origin_lps"][2] + (g["shape"][2] - 1) * g["spacing_mm"][2]]
                e = run_elastix(itk, args.ct, d / "control.nii.gz", z, args.crop_margin_mm,
                                args.elastix_samples, args.elastix_iterations, args.elastix_threads)
                f2m = e["fixed_to_moving"]
                row["elastix"] = {"wall_s": e["wall_s"], "fixed_crop_slices": e["fixed_crop_slices"],
                                  "control_to_planning_lps": np.linalg.inv(f2m).tolist(),
                                  **tre_stats(np.linalg.norm(ic.apply(f2m, p) - c, axis=1))}
            rows.append(row)
            print_row(row)
            sys.stdout.flush()
    report = summarise(rows)
    print(json.dumps(report["summary"], indent=1))
    result = {"date": datetime.date.today().isoformat(), "host": platform.node(),
              "python": platform.python_version(), "pinhole_binary": args.pinhole,
              "pinhole_available": has_pinhole,
              "elastix": None if args.no_elastix else {
                  "samples": args.elastix_samples, "iterations": args.elastix_iterations,
                  "threads": args.elastix_threads, "crop_margin_mm": args.crop_margin_mm},
              **report}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


def fmt(m):
    if not m or "mean_mm" not in m:
        return "      -              "
    return f"{m['mean_mm']:6.2f} {m['median_mm']:6.2f} {m['max_mm']:6.2f} {m['wall_s']:6.1f}s"


def print_row(r):
    if r["seed"] == 1 or not hasattr(print_row, "done"):
        print_row.done = True
        print("seed organ         lm  ident.mean  truerigid.mean | pinhole mean med max time | "
              "elastix mean med max time")
    print(f"{r['seed']:4d} {r['organ']:13s} {r['landmarks']:3d}  {r['identity_tre']['mean_mm']:9.2f}  "
          f"{r['true_rigid_tre']['mean_mm']:13.2f} | {fmt(r.get('pinhole'))} | {fmt(r.get('elastix'))}")


def summarise(rows):
    s = {"cases": len(rows)}
    for k in ("pinhole", "elastix"):
        ok = [r[k] for r in rows if isinstance(r.get(k), dict) and "mean_mm" in r[k]]
        if ok:
            s[k] = {"cases": len(ok), "mean_of_mean_tre_mm": float(np.mean([o["mean_mm"] for o in ok])),
                    "median_of_median_tre_mm": float(np.median([o["median_mm"] for o in ok])),
                    "worst_max_tre_mm": float(np.max([o["max_mm"] for o in ok])),
                    "total_wall_s": float(np.sum([o["wall_s"] for o in ok])),
                    "median_wall_s": float(np.median([o["wall_s"] for o in ok]))}
    if "pinhole" in s and "elastix" in s:
        s["time_ratio_elastix_over_pinhole"] = s["elastix"]["total_wall_s"] / s["pinhole"]["total_wall_s"]
    s["true_rigid_mean_tre_mm"] = float(np.mean([r["true_rigid_tre"]["mean_mm"] for r in rows]))
    return {"summary": s, "cases": rows}


if __name__ == "__main__":
    main()
