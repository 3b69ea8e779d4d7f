#!/usr/bin/env python3
"""Intraprocedural deformable CT registration peer study: Pinhole `register-ct --deformable`
(rigid, then a cubic B-spline in the liver) vs elastix (Euler, then B-spline).

Cases are the constructed registration cases of tests/py/intraop_cases.py (the same seeds
as bench/intraop_register.py): the control scan is a short slab of the real shared chest CT
moved rigidly (T, control -> planning) and deformed smoothly in the liver (D(p) = p + u(p),
planning side, peak 3-6 mm); control(x) = planning(D(T(x))). Truth for a control point x is
planning = D(T(x)), exact by construction.

Truth points (LIVER only, the organ that is deformed), per case:
  * the case's own liver landmarks (truth.json, about 6), plus
  * 40 points of our own (at least 30 kept, else the case is flagged): control voxel centres
    (every 4th voxel in x and y, every slice) at least 10 mm inside both z ends of the slab
    whose truth planning point D(T(x)) lies in the liver label (structures.csv "liver",
    nearest neighbour: the rule that built the control scan's labels) at least 3 mm deep
    (Euclidean distance to the label's outside, planning frame) and inside the planning CT;
    40 of them drawn with numpy.random.default_rng([21, 901, seed]).
  T is truth["control_to_planning_rigid_lps"]; D is rebuilt as
  intraop_cases.LiverDeformation(labels, ids, **truth["deformation"] params) -- the very class
  and inputs build_registration uses (its weight map w depends only on the label map), so
  D(T(x)) is the exact construction mapping. The rebuild is checked on every case: it must
  reproduce all of the case's landmarks (every organ) to 1e-6 mm, else the script stops.

For each seed 1..N:
  * identity: TRE = |planning - control|.
  * Pinhole: `PINHOLE register-ct --planning-ct CT --control-ct control.nii.gz --labels LABELS
    --organ liver --deformable --out DIR` (wall time of the process). Deformable TRE =
    |T_f(planning) - control| with T_f = SimpleITK.ReadTransform(DIR/control_to_planning.tfm)
    (ITK resampling direction: planning -> control; affine-only when the deformation was not
    used). Rigid TRE from ct_registration.json's "control_to_planning_lps" M:
    |M^-1 planning - control|. deformable.{used, reason, max_displacement_mm, min_jacobian,
    ncc_rigid, ncc} recorded.
  * elastix (itk-elastix, 2 threads), one run with two parameter maps: (1) the Euler map of
    bench/intraop_register.py (`elastix_parameters`, imported: AdvancedMattesMutualInformation,
    3 resolutions, RandomCoordinate 3000 samples, 250 iterations, no automatic initialisation);
    (2) GetDefaultParameterMap("bspline", 3, 20.0) with FinalGridSpacingInPhysicalUnits 20,
    32 histogram bins, 3 resolutions, RandomCoordinate with the same sample count,
    MaximumNumberOfIterations --elastix-iterations (250), and the metric chosen by
    --elastix-metric:
      default  (the default) elastix's own default B-spline metrics, unchanged:
               MultiMetricMultiResolutionRegistration with AdvancedMattesMutualInformation +
               TransformBendingEnergyPenalty, Metric0Weight = Metric1Weight = 1.0;
      mi-only  MultiResolutionRegistration with AdvancedMattesMutualInformation alone (the
               bending-energy term removed; the setup of the first run of this study,
               bench/results/intraop_deformable_2026-12-05-elastix-mi-only.json).
    The choice and the full parameter maps are recorded in the output JSON
    (parameters.elastix.bspline_metric, parameters.elastix.parameter_maps).
    Fixed = planning CT cropped in z to
    the control slab +/- 30 mm (as intraop_register.py), moving = control, fixed_mask = the
    planning liver label dilated by 20 mm (Euclidean distance <= 20 mm), cropped like the fixed
    image. elastix applies a fixed mask to every parameter map of a run, so the Euler stage is
    also liver-driven here -- like Pinhole, whose --organ liver rigid stage registers on the
    liver and its 20 mm margin too. elastix maps fixed (planning) -> moving (control):
    TRE = |T_e(planning) - control|, T_e = the registration's combination transform
    (ElastixRegistrationMethod.GetCombinationTransform(), cross-checked against transformix on
    the first case: the two must agree to 1e-3 mm). "elastix rigid" = the Euler stage alone
    (transform 0). Wall time: image reading, crop, mask (labels reading + dilation) and
    registration ("mask_s" is the mask's share).
  * --check-rigid additionally runs intraop_register.py's own unmasked Euler-only elastix on
    each case and reports its TRE on all the case's landmarks (the metric of
    intraop_register.py), to compare with bench/results/intraop_register_*.json.

Summary: TRE mean / median / max over all liver points of all cases (and the mean of the
per-case means) for identity, Pinhole rigid, Pinhole deformable, elastix rigid (Euler stage),
elastix rigid+B-spline; median wall time per method and elastix/Pinhole ratio; cases where
Pinhole used the deformation; cases where Pinhole's deformable TRE (mean) is worse than its
rigid TRE or the deformation was not used ("pinhole_flags").

    python3 bench/intraop_deformable.py --pinhole /tmp/pinhole-bin/pinhole --cases 20 \
        --out bench/results/intraop_deformable_<date>.json
"""

import argparse
import datetime
import json
import math
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "py"))
sys.path.insert(0, str(ROOT / "bench"))
import intraop_cases as ic  # noqa: E402
import intraop_register as ir  # noqa: E402  (elastix Euler map, warm-up, Euler -> 4x4)

POINT_SEED = 901
OWN_POINTS = 40
MIN_OWN_POINTS = 30
Z_END_MARGIN_MM = 10.0
MIN_DEPTH_MM = 3.0
XY_STEP = 4


def stats(errors):
    e = np.asarray(errors, dtype=np.float64)
    return {"mean_mm": float(e.mean()), "median_mm": float(np.median(e)), "max_mm": float(e.max())}


# ------------------------------------------------------------------------------ truth


class LiverDepth:
    """Planning-frame depth inside the liver label (mm, 0 outside), over the liver's box."""

    def __init__(self, labels, ids):
        liver = labels.data == ids["liver"]
        spacing = np.abs(np.diag(labels.affine_lps)[:3])
        sl = ic.bbox_slices(liver, np.array([2, 2, 2]))
        depth = np.zeros(liver.shape, np.float32)
        depth[sl] = ndimage.distance_transform_edt(liver[sl], sampling=spacing)
        self.vol = ic.Volume(depth, labels.affine_lps)


def case_mapping(truth, labels, ids):
    """(T, D) of a case rebuilt from its truth; checked against all of its landmarks."""
    rigid = np.array(truth["control_to_planning_rigid_lps"], dtype=np.float64)
    dp = truth["deformation"]
    deform = ic.LiverDeformation(labels, ids, dp["centre_lps"], dp["sigma_mm"], dp["direction_lps"],
                                 dp["amplitude_mm"])
    c = np.array([l["control_lps"] for l in truth["landmarks"]])
    p = np.array([l["planning_lps"] for l in truth["landmarks"]])
    err = np.linalg.norm(deform(ic.apply(rigid, c)) - p, axis=1).max()
    if err > 1e-6:
        raise SystemExit(f"seed {truth['seed']}: rebuilt D(T(x)) misses the case landmarks by {err} mm")
    return rigid, deform


def liver_points(truth, rigid, deform, labels, ids, depth, ct):
    """Control/planning LPS pairs: the case's liver landmarks + OWN_POINTS drawn points."""
    g = truth["control_grid"]
    shape, spacing, origin = np.array(g["shape"]), np.array(g["spacing_mm"]), np.array(g["origin_lps"])
    z = origin[2] + np.arange(shape[2]) * spacing[2]
    ks = np.nonzero((z >= z[0] + Z_END_MARGIN_MM) & (z <= z[-1] - Z_END_MARGIN_MM))[0]
    ii = np.arange(XY_STEP // 2, shape[0], XY_STEP)
    jj = np.arange(XY_STEP // 2, shape[1], XY_STEP)
    idx = np.stack(np.meshgrid(ii, jj, ks, indexing="ij"), -1).reshape(-1, 3).astype(np.float64)
    x = origin + idx * spacing
    # Cheap pre-filter with the rigid part (|u| <= 6.5 mm), then the exact mapping.
    pr = ic.apply(rigid, x)
    near = depth.vol.sample(pr, order=1, cval=0.0) > 0.0
    near |= ndimage.binary_dilation(near.reshape(len(ii), len(jj), len(ks)), iterations=3).reshape(-1)
    x = x[near]
    p = deform(ic.apply(rigid, x))
    keep = (labels.sample(p, order=0, cval=0) == ids["liver"])
    keep &= depth.vol.sample(p, order=0, cval=0.0) >= MIN_DEPTH_MM
    keep &= ct.inside(p)
    cand = np.nonzero(keep)[0]
    rng = np.random.default_rng([21, POINT_SEED, int(truth["seed"])])
    chosen = np.sort(rng.choice(len(cand), size=min(OWN_POINTS, len(cand)), replace=False)) if len(cand) else []
    own_c, own_p = x[cand[chosen]], p[cand[chosen]]
    lm = [l for l in truth["landmarks"] if l["organ"] == "liver"]
    lm_c = np.array([l["control_lps"] for l in lm]).reshape(-1, 3)
    lm_p = np.array([l["planning_lps"] for l in lm]).reshape(-1, 3)
    return (np.vstack([lm_c, own_c]), np.vstack([lm_p, own_p]),
            {"case_liver_landmarks": len(lm), "own_points": int(len(own_c)), "candidates": int(len(cand))})


# ---------------------------------------------------------------------------- Pinhole


def pinhole_has_deformable(binary):
    try:
        r = subprocess.run([binary, "register-ct", "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    return r.returncode == 0 and "--deformable" in r.stdout, (r.stderr or r.stdout).strip()[-200:]


def run_pinhole(binary, planning, control, labels, out_dir):
    t0 = time.perf_counter()
    r = subprocess.run([binary, "register-ct", "--planning-ct", str(planning), "--control-ct", str(control),
                        "--labels", str(labels), "--organ", "liver", "--deformable", "--out", str(out_dir)],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        return {"error": (r.stderr or r.stdout)[-500:], "wall_s": wall}
    rep = json.loads((out_dir / "ct_registration.json").read_text())
    return {"report": rep, "tfm": out_dir / "control_to_planning.tfm", "wall_s": wall,
            "stdout": r.stdout.strip().splitlines()}


def sitk_points(tfm_path, pts):
    import SimpleITK as sitk

    t = sitk.ReadTransform(str(tfm_path))
    return np.array([t.TransformPoint(tuple(float(v) for v in q)) for q in pts])


# ---------------------------------------------------------------------------- elastix


ELASTIX_METRICS = ("default", "mi-only")


def bspline_map(itk, samples, iterations, metric="default"):
    pm = itk.ParameterObject.New().GetDefaultParameterMap("bspline", 3, 20.0)
    pm["FinalGridSpacingInPhysicalUnits"] = ["20.0"]
    if metric == "mi-only":
        pm["Registration"] = ["MultiResolutionRegistration"]
        pm["Metric"] = ["AdvancedMattesMutualInformation"]
        for k in ("Metric0Weight", "Metric1Weight"):
            if k in pm:
                del pm[k]
    elif metric != "default":  # default: keep elastix's MI + bending-energy penalty and weights
        raise ValueError(f"unknown elastix metric setup {metric!r}")
    pm["NumberOfHistogramBins"] = ["32"]
    pm["NumberOfResolutions"] = ["3"]
    pm["ImageSampler"] = ["RandomCoordinate"]
    pm["NumberOfSpatialSamples"] = [str(samples)]
    pm["NewSamplesEveryIteration"] = ["true"]
    pm["MaximumNumberOfIterations"] = [str(iterations)]
    pm["DefaultPixelValue"] = ["-1024"]
    pm["WriteResultImage"] = ["false"]
    pm["RequiredRatioOfValidSamples"] = ["0.1"]
    return pm


def elastix_parameters(itk, samples, rigid_iterations, bspline_iterations, metric="default"):
    po = ir.elastix_parameters(itk, samples, rigid_iterations)  # Euler map, exactly as the rigid study
    po.AddParameterMap(bspline_map(itk, samples, bspline_iterations, metric))
    return po


def parameter_maps(po):
    return [{k: list(v) for k, v in po.GetParameterMap(i).items()} for i in range(po.GetNumberOfParameterMaps())]


def crop_region(itk, image, control_z_lps, margin_mm):
    """ITK region of `image` cut to control_z +/- margin (the crop of intraop_register.py)."""
    origin = np.array(image.GetOrigin())
    spacing = np.array(image.GetSpacing())
    direction = np.array(itk.array_from_matrix(image.GetDirection()))
    size = np.array(image.GetLargestPossibleRegion().GetSize())
    zdir = direction[2, 2] * spacing[2]
    ks = sorted(((np.array(control_z_lps) + np.array([-margin_mm, margin_mm])) - origin[2]) / zdir)
    k0 = int(max(0, math.floor(ks[0])))
    k1 = int(min(size[2] - 1, math.ceil(ks[1])))
    region = itk.ImageRegion[3]()
    region.SetIndex([0, 0, k0])
    region.SetSize([int(size[0]), int(size[1]), k1 - k0 + 1])
    return region, (k0, k1)


def roi(itk, image, region):
    f = itk.RegionOfInterestImageFilter[type(image), type(image)].New(Input=image, RegionOfInterest=region)
    f.Update()
    return f.GetOutput()


def liver_mask(itk, labels_path, liver_id, margin_mm):
    """Planning liver label dilated by margin_mm (Euclidean), uint8, full planning grid."""
    lab = itk.imread(str(labels_path), itk.UC)
    a = itk.array_view_from_image(lab)  # (z, y, x)
    liver = a == liver_id
    sp = np.array(lab.GetSpacing())[::-1]
    sl = ic.bbox_slices(liver, np.ceil(margin_mm / sp).astype(int) + 1)
    m = np.zeros(liver.shape, np.uint8)
    m[sl] = (ndimage.distance_transform_edt(~liver[sl], sampling=sp) <= margin_mm).astype(np.uint8)
    img = itk.image_from_array(m)
    img.CopyInformation(lab)
    return img


def combination_points(transform, pts):
    return np.array([list(transform.TransformPoint([float(v) for v in q])) for q in pts])


def run_elastix(itk, planning, control, labels_path, liver_id, control_z_lps, args):
    t0 = time.perf_counter()
    fixed = itk.imread(str(planning), itk.F)
    moving = itk.imread(str(control), itk.F)
    region, ks = crop_region(itk, fixed, control_z_lps, args.crop_margin_mm)
    fixed_crop = roi(itk, fixed, region)
    tm = time.perf_counter()
    mask = roi(itk, liver_mask(itk, labels_path, liver_id, args.organ_margin_mm), region)
    mask_s = time.perf_counter() - tm
    po = elastix_parameters(itk, args.elastix_samples, args.elastix_rigid_iterations, args.elastix_iterations,
                            args.elastix_metric)
    reg = itk.ElastixRegistrationMethod.New(fixed_crop, moving, parameter_object=po, fixed_mask=mask,
                                            number_of_threads=args.elastix_threads, log_to_console=False)
    reg.UpdateLargestPossibleRegion()
    wall = time.perf_counter() - t0
    tp = reg.GetTransformParameterObject()
    return {"wall_s": wall, "mask_s": mask_s, "fixed_crop_slices": list(ks),
            "mask_voxels": int(itk.array_view_from_image(mask).sum()),
            "euler_fixed_to_moving": ir.euler_fixed_to_moving(itk, tp),
            "combination": reg.GetCombinationTransform(), "tp": tp, "moving": moving, "po": po}


def transformix_points(itk, moving, tp, pts, work):
    """Fixed points -> moving points with transformix (for the cross-check)."""
    work.mkdir(parents=True, exist_ok=True)
    f = work / "points.txt"
    f.write_text("point\n%d\n" % len(pts) + "".join("%.6f %.6f %.6f\n" % tuple(q) for q in pts))
    tf = itk.TransformixFilter.New(moving, transform_parameter_object=tp)
    tf.SetFixedPointSetFileName(str(f))
    tf.SetOutputDirectory(str(work))
    tf.SetLogToConsole(False)
    tf.UpdateLargestPossibleRegion()
    out = []
    for line in (work / "outputpoints.txt").read_text().splitlines():
        m = re.search(r"OutputPoint = \[ ([^\]]+) \]", line)
        out.append([float(v) for v in m.group(1).split()])
    return np.array(out)


def warm_up_elastix(itk):
    ir.warm_up_elastix(itk)
    itk.ElastixRegistrationMethod  # noqa: B018
    itk.TransformixFilter  # noqa: B018


# ------------------------------------------------------------------------------- main


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
    ap.add_argument("--elastix-iterations", type=int, default=250, help="B-spline stage")
    ap.add_argument("--elastix-rigid-iterations", type=int, default=250, help="Euler stage")
    ap.add_argument("--elastix-threads", type=int, default=2)
    ap.add_argument("--elastix-metric", choices=ELASTIX_METRICS, default="default",
                    help="B-spline stage metrics: default = elastix's default (MI + bending-energy penalty); "
                         "mi-only = AdvancedMattesMutualInformation alone")
    ap.add_argument("--crop-margin-mm", type=float, default=30.0)
    ap.add_argument("--organ-margin-mm", type=float, default=20.0, help="elastix fixed-mask dilation")
    ap.add_argument("--check-rigid", action="store_true",
                    help="also run intraop_register.py's unmasked Euler-only elastix per case")
    ap.add_argument("--time-budget-min", type=float, default=None,
                    help="stop starting new cases after this many minutes")
    args = ap.parse_args()

    t_start = time.time()
    ct, labels, names, ids = ic.load_inputs(args)
    ct.path = str(args.ct.resolve())
    liver_id = ids["liver"]
    depth = LiverDepth(labels, ids)
    has_pinhole, why = pinhole_has_deformable(args.pinhole)
    if not has_pinhole:
        print(f"pinhole register-ct --deformable unavailable ({args.pinhole}): {why}; Pinhole column skipped",
              file=sys.stderr)
    itk = None
    if not args.no_elastix:
        import itk as itk_mod

        itk = itk_mod
        warm_up_elastix(itk)
    rows, pooled, maps = [], {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.first_seed, args.first_seed + args.cases):
            if args.time_budget_min and rows and (time.time() - t_start) / 60 > args.time_budget_min:
                print(f"time budget reached: stopping after {len(rows)} cases", file=sys.stderr)
                break
            d = Path(tmp) / f"case{seed}"
            d.mkdir()
            truth = ic.build_registration(ct, labels, ids, names, seed, d)
            rigid, deform = case_mapping(truth, labels, ids)
            c, p, npts = liver_points(truth, rigid, deform, labels, ids, depth, ct)
            row = {"seed": seed, "organ": truth["organ"], **npts, "points": len(c),
                   "rigid_angle_deg": truth["rigid_angle_deg"],
                   "rigid_translation_mm": truth["rigid_translation_mm"],
                   "max_deformation_mm": truth["max_deformation_mm"],
                   "liver_deformation_at_points": stats(np.linalg.norm(p - ic.apply(rigid, c), axis=1)),
                   "identity": stats(np.linalg.norm(c - p, axis=1))}
            pooled.setdefault("identity", []).extend(np.linalg.norm(c - p, axis=1))
            if npts["own_points"] < MIN_OWN_POINTS:
                row["warning"] = f"only {npts['own_points']} own liver points"
            if has_pinhole:
                od = d / "pinhole"
                od.mkdir()
                r = run_pinhole(args.pinhole, args.ct, d / "control.nii.gz", args.labels, od)
                if "report" in r:
                    rep = r["report"]
                    m = np.array(rep["control_to_planning_lps"], dtype=np.float64)
                    e_rig = np.linalg.norm(ic.apply(np.linalg.inv(m), p) - c, axis=1)
                    tp_pts = sitk_points(r["tfm"], p)
                    e_def = np.linalg.norm(tp_pts - c, axis=1)
                    dfm = rep.get("deformable") or {}
                    row["pinhole"] = {
                        "wall_s": r["wall_s"], "converged": bool(rep.get("converged", False)),
                        "rigid": stats(e_rig), "deformable": stats(e_def),
                        "used": dfm.get("used"), "reason": dfm.get("reason"),
                        "max_displacement_mm": dfm.get("max_displacement_mm"),
                        "min_jacobian": dfm.get("min_jacobian"), "ncc_rigid": dfm.get("ncc_rigid"),
                        "ncc": dfm.get("ncc"),
                        "bspline_part_at_points_max_mm": float(np.linalg.norm(
                            tp_pts - ic.apply(np.linalg.inv(m), p), axis=1).max()),
                        "control_to_planning_lps": m.tolist(), "stdout": r["stdout"]}
                    pooled.setdefault("pinhole_rigid", []).extend(e_rig)
                    pooled.setdefault("pinhole_deformable", []).extend(e_def)
                else:
                    row["pinhole"] = r
            if itk is not None:
                g = truth["control_grid"]
                z = [g["origin_lps"][2], g["origin_lps"][2] + (g["shape"][2] - 1) * g["spacing_mm"][2]]
                e = run_elastix(itk, args.ct, d / "control.nii.gz", args.labels, liver_id, z, args)
                maps = maps or parameter_maps(e["po"])
                q_comb = combination_points(e["combination"], p)
                q_rig = ic.apply(e["euler_fixed_to_moving"], p)
                e_rig = np.linalg.norm(q_rig - c, axis=1)
                e_def = np.linalg.norm(q_comb - c, axis=1)
                row["elastix"] = {"wall_s": e["wall_s"], "mask_s": e["mask_s"],
                                  "fixed_crop_slices": e["fixed_crop_slices"], "mask_voxels": e["mask_voxels"],
                                  "rigid": stats(e_rig), "deformable": stats(e_def),
                                  "bspline_part_at_points_max_mm": float(np.linalg.norm(q_comb - q_rig, axis=1).max()),
                                  "control_to_planning_lps_euler": np.linalg.inv(e["euler_fixed_to_moving"]).tolist()}
                pooled.setdefault("elastix_rigid", []).extend(e_rig)
                pooled.setdefault("elastix_deformable", []).extend(e_def)
                if len(rows) == 0:  # cross-check the combination transform against transformix
                    q_tx = transformix_points(itk, e["moving"], e["tp"], p, d / "transformix")
                    diff = float(np.abs(q_tx - q_comb).max())
                    row["elastix"]["transformix_vs_combination_max_mm"] = diff
                    if diff > 1e-3:
                        raise SystemExit(f"elastix combination transform != transformix ({diff} mm)")
                if args.check_rigid:
                    allc = np.array([l["control_lps"] for l in truth["landmarks"]])
                    allp = np.array([l["planning_lps"] for l in truth["landmarks"]])
                    er = ir.run_elastix(itk, args.ct, d / "control.nii.gz", z, args.crop_margin_mm,
                                        args.elastix_samples, args.elastix_rigid_iterations, args.elastix_threads)
                    row["elastix_rigid_unmasked_check"] = {
                        "wall_s": er["wall_s"], "all_landmarks": len(allc),
                        "all_landmarks_tre": stats(np.linalg.norm(ic.apply(er["fixed_to_moving"], allp) - allc, axis=1)),
                        "liver_points_tre": stats(np.linalg.norm(ic.apply(er["fixed_to_moving"], p) - c, axis=1))}
            rows.append(row)
            print_row(row)
            sys.stdout.flush()
    summary = summarise(rows, pooled)
    print(json.dumps(summary, indent=1))
    result = {"date": datetime.date.today().isoformat(), "host": platform.node(),
              "python": platform.python_version(), "pinhole_binary": args.pinhole,
              "pinhole_available": has_pinhole,
              "parameters": {"cases_requested": args.cases, "first_seed": args.first_seed,
                             "pinhole_args": "--labels LABELS --organ liver --deformable",
                             "points": {"own_per_case": OWN_POINTS, "min_own": MIN_OWN_POINTS,
                                        "rng": f"default_rng([21, {POINT_SEED}, seed])",
                                        "z_end_margin_mm": Z_END_MARGIN_MM, "min_depth_mm": MIN_DEPTH_MM,
                                        "xy_step_voxels": XY_STEP},
                             "elastix": None if args.no_elastix else {
                                 "bspline_metric": args.elastix_metric,
                                 "samples": args.elastix_samples, "bspline_iterations": args.elastix_iterations,
                                 "rigid_iterations": args.elastix_rigid_iterations,
                                 "threads": args.elastix_threads, "crop_margin_mm": args.crop_margin_mm,
                                 "fixed_mask_liver_dilation_mm": args.organ_margin_mm,
                                 "parameter_maps": maps}},
              "summary": summary, "cases": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


def fmt(m, key):
    if not isinstance(m, dict) or key not in m:
        return "    -      -   "
    return f"{m[key]['mean_mm']:5.2f} {m[key]['max_mm']:5.2f}"


def print_row(r):
    if not hasattr(print_row, "done"):
        print_row.done = True
        print("seed organ         pts  ident mean/max | ph rigid    ph deform   used  t     | "
              "ex rigid    ex deform   t")
    ph, ex = r.get("pinhole"), r.get("elastix")
    used = "-" if not isinstance(ph, dict) or "used" not in ph else ("yes" if ph["used"] else "NO")
    tph = f"{ph['wall_s']:5.1f}" if isinstance(ph, dict) else "  -  "
    tex = f"{ex['wall_s']:5.1f}" if isinstance(ex, dict) else "  -  "
    print(f"{r['seed']:4d} {r['organ']:13s} {r['points']:3d}  {r['identity']['mean_mm']:5.2f} "
          f"{r['identity']['max_mm']:5.2f}     | {fmt(ph, 'rigid')} {fmt(ph, 'deformable')} {used:4s} {tph} | "
          f"{fmt(ex, 'rigid')} {fmt(ex, 'deformable')} {tex}"
          + (f"  [{r['warning']}]" if "warning" in r else ""))


def summarise(rows, pooled):
    s = {"cases": len(rows), "points": int(sum(r["points"] for r in rows)), "tre": {}}
    per_case = {"identity": lambda r: r["identity"],
                "pinhole_rigid": lambda r: r["pinhole"]["rigid"],
                "pinhole_deformable": lambda r: r["pinhole"]["deformable"],
                "elastix_rigid": lambda r: r["elastix"]["rigid"],
                "elastix_deformable": lambda r: r["elastix"]["deformable"]}
    for k, get in per_case.items():
        if k not in pooled:
            continue
        means = []
        for r in rows:
            try:
                means.append(get(r)["mean_mm"])
            except (KeyError, TypeError):
                pass
        s["tre"][k] = {**stats(pooled[k]), "mean_of_case_means_mm": float(np.mean(means)), "cases": len(means)}
    for k in ("pinhole", "elastix"):
        ok = [r[k] for r in rows if isinstance(r.get(k), dict) and "deformable" in r[k]]
        if ok:
            s[k + "_wall"] = {"median_s": float(np.median([o["wall_s"] for o in ok])),
                              "total_s": float(np.sum([o["wall_s"] for o in ok]))}
    if "pinhole_wall" in s and "elastix_wall" in s:
        s["time_ratio_elastix_over_pinhole_median"] = s["elastix_wall"]["median_s"] / s["pinhole_wall"]["median_s"]
    ph = [r for r in rows if isinstance(r.get("pinhole"), dict) and "deformable" in r["pinhole"]]
    if ph:
        s["pinhole_deformation_used"] = f"{sum(1 for r in ph if r['pinhole']['used'])}/{len(ph)}"
        s["pinhole_flags"] = [
            {"seed": r["seed"], "used": r["pinhole"]["used"], "reason": r["pinhole"]["reason"],
             "rigid_mean_mm": r["pinhole"]["rigid"]["mean_mm"],
             "deformable_mean_mm": r["pinhole"]["deformable"]["mean_mm"]}
            for r in ph if not r["pinhole"]["used"]
            or r["pinhole"]["deformable"]["mean_mm"] > r["pinhole"]["rigid"]["mean_mm"]]
    s["pinhole_errors"] = [{"seed": r["seed"], "error": r["pinhole"]["error"]} for r in rows
                           if isinstance(r.get("pinhole"), dict) and "error" in r["pinhole"]]
    warn = [{"seed": r["seed"], "warning": r["warning"]} for r in rows if "warning" in r]
    if warn:
        s["warnings"] = warn
    return s


if __name__ == "__main__":
    main()
