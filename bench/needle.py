#!/usr/bin/env python3
"""Needle planner: Pinhole (`pinhole-bench needle`) vs a vectorised NumPy/SciPy
implementation of the same candidate checks, timed in one run; prints the ratios.

    python3 bench/needle.py [--data ../shared/data/chest-ct] [--procedure kidney-biopsy]
        [--target kidney_cyst_left] [--candidates 40000] [--repeats 5]

The NumPy version does what Pinhole's screening does, on the same coarse grid
(~2 mm cells, mean HU > -500, largest 26-component, holes filled per slice; scipy EDT per
risk group): Fibonacci directions, every ray sampled every half coarse cell up to the
length limit, first exit from the body, earliest clearance violation per group, length,
skin normal from the body mask around the entry, skin angle, soft score. It does NOT do
the capsule angle, the CT-based skin refinement, the Pareto set or the exact
verification of the returned paths, so the comparison favours NumPy.
Requires numpy, scipy, nibabel and a release build:
`cargo build --release -p pinhole-bench`.
"""
import argparse
import csv
import fnmatch
import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parent.parent


def fibonacci(n):
    i = np.arange(n)
    z = 1.0 - (2.0 * i + 1.0) / n
    r = np.sqrt(np.maximum(0.0, 1.0 - z * z))
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def expand(patterns, table):
    return {i for p in patterns for n, i in table.items() if fnmatch.fnmatchcase(n, p)}


class Numpy:
    def __init__(self, ct_path, labels_path, table, profile, target_lps):
        t0 = time.perf_counter()
        img = nib.load(ct_path)
        ct = np.asarray(img.dataobj, dtype=np.float32)
        labels = np.asarray(nib.load(labels_path).dataobj).astype(np.int32)
        a = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
        spacing = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
        f = np.maximum(1, np.rint(2.0 / spacing)).astype(int)
        dims = -(-np.array(ct.shape) // f)
        pad = dims * f - np.array(ct.shape)
        self.load_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        ctp = np.pad(ct, [(0, p) for p in pad], constant_values=np.nan)
        cells = ctp.reshape(dims[0], f[0], dims[1], f[1], dims[2], f[2])
        mean = np.nanmean(cells, axis=(1, 3, 5))
        raw = mean > -500.0
        lab, _ = ndimage.label(raw, structure=np.ones((3, 3, 3)))
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        body = lab == np.argmax(sizes)
        for k in range(body.shape[2]):
            body[:, :, k] = ndimage.binary_fill_holes(body[:, :, k])
        self.body = body
        self.cspacing = spacing * f
        cdir = a[:3, :3] / spacing  # columns: axis directions
        corigin = a[:3, :3] @ ((f - 1) / 2.0) + a[:3, 3]
        self.c_to_world = cdir * self.cspacing
        self.world_to_c = np.linalg.inv(self.c_to_world)
        self.corigin = corigin
        target_lab = labels[tuple(np.rint(np.linalg.inv(a[:3, :3]) @ (target_lps - a[:3, 3])).astype(int))]
        allowed = expand(profile.get("allowed_labels", []), table) | {int(target_lab)}
        labp = np.pad(labels, [(0, p) for p in pad])
        self.groups = []
        for g in profile["risk_groups"]:
            ids = sorted(expand(g["labels"], table) - allowed)
            if not ids:
                continue
            occ = np.isin(labp, ids).reshape(dims[0], f[0], dims[1], f[1], dims[2], f[2]).any(axis=(1, 3, 5))
            dist = ndimage.distance_transform_edt(~occ, sampling=self.cspacing).astype(np.float32)
            self.groups.append((g["name"], dist, float(g["clearance_mm"]), float(g.get("weight", 1.0))))
        # skin-normal stencil (8 mm)
        r = np.floor(8.0 / self.cspacing).astype(int)
        grid = np.stack(np.meshgrid(*[np.arange(-x, x + 1) for x in r], indexing="ij"), -1).reshape(-1, 3)
        off = grid @ self.c_to_world.T
        keep = (np.linalg.norm(off, axis=1) <= 8.0) & np.any(grid != 0, axis=1)
        self.stencil, self.stencil_off = grid[keep], off[keep]
        self.dims = dims
        self.profile = profile
        self.precompute_s = time.perf_counter() - t0

    def plan(self, target, n, chunk=2000):
        p = self.profile
        lmax = p["length"]["max_mm"]
        step = 0.5 * self.cspacing.min()
        ts = np.arange(0.0, lmax + step, step)
        dirs = fibonacci(n)
        rejected = {}
        feasible = 0
        best = (-1.0, None)
        cos_skin = np.cos(np.radians(p["skin_angle"]["max_deg"]))
        c0 = self.world_to_c @ (target - self.corigin)
        S = len(ts)
        for s in range(0, n, chunk):
            d = dirs[s:s + chunk]
            m = len(d)
            dc = d @ self.world_to_c.T
            idx = np.rint(c0[None, None, :] + ts[None, :, None] * dc[:, None, :]).astype(np.int64)
            inside = np.all((idx >= 0) & (idx < self.dims), axis=2)
            idx = np.clip(idx, 0, self.dims - 1)
            flat = np.ravel_multi_index((idx[..., 0], idx[..., 1], idx[..., 2]), self.dims)
            bodyv = self.body.ravel()[flat]
            first_out = np.where(inside.all(1), S, np.argmin(inside, axis=1))
            nonbody = ~bodyv & inside
            exit_ = np.where(nonbody.any(1), np.argmax(nonbody, axis=1), S)
            earliest = np.full(m, S)
            culprit = np.full(m, -1)
            margins = np.zeros((m, len(self.groups)))
            valid = np.arange(S)[None, :] < np.minimum(exit_, first_out)[:, None]
            for g, (name, dist, c, _) in enumerate(self.groups):
                v = dist.ravel()[flat]
                bad = (v < c) & valid
                first_bad = np.where(bad.any(1), np.argmax(bad, axis=1), S)
                better = first_bad < earliest
                earliest[better] = first_bad[better]
                culprit[better] = g
                margins[:, g] = np.where(valid, v, np.inf).min(1) - c
            # The first event along each ray decides, as in Pinhole's march: leaving the
            # grid, then leaving the body (reached), then a clearance violation, else the
            # length limit.
            status = np.full(m, "max_length", dtype=object)
            reached = (exit_ < S) & (exit_ <= earliest) & (exit_ < first_out)
            status[reached] = ""
            viol = (earliest < S) & (earliest < exit_) & (earliest < first_out)
            for g, (name, _, _, _) in enumerate(self.groups):
                status[viol & (culprit == g)] = f"clearance:{name}"
            out_first = (first_out < S) & (first_out <= exit_) & (first_out <= earliest)
            status[out_first] = "leaves_scan"
            ok = status == ""
            length = exit_ * step
            over = ok & (length > lmax)
            status[over] = "max_length"
            ok &= ~over
            # skin normal at the entry
            e = np.where(ok)[0]
            entry_c = np.rint(c0[None, :] + (exit_[e] * step)[:, None] * dc[e]).astype(np.int64)
            nb = entry_c[:, None, :] + self.stencil[None, :, :]
            inb = np.all((nb >= 0) & (nb < self.dims), axis=2)
            nb = np.clip(nb, 0, self.dims - 1)
            bv = self.body[nb[..., 0], nb[..., 1], nb[..., 2]] & inb
            sm = (bv[..., None] * self.stencil_off[None]).sum(1)
            normal = -sm / np.maximum(np.linalg.norm(sm, axis=1, keepdims=True), 1e-9)
            cosang = (normal * d[e]).sum(1)
            badskin = cosang < cos_skin
            status[e[badskin]] = "skin_angle"
            good = e[~badskin]
            feasible += len(good)
            w = p.get("weights", {})
            wl, wc, ws = w.get("length", 1.0), w.get("clearance", 1.0), w.get("skin_angle", 0.5)
            gw = np.array([g[3] for g in self.groups])
            s_clear = (np.clip(margins[good] / 15.0, 0, 1) * gw).sum(1) / gw.sum()
            s_len = 1.0 - np.clip(length[good] / lmax, 0, 1)
            ang = np.degrees(np.arccos(np.clip(cosang[~badskin], -1, 1)))
            score = (wl * s_len + wc * s_clear + ws * (1 - ang / 90.0)) / (wl + wc + ws)
            if len(score) and score.max() > best[0]:
                best = (float(score.max()), d[good[np.argmax(score)]].tolist())
            for k in status[status != ""]:
                rejected[k] = rejected.get(k, 0) + 1
        return {"feasible": feasible, "rejected": rejected, "best_dir": best[1]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT / "../shared/data/chest-ct"))
    ap.add_argument("--procedure", default="kidney-biopsy")
    ap.add_argument("--target", default="kidney_cyst_left")
    ap.add_argument("--candidates", type=int, default=40000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    data = Path(args.data)
    ct, labels, csvp = data / "ct.nii.gz", data / "labels.nii.gz", data / "structures.csv"
    exe = ROOT / "target/release/pinhole-bench"
    out = subprocess.run([str(exe), "needle", str(ct), str(labels), str(csvp), args.procedure,
                          args.target, str(args.repeats), str(args.candidates)],
                         check=True, capture_output=True, text=True).stdout
    ours = json.loads(out)
    table = {}
    with open(csvp) as f:
        for row in csv.DictReader(f):
            table[row["structure"]] = int(row["id"])
    with open(ROOT / f"crates/plan-needle/profiles/{args.procedure}.toml", "rb") as f:
        profile = tomllib.load(f)
    target = np.array(ours["target_lps"])
    npy = Numpy(ct, labels, table, profile, target)
    times, cpu, res = [], [], None
    for _ in range(max(1, args.repeats // 2)):
        t0, c0 = time.perf_counter(), time.process_time()
        res = npy.plan(target, args.candidates)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    np_plan = float(np.median(times))
    np_cpu = float(np.median(cpu))
    moved = target + np.array([0.0, 5.0, 0.0])
    t0 = time.perf_counter()
    npy.plan(moved, args.candidates)
    np_replan = time.perf_counter() - t0
    report = {
        "procedure": args.procedure, "target": args.target, "candidates": args.candidates,
        "pinhole": {k: ours[k] for k in ["context_s", "first_plan_s", "cold_total_s",
                                          "warm_plan_median_s", "replan_5mm_median_s",
                                          "warm_plan_cpu_s", "replan_cpu_s",
                                          "feasible", "rejected", "threads"]},
        "numpy": {"precompute_s": npy.precompute_s, "plan_median_s": np_plan,
                  "plan_cpu_s": np_cpu,
                  "replan_5mm_s": np_replan, "feasible": res["feasible"],
                  "rejected": res["rejected"]},
        "ratio_plan": np_plan / ours["warm_plan_median_s"],
        "ratio_plan_cpu": np_cpu / max(ours["warm_plan_cpu_s"], 1e-9),
        "ratio_replan": np_replan / ours["replan_5mm_median_s"],
        "ratio_cold": (npy.precompute_s + np_plan) / ours["cold_total_s"],
    }
    print(json.dumps(report, indent=1))
    print(f"full plan ({args.candidates} candidates, warm): pinhole {ours['warm_plan_median_s']:.3f} s, "
          f"numpy {np_plan:.3f} s -> {report['ratio_plan']:.1f}x", file=sys.stderr)
    print(f"full plan CPU time: pinhole {ours['warm_plan_cpu_s']:.3f} s (all threads), numpy "
          f"{np_cpu:.3f} s -> {report['ratio_plan_cpu']:.1f}x", file=sys.stderr)
    print(f"replan after 5 mm: pinhole {ours['replan_5mm_median_s']:.3f} s, numpy {np_replan:.3f} s "
          f"-> {report['ratio_replan']:.1f}x", file=sys.stderr)
    print(f"cold (precompute + plan): pinhole {ours['cold_total_s']:.3f} s, numpy "
          f"{npy.precompute_s + np_plan:.3f} s -> {report['ratio_cold']:.1f}x", file=sys.stderr)


if __name__ == "__main__":
    main()
