#!/usr/bin/env python3
"""Independent checker of `pinhole plan needle` output (numpy + nibabel + tomllib only).

Usage: needle_oracle.py PLAN_JSON PROFILE_TOML CT LABELS STRUCTURES_CSV
       needle_oracle.py sphere LABELS STRUCTURES_CSV NAME RADIUS_MM

It re-derives the rules from the profile TOML itself (label patterns expanded with
fnmatch against the CSV label table, the allowed labels and the label at the target
removed from the risk groups), then checks every returned path of plan.json:

* clearance: distance from the needle axis to every voxel centre of each risk group
  (brute force over the voxels near the path), sampled every 0.25 mm along the segment
  and exactly (point-to-segment), >= clearance_mm; it also reports how far the plan's
  `min_clearance_mm` is from its own value;
* length <= length.max_mm; entry near the CT's body/air boundary (HU > -500);
* skin angle from its own normal (mean offset of body voxels, HU > -500, within 8 mm
  of the entry on the full-resolution CT) <= skin_angle.max_deg + tolerance;
* approach cones, axial angle, organ traversal lengths;
* entry_caudal_to: the entry caudal to the lowest voxel of the side's labels (rib 12),
  or with `level = "footprint"` the needle caudal to the side's labels (rib 11) in every
  axial column of theirs (widened by one voxel) it runs over outside the allowed
  labels; the lowest voxel of the fallback labels when the side's are absent.

Prints a JSON report; exit status 0 even when checks fail (the Rust test asserts).
"""
import csv
import fnmatch
import json
import sys
import tomllib

import nibabel as nib
import numpy as np

STEP_MM = 0.25
SKIN_ANGLE_TOLERANCE_DEG = 12.0


def lps_affine(img):
    ras = img.affine.astype(np.float64)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ ras


def expand(patterns, table):
    ids = set()
    for pattern in patterns:
        for name, i in table.items():
            if fnmatch.fnmatchcase(name, pattern):
                ids.add(i)
    return ids


def sphere(labels_path, csv_path, name, radius):
    """A sphere target deep inside label `name`: the voxel farthest from the label's
    boundary (scipy's exact EDT in mm), printed as x,y,z,r in LPS mm."""
    from scipy import ndimage

    table = {}
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            table[row["structure"]] = int(row["id"])
    img = nib.load(labels_path)
    labels = np.asarray(img.dataobj)
    a = lps_affine(img)
    spacing = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
    mask = labels == table[name]
    depth = ndimage.distance_transform_edt(mask, sampling=spacing)
    ijk = np.array(np.unravel_index(np.argmax(depth), depth.shape), dtype=float)
    p = a[:3, :3] @ ijk + a[:3, 3]
    print(f"{p[0]:.3f},{p[1]:.3f},{p[2]:.3f},{radius}")


def main():
    if sys.argv[1] == "sphere":
        sphere(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
        return
    plan_path, profile_path, ct_path, labels_path, csv_path = sys.argv[1:6]
    plan = json.load(open(plan_path))
    with open(profile_path, "rb") as f:
        profile = tomllib.load(f)
    table = {}
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            table[row["structure"]] = int(row["id"])
    limg = nib.load(labels_path)
    labels = np.asarray(limg.dataobj).astype(np.int32)
    ct = np.asarray(nib.load(ct_path).dataobj).astype(np.float32)
    a = lps_affine(limg)
    inv = np.linalg.inv(a)
    shape = np.array(labels.shape)

    def to_index(p):
        p = np.atleast_2d(p)
        h = np.c_[p, np.ones(len(p))]
        return (inv @ h.T).T[:, :3]

    def nearest(vol, pts, fill):
        idx = np.rint(to_index(pts)).astype(np.int64)
        ok = np.all((idx >= 0) & (idx < shape), axis=1)
        out = np.full(len(pts), fill, dtype=vol.dtype)
        out[ok] = vol[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
        return out

    target = np.array(plan["target_lps"])
    allowed = expand(profile.get("allowed_labels", []), table)
    at_target = int(nearest(labels, target[None], 0)[0])
    if at_target:
        allowed.add(at_target)
    groups = []
    for g in profile["risk_groups"]:
        ids = expand(g["labels"], table) - allowed
        if ids:
            groups.append((g["name"], sorted(ids), float(g["clearance_mm"])))

    spacing = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
    results = []
    failures = []
    for path in plan["paths"]:
        entry = np.array(path["entry_lps"])
        tgt = np.array(path["target_lps"])
        seg = entry - tgt
        length = float(np.linalg.norm(seg))
        d = seg / length
        n = int(np.ceil(length / STEP_MM))
        ts = np.linspace(0.0, 1.0, n + 1)
        samples = tgt[None] + ts[:, None] * seg[None]
        res = {"rank": path["rank"], "length_mm": length, "clearance_mm": {}}
        fail = []
        if abs(length - path["length_mm"]) > 1e-3:
            fail.append("length_mm differs from |entry - target|")
        if np.linalg.norm(tgt - target) > 1e-6:
            fail.append("path target differs from target_lps")
        if length > profile["length"]["max_mm"] + 1e-6:
            fail.append(f"length {length:.2f} > {profile['length']['max_mm']}")
        # Clearance, brute force over voxels within the path's box + clearance + 2 mm.
        idx = to_index(samples)
        for name, ids, clearance in groups:
            margin = clearance + 2.0
            lo = np.floor(idx.min(axis=0) - margin / spacing).astype(int)
            hi = np.ceil(idx.max(axis=0) + margin / spacing).astype(int)
            lo = np.clip(lo, 0, shape - 1)
            hi = np.clip(hi, 0, shape - 1)
            sub = labels[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1]
            vox = np.argwhere(np.isin(sub, ids)) + lo
            if len(vox) == 0:
                res["clearance_mm"][name] = None
                continue
            pts = (a[:3, :3] @ vox.T).T + a[:3, 3]
            # sampled: min over samples of the distance to the nearest voxel centre
            best_sampled = np.inf
            for chunk in np.array_split(samples, max(1, len(samples) // 64)):
                dist = np.sqrt(((chunk[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
                best_sampled = min(best_sampled, float(dist.min()))
            # exact point-to-segment distance
            ap = pts - tgt
            t = np.clip(ap @ seg / (seg @ seg), 0.0, 1.0)
            exact = float(np.sqrt(((ap - t[:, None] * seg) ** 2).sum(-1)).min())
            res["clearance_mm"][name] = {"sampled": best_sampled, "exact": exact,
                                         "plan": path["min_clearance_mm"].get(name)}
            if best_sampled < clearance or exact < clearance - 1e-6:
                fail.append(f"clearance {name}: {exact:.2f} < {clearance}")
            reported = path["min_clearance_mm"].get(name)
            if reported is not None and exact < clearance + 2.0 and abs(reported - exact) > 0.05:
                fail.append(f"reported clearance {name} {reported:.3f} != exact {exact:.3f}")
        # Entry on the body boundary: the last sample with HU > -500 lies within 3 mm.
        hu = nearest(ct, samples, np.float32(-1000.0))
        inside = np.nonzero(hu > -500.0)[0]
        last = ts[inside[-1]] * length if len(inside) else 0.0
        res["skin_gap_mm"] = length - last
        if length - last > 3.0:
            fail.append(f"entry {length - last:.1f} mm beyond the last body voxel")
        # Own skin normal: mean offset of body voxels within 8 mm of the entry.
        ci = np.rint(to_index(entry[None])[0]).astype(int)
        r = np.ceil(8.0 / spacing).astype(int)
        lo = np.clip(ci - r, 0, shape - 1)
        hi = np.clip(ci + r, 0, shape - 1)
        sub = ct[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1]
        vox = np.argwhere(sub > -500.0) + lo
        pts = (a[:3, :3] @ vox.T).T + a[:3, 3] - entry
        pts = pts[np.linalg.norm(pts, axis=1) <= 8.0]
        normal = -pts.mean(axis=0)
        normal /= np.linalg.norm(normal)
        skin_angle = float(np.degrees(np.arccos(np.clip(normal @ d, -1, 1))))
        res["skin_angle_deg"] = skin_angle
        if skin_angle > profile["skin_angle"]["max_deg"] + SKIN_ANGLE_TOLERANCE_DEG:
            fail.append(f"skin angle {skin_angle:.1f} > {profile['skin_angle']['max_deg']}")
        if "axial_angle" in profile:
            ax = float(np.degrees(np.arcsin(min(1.0, abs(d[2])))))
            if ax > profile["axial_angle"]["max_deg"] + 1e-6:
                fail.append(f"axial angle {ax:.1f}")
        cones = profile.get("approach", [])
        if cones:
            ok = False
            for c in cones:
                u = np.array(c["direction_lps"], dtype=float)
                u /= np.linalg.norm(u)
                if np.degrees(np.arccos(np.clip(u @ d, -1, 1))) <= c["max_deg"] + 1e-6:
                    ok = True
            if not ok:
                fail.append("outside every approach cone")
        rule = profile.get("entry_caudal_to")
        if rule:
            body_x = None
            # side of the target relative to the spinal canal (vertebrae centroid x)
            vert = expand(["vertebrae_*"], table)
            vx = np.argwhere(np.isin(labels, sorted(vert)))
            if len(vx):
                body_x = float(((a[:3, :3] @ vx.mean(axis=0)) + a[:3, 3])[0])
            left = target[0] > (body_x if body_x is not None else 0.0)
            names = rule["left"] if left else rule["right"]
            ids = sorted(expand(names, table))
            vx = np.argwhere(np.isin(labels, ids)) if ids else np.zeros((0, 3))
            footprint = rule.get("level", "lowest-voxel") == "footprint" and len(vx) > 0
            if len(vx) == 0:
                ids = sorted(expand(rule["fallback"], table))
                vx = np.argwhere(np.isin(labels, ids))
            zs = (a[2, :3] @ vx.T) + a[2, 3]
            if footprint:
                # Lowest z per (i, j) column of the labels, widened by one voxel.
                low = np.full(shape[:2], np.inf)
                np.minimum.at(low, (vx[:, 0], vx[:, 1]), zs)
                pad = np.pad(low, 1, constant_values=np.inf)
                floor = np.min([pad[1 + di:1 + di + shape[0], 1 + dj:1 + dj + shape[1]]
                                for di in (-1, 0, 1) for dj in (-1, 0, 1)], axis=0)
                sidx = np.rint(to_index(samples)).astype(np.int64)
                ok = np.all((sidx >= 0) & (sidx < shape), axis=1)
                lab = nearest(labels, samples, 0)
                ok &= ~np.isin(lab, sorted(allowed))
                over = floor[sidx[ok, 0], sidx[ok, 1]] - samples[ok, 2]
                over = over[np.isfinite(over)]
                margin = float(over.min()) if len(over) else None
                res["caudal_margin_mm"] = margin
                # The planner samples every half voxel, this every 0.25 mm.
                if margin is not None and margin < -0.5:
                    fail.append(f"needle {-margin:.1f} mm above {names} where it runs over it")
                reported = path.get("entry_caudal_to_margin_mm")
                if (margin is None) != (reported is None) or (
                        margin is not None and abs(margin - reported) > 1.5):
                    fail.append(f"reported caudal margin {reported} != {margin}")
            else:
                level = float(zs.min())
                res["caudal_level_z_mm"] = level
                if entry[2] > level + 1e-6:
                    fail.append(f"entry z {entry[2]:.1f} above level {level:.1f}")
        for rule in profile.get("traverse", []):
            ids = sorted(expand(rule["labels"], table))
            inside = np.isin(nearest(labels, samples, 0), ids)
            mm = float(inside.sum() * STEP_MM)
            res.setdefault("traverse_mm", {})[",".join(rule["labels"])] = mm
            # the planner samples at ~1 mm: allow 2 mm of disagreement
            if mm < rule["min_mm"] - 2.0:
                fail.append(f"traverses {mm:.1f} mm of {rule['labels']} < {rule['min_mm']}")
        res["failures"] = fail
        failures.extend(f"path {path['rank']}: {f}" for f in fail)
        results.append(res)
    print(json.dumps({"paths": results, "failures": failures,
                      "groups": [g[0] for g in groups]}))


if __name__ == "__main__":
    main()
