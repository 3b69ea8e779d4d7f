#!/usr/bin/env python3
"""Needle verification study: Pinhole `verify needle` on constructed control CTs (issue 21).

Cases are constructed (tests/py/intraop_cases.py, `needle`): axial slices of the shared
real chest CT re-acquired by simulation (radon, a straight steel needle with partial
volume, metal beam hardening, Poisson noise, FBP), in the planning scan's own frame. Truth
is the needle's tip, entry and unit axis (entry -> tip), LPS mm.

For each seed 1..N (needle) and 1..M (`--no-needle`, empty scans):
  * plan.json = {"target_lps": truth target, "paths": [{"entry_lps": truth entry,
    "target_lps": truth target}]};
  * `PINHOLE verify needle --plan plan.json --planning-ct CT --control-ct control.nii.gz
    --labels LABELS --out DIR` (timed, wall clock), reading DIR/needle_check.json;
  * tip error = |tip_planning_lps - tip_lps| (mm), axis error = angle between
    axis_planning_lps (hub -> tip) and axis_lps (entry -> tip), degrees (a flipped axis
    reads ~180);
  * empty scans must come back `found: false`; any `found: true` is a false positive.

    python3 bench/intraop_needle.py --pinhole target/release/pinhole --cases 20 \
        --out bench/results/intraop_needle_<date>.json
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


def write_plan(truth, path):
    plan = {"target_lps": truth["target_lps"],
            "paths": [{"entry_lps": truth["entry_lps"], "target_lps": truth["target_lps"]}]}
    path.write_text(json.dumps(plan, indent=1) + "\n")


def run_pinhole(binary, plan, planning, control, labels, out_dir):
    cmd = [binary, "verify", "needle", "--plan", str(plan), "--planning-ct", str(planning),
           "--control-ct", str(control), "--labels", str(labels), "--out", str(out_dir)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        return {"error": (r.stderr or r.stdout)[-500:], "wall_s": wall}
    return {"report": json.loads((out_dir / "needle_check.json").read_text()), "wall_s": wall}


def angle_deg(u, v):
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    c = float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def evaluate(truth, r):
    """One row from the truth and Pinhole's run."""
    row = {"wall_s": r["wall_s"]}
    if "error" in r:
        row.update(found=False, error=r["error"])
        return row
    rep = r["report"]
    row["found"] = bool(rep["found"])
    row["not_found_reason"] = rep.get("not_found_reason")
    row["registration"] = {k: rep["registration"].get(k) for k in
                           ("method", "rotation_deg", "centre_shift_mm", "converged")}
    if not rep["found"] or not truth["has_needle"]:
        if rep["found"]:
            row["tip_planning_lps"] = rep["needle"]["tip_planning_lps"]
        return row
    n = rep["needle"]
    row["tip_planning_lps"] = n["tip_planning_lps"]
    row["axis_planning_lps"] = n["axis_planning_lps"]
    row["confidence"] = n["in_control"].get("confidence")
    row["tip_error_mm"] = float(np.linalg.norm(np.array(n["tip_planning_lps"]) - np.array(truth["tip_lps"])))
    row["axis_error_deg"] = angle_deg(n["axis_planning_lps"], truth["axis_lps"])
    row["tip_to_target_mm"] = rep["metrics"]["tip_to_target_mm"]
    row["true_tip_to_target_mm"] = float(np.linalg.norm(np.array(truth["tip_lps"]) - np.array(truth["target_lps"])))
    row["action"] = rep["correction"]["action"]
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pinhole", default=str(ROOT / "target" / "release" / "pinhole"))
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--empty-cases", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--ct", type=Path, default=ic.DATA / "ct.nii.gz")
    ap.add_argument("--labels", type=Path, default=ic.DATA / "labels.nii.gz")
    ap.add_argument("--structures", type=Path, default=ic.DATA / "structures.csv")
    args = ap.parse_args()

    ct, labels, names, ids = ic.load_inputs(args)
    ct.path = str(args.ct.resolve())
    rows = []
    jobs = [(s, True) for s in range(1, args.cases + 1)] + [(s, False) for s in range(1, args.empty_cases + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        for seed, with_needle in jobs:
            d = Path(tmp) / f"{'needle' if with_needle else 'empty'}{seed}"
            d.mkdir()
            t0 = time.perf_counter()
            truth = ic.build_needle(ct, labels, ids, names, seed, d, with_needle)
            build_s = time.perf_counter() - t0
            write_plan(truth, d / "plan.json")
            od = d / "out"
            od.mkdir()
            r = run_pinhole(args.pinhole, d / "plan.json", args.ct, d / "control.nii.gz", args.labels, od)
            row = {"seed": seed, "has_needle": with_needle, "organ": truth["organ"],
                   "depth_mm": truth["depth_mm"], "diameter_mm": truth["diameter_mm"],
                   "elevation_deg": truth["elevation_deg"], "slices": truth["shape"][2],
                   "build_s": build_s, **evaluate(truth, r)}
            rows.append(row)
            print_row(row)
            sys.stdout.flush()
    report = summarise(rows)
    print(json.dumps(report["summary"], indent=1))
    result = {"date": datetime.date.today().isoformat(), "host": platform.node(),
              "python": platform.python_version(), "pinhole_binary": args.pinhole,
              "command": " ".join(sys.argv), **report}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


def num(v, w, p):
    return f"{v:{w}.{p}f}" if isinstance(v, (int, float)) else " " * (w - 1) + "-"


def print_row(r):
    if not hasattr(print_row, "done"):
        print_row.done = True
        print("kind   seed organ         depth  found  conf  tip_err  axis_err  tip->tgt  action     wall")
    kind = "needle" if r["has_needle"] else "empty "
    print(f"{kind} {r['seed']:4d} {r['organ']:13s} {r['depth_mm']:5.0f}  {str(r['found']):5s} "
          f"{num(r.get('confidence'), 5, 2)} {num(r.get('tip_error_mm'), 7, 2)}mm "
          f"{num(r.get('axis_error_deg'), 6, 2)}deg {num(r.get('tip_to_target_mm'), 7, 1)}mm  "
          f"{str(r.get('action', r.get('not_found_reason') or r.get('error', '-')))[:10]:10s} "
          f"{r['wall_s']:5.1f}s")


def stats(v):
    a = np.asarray(v, dtype=np.float64)
    if a.size == 0:
        return None
    return {"median": float(np.median(a)), "mean": float(a.mean()), "max": float(a.max())}


def summarise(rows):
    needle = [r for r in rows if r["has_needle"]]
    empty = [r for r in rows if not r["has_needle"]]
    found = [r for r in needle if "tip_error_mm" in r]
    tip = [r["tip_error_mm"] for r in found]
    ax = [r["axis_error_deg"] for r in found]
    s = {"needle_cases": len(needle), "found": len(found),
         "found_rate": len(found) / len(needle) if needle else None,
         "tip_error_mm": stats(tip), "axis_error_deg": stats(ax),
         "within_1mm": sum(t <= 1.0 for t in tip), "within_1deg": sum(a <= 1.0 for a in ax),
         "within_1mm_and_1deg": sum(t <= 1.0 and a <= 1.0 for t, a in zip(tip, ax)),
         "errors": sum("error" in r for r in rows),
         "empty_cases": len(empty), "false_positives_on_empty": sum(bool(r["found"]) for r in empty),
         "median_wall_s": float(np.median([r["wall_s"] for r in rows])),
         "median_wall_s_needle": float(np.median([r["wall_s"] for r in needle])) if needle else None,
         "max_wall_s": float(np.max([r["wall_s"] for r in rows]))}
    return {"summary": s, "cases": rows}


if __name__ == "__main__":
    main()
