#!/usr/bin/env python3
"""Independent reference DRR (numpy + scipy), written from the geometry description in
`crates/xray/src/geometry.rs` and the issue, not from the Rust code.

Usage: drr_reference.py CT OUT_DIR SIZE PIXEL_MM VIEW...   where VIEW = LAO,CRAN,SIDE
(SIDE `p` = source posterior, the interventional frontal, or `a` = source anterior).

For each view writes OUT_DIR/<n>_siddon.f32 and OUT_DIR/<n>_trilinear.f32 (raw
little-endian float32, row 0 the displayed top) and prints JSON with the geometry used.

* CT: nibabel (RAS affine), converted to LPS by negating the first two world rows.
* μ: bilinear water/bone model, μ_water 0.0192, μ_bone 0.0573, HU_bone 1000, HU ≥ −1000.
* C-arm: isocentre = centre of the voxel-centre box; LAO 0 / CRAN 0 puts the detector
  anterior (−y LPS), display right = patient's left (+x), display down = feet (−z). LAO θ
  rotates the arm about +z (the head–foot axis) so the detector moves towards +x (patient's
  left); CRAN φ then rotates it about the display-right axis so the detector moves towards
  +z (head). The source is SOD from the isocentre opposite the detector (or on the
  detector's side for SIDE `a`, with the detector moved across), the detector SID from the
  source; pixels are centred symmetrically about the central ray.
* Siddon: parametric form (Siddon 1985): all crossings with the voxel planes, sorted, the
  voxel of each segment found from the segment's midpoint. Voxels are boxes between
  index −0.5 … n−0.5.
* Trilinear: 500 midpoint samples over the ray's span in that box, scipy map_coordinates
  (order 1, mode 'nearest' = clamp to the edge voxels).
"""

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import map_coordinates

SID, SOD = 1020.0, 850.0


def mu_from_hu(hu):
    hu = np.maximum(hu, -1000.0)
    low = 0.0192 * (1.0 + hu / 1000.0)
    high = 0.0192 + hu * (0.0573 - 0.0192) / 1000.0
    return np.maximum(np.where(hu <= 0.0, low, high), 0.0)


def rotate(v, axis, deg):
    """Rodrigues rotation of v about the unit axis by deg (right-handed)."""
    a = np.radians(deg)
    axis = axis / np.linalg.norm(axis)
    return (v * np.cos(a) + np.cross(axis, v) * np.sin(a)
            + axis * np.dot(axis, v) * (1.0 - np.cos(a)))


def carm(iso, lao, cran, side, size, pixel_mm):
    """Source and pixel-centre grid (size, size, 3) in LPS."""
    towards_detector = np.array([0.0, -1.0, 0.0])  # anterior
    right = np.array([1.0, 0.0, 0.0])  # patient's left
    down = np.array([0.0, 0.0, -1.0])  # feet
    z = np.array([0.0, 0.0, 1.0])
    towards_detector, right, down = (rotate(v, z, lao) for v in (towards_detector, right, down))
    # CRAN: turn about the display-right axis so the detector direction gains +z.
    sign = 1.0 if np.dot(np.cross(right, towards_detector), z) > 0 else -1.0
    towards_detector, down = (rotate(v, right, sign * cran) for v in (towards_detector, down))
    if side == "a":
        towards_detector = -towards_detector
    source = iso - SOD * towards_detector
    centre = source + SID * towards_detector
    k = (np.arange(size) - (size - 1) / 2.0) * pixel_mm
    pixels = (centre[None, None, :] + k[None, :, None] * right[None, None, :]
              + k[:, None, None] * down[None, None, :])
    return source, pixels


def clip(o, d, dims):
    """[t0, t1] of o + t d inside the box −0.5 … n−0.5 (index space), t ≥ 0."""
    lo = -0.5 * np.ones(3)
    hi = np.asarray(dims, float) - 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        ta = (lo[None] - o[None]) / d
        tb = (hi[None] - o[None]) / d
    parallel = d == 0
    inside = (o[None] >= lo) & (o[None] <= hi)
    tmin = np.where(parallel, np.where(inside, -np.inf, np.inf), np.minimum(ta, tb))
    tmax = np.where(parallel, np.where(inside, np.inf, -np.inf), np.maximum(ta, tb))
    return np.maximum(tmin.max(axis=1), 0.0), tmax.min(axis=1)


def siddon(mu, o, d, t0, t1, length):
    """Σ μ·length for each ray o + t d (index space; length = world mm per unit t)."""
    dims = np.array(mu.shape)
    out = np.zeros(len(d))
    for r in range(len(d)):
        if t1[r] <= t0[r]:
            continue
        ts = [np.array([t0[r], t1[r]])]
        for a in range(3):
            if d[r, a] != 0.0:
                planes = np.arange(dims[a] + 1) - 0.5
                t = (planes - o[a]) / d[r, a]
                ts.append(t[(t > t0[r]) & (t < t1[r])])
        t = np.unique(np.concatenate(ts))
        mid = 0.5 * (t[1:] + t[:-1])
        p = o[None, :] + mid[:, None] * d[r][None, :]
        ijk = np.clip(np.floor(p + 0.5).astype(int), 0, dims - 1)
        out[r] = np.sum(mu[ijk[:, 0], ijk[:, 1], ijk[:, 2]] * np.diff(t)) * length[r]
    return out


def trilinear(mu, o, d, t0, t1, length, n=500):
    out = np.zeros(len(d))
    hit = t1 > t0
    dt = (t1 - t0) / n
    s = (np.arange(n) + 0.5)[None, :]
    t = t0[:, None] + s * dt[:, None]  # (rays, n)
    pts = o[None, None, :] + t[:, :, None] * d[:, None, :]
    vals = map_coordinates(mu, pts.reshape(-1, 3).T, order=1, mode="nearest").reshape(t.shape)
    out[hit] = (vals.sum(axis=1) * dt * length)[hit]
    return out


def main() -> None:
    ct_path, out_dir, size, pixel_mm = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    img = nib.load(ct_path)
    hu = np.asarray(img.dataobj, dtype=np.float64)
    mu = mu_from_hu(hu)
    ijk_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    lin, origin = ijk_to_lps[:3, :3], ijk_to_lps[:3, 3]
    lps_to_ijk = np.linalg.inv(lin)
    iso = lin @ ((np.array(hu.shape) - 1) / 2.0) + origin
    views = []
    for n, spec in enumerate(sys.argv[5:]):
        lao, cran, side = spec.split(",")
        source, pixels = carm(iso, float(lao), float(cran), side, size, pixel_mm)
        world_d = pixels.reshape(-1, 3) - source[None, :]
        length = np.linalg.norm(world_d, axis=1)
        o = lps_to_ijk @ (source - origin)
        d = world_d @ lps_to_ijk.T
        t0, t1 = clip(o, d, mu.shape)
        for name, f in (("siddon", siddon), ("trilinear", trilinear)):
            image = f(mu, o, d, t0, t1, length).reshape(size, size)
            image.astype("<f4").tofile(out_dir / f"{n}_{name}.f32")
        views.append({"view": spec, "source_lps": source.tolist(), "isocenter_lps": iso.tolist()})
    print(json.dumps({"views": views}))


if __name__ == "__main__":
    main()
