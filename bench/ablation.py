#!/usr/bin/env python3
"""Pennes bioheat benchmark: Pinhole's explicit solver (`pinhole-bench ablation`) against a
NumPy implementation of the same scheme in this script, on the same grid, with the same
time step and source; then the time of a 10-minute ablation on a 100³ grid at 1 mm.

Scheme (both): θ' = c·θ + a·Σ₆θ_neighbour + s on a zero-padded float32 grid (faces at
37 °C), per-voxel coefficient arrays a = k·dt/(ρc·h²), c = 1 − 6a − p, p = ω_b ρ_b c_b
dt/(ρc), liver values (k 0.52, ρ 1079, c 3540, ω_b 3.6e-3, blood 1000 / 3639),
5 W uniformly in the voxels within 3 mm of the centre. The NumPy version runs the
same number of steps with Pinhole's dt; the script checks the two final temperature
fields agree (max |Δ|), then prints voxel-updates/s and the ratio. Both sides time the
stepping loop alone (Pinhole's `stepping_s`: set-up and output excluded, as NumPy's
array set-up is), best of 3 each.

    cargo build --release -p pinhole-bench
    python3 bench/ablation.py [--n 100] [--numpy-steps 100]
"""

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def ours(bench, n, seconds, damage=False, out=None):
    cmd = [bench, "ablation", str(n), str(seconds)]
    if damage:
        cmd.append("--damage")
    if out:
        cmd += ["--out", out]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def numpy_run(n, dt, steps, dtype=np.float32):
    k, rho, c, wb = 0.52, 1079.0, 3540.0, 3.6e-3 * 1000.0 * 3639.0
    h = 1e-3
    rc = rho * c
    a_val = k * dt / (rc * h * h)
    p_val = wb * dt / rc
    a = np.full((n, n, n), a_val, dtype)
    cc = np.full((n, n, n), 1.0 - 6.0 * a_val - p_val, dtype)
    coords = np.arange(n) - (n - 1) / 2.0
    z, y, x = np.meshgrid(coords, coords, coords, indexing="ij")
    sphere = x * x + y * y + z * z <= 9.0
    s = np.zeros((n, n, n), dtype)
    s[sphere] = 5.0 / sphere.sum() / h**3 * dt / rc
    t = np.zeros((n + 2, n + 2, n + 2), dtype)
    nxt = np.zeros_like(t)
    start = time.perf_counter()
    for _ in range(steps):
        nxt[1:-1, 1:-1, 1:-1] = cc * t[1:-1, 1:-1, 1:-1] + a * (
            (t[1:-1, 1:-1, :-2] + t[1:-1, 1:-1, 2:])
            + (t[1:-1, :-2, 1:-1] + t[1:-1, 2:, 1:-1])
            + (t[:-2, 1:-1, 1:-1] + t[2:, 1:-1, 1:-1])
        ) + s
        t, nxt = nxt, t
    wall = time.perf_counter() - start
    return wall, 37.0 + t[1:-1, 1:-1, 1:-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--numpy-steps", type=int, default=100)
    ap.add_argument("--bench", default=str(ROOT / "target/release/pinhole-bench"))
    args = ap.parse_args()
    n = args.n

    # Same steps for both: Pinhole picks dt (0.9 of the stability limit); simulate
    # numpy_steps of it.
    probe = ours(args.bench, n, 1.0)
    dt_full = 1.0 / (6 * 0.52 / (1079 * 3540 * 1e-6) + 3.6e-3 * 1000 * 3639 / (1079 * 3540)) * 0.9
    seconds = dt_full * args.numpy_steps
    with tempfile.TemporaryDirectory() as tmp:
        raw = str(Path(tmp) / "t.raw")
        best = None
        for _ in range(3):
            r = ours(args.bench, n, seconds, out=raw)
            if best is None or r["stepping_s"] < best["stepping_s"]:
                best = r
        field = np.fromfile(raw, np.float32).reshape(n, n, n)
    steps = best["steps"]
    # Best of 3 for NumPy too; both sides time the stepping loop only (no set-up).
    runs = [numpy_run(n, best["dt_s"], steps) for _ in range(3)]
    np_wall, np_field = min(runs, key=lambda r: r[0])
    diff = float(np.abs(np_field - field).max())
    np_rate = n**3 * steps / np_wall
    ratio = best["voxel_updates_per_s"] / np_rate
    np64_wall, np64_field = numpy_run(n, best["dt_s"], steps, np.float64)
    np64_rate = n**3 * steps / np64_wall
    diff64 = float(np.abs(np64_field - field).max())
    ten = ours(args.bench, 100, 600.0, damage=True)
    ten_nodmg = ours(args.bench, 100, 600.0, damage=False)
    print(f"| grid | steps | NumPy (f32) Mvox/s | Pinhole Mvox/s ({best['threads']} threads) | ratio | max abs diff (K) |")
    print("|---|---|---|---|---|---|")
    print(f"| {n}³ @ 1 mm | {steps} (dt {best['dt_s']:.3f} s) | {np_rate / 1e6:.1f} | "
          f"{best['voxel_updates_per_s'] / 1e6:.1f} | {ratio:.1f}x | {diff:.2e} |")
    print(f"| same, NumPy float64 | {steps} | {np64_rate / 1e6:.1f} | "
          f"{best['voxel_updates_per_s'] / 1e6:.1f} | {best['voxel_updates_per_s'] / np64_rate:.1f}x | {diff64:.2e} |")
    print()
    print(f"10-minute ablation, 100³ at 1 mm: {ten['steps']} steps, "
          f"{ten['seconds']:.2f} s with Arrhenius + CEM43 damage, "
          f"{ten_nodmg['seconds']:.2f} s temperature only "
          f"(probe dt {probe['dt_s']:.3f} s, max {ten['max_temperature_c']:.1f} C)")


if __name__ == "__main__":
    main()
