#!/usr/bin/env python3
"""Peer check of Pinhole's DRR against nanodrr (PyPI `nanodrr`, torch on CPU).

Not run in CI: nanodrr needs torch >= 2.5, and PyPI's linux torch wheels pull the CUDA
runtime packages (measured here: 5.8 GB venv, 6 min install). Set up once with

    python3 -m venv /tmp/nanodrr && /tmp/nanodrr/bin/pip install nanodrr==0.1.7 nibabel

and run (from the repository root, after `cargo build --release -p pinhole-bench`):

    /tmp/nanodrr/bin/python bench/drr_peer.py [--ct ../shared/data/chest-ct/ct.nii.gz] [--size 512]

Geometry (the issue's acceptance): isocentre = volume centre (torchio's `get_center`, the
centre of the voxel-centre box, as Pinhole's `Grid::center_lps`), source 850 mm anterior of
it (`--source-anterior`), detector 1020 mm from the source, 400 mm field (512² at
0.78125 mm by default; a smaller `--size` keeps the field). HU → μ: both use nanodrr's
bilinear defaults (μ_water 0.0192, μ_bone 0.0573, HU_bone 1000, clamp −1000). Both
integrate with 500 trilinear samples per ray over the ray's span in the volume.

Image orientation of nanodrr, read from its source (`camera/extrinsics.py`,
`drr/renderer.py`) and confirmed here by the NCC of all four flips: its world is RAS
(torchio; +x = patient's right); the AP reorientation maps camera x (image columns) to
world −x_RAS, i.e. towards the patient's *left*, camera y (image rows) to world −z
(towards the feet), and camera z (the viewing direction) to −y_RAS (anterior → posterior).
So nanodrr's row 0 is the head and its column 0 the patient's right, which is exactly
Pinhole's display convention: `ours = nanodrr` with no flip.

Prints a JSON summary: NCC for the mapping above and for the alternatives, timings.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def nanodrr_render(ct: str, size: int, threads: int):
    import torch
    from nanodrr.camera import make_rt_inv
    from nanodrr.data import Subject
    from nanodrr.drr import DRR

    torch.set_grad_enabled(False)
    torch.set_num_threads(threads)
    subject = Subject.from_filepath(ct)  # mu defaults = the issue's
    drr = DRR.from_carm_intrinsics(
        sdd=1020.0,
        delx=400.0 / size,
        dely=400.0 / size,
        x0=0.0,
        y0=0.0,
        height=size,
        width=size,
    )
    # Source at isocentre + (0, 850, 0) RAS = 850 mm anterior, looking posterior.
    rt_inv = make_rt_inv(
        torch.zeros(1, 3),
        torch.tensor([[0.0, 850.0, 0.0]]),
        orientation="AP",
        isocenter=subject.isocenter,
    )
    drr(subject, rt_inv, n_samples=500, backend="torch")  # warm-up (HU → μ cache)
    start = time.perf_counter()
    img = drr(subject, rt_inv, n_samples=500, backend="torch")
    seconds = time.perf_counter() - start
    return img[0, 0].numpy().astype(np.float32), seconds, torch.__version__


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ct", default=str(ROOT / "../shared/data/chest-ct/ct.nii.gz"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--bench", default=str(ROOT / "target/release/pinhole-bench"))
    args = parser.parse_args()

    theirs, their_seconds, torch_version = nanodrr_render(args.ct, args.size, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "ours.f32"
        out = subprocess.run(
            [args.bench, "drr", args.ct, str(args.size), "trilinear500", "1",
             "--source-anterior", "--out", str(raw)],
            check=True, capture_output=True, text=True,
        )
        ours_info = json.loads(out.stdout)
        ours = np.fromfile(raw, dtype="<f4").reshape(args.size, args.size)

    mappings = {
        "as is (expected)": theirs,
        "cols flipped": theirs[:, ::-1],
        "rows flipped": theirs[::-1, :],
        "both flipped": theirs[::-1, ::-1],
    }
    scores = {name: ncc(ours, img) for name, img in mappings.items()}
    expected = mappings["as is (expected)"]
    rel_l2 = float(np.linalg.norm(ours - expected) / np.linalg.norm(expected))
    summary = {
        "ct": args.ct,
        "size": args.size,
        "nanodrr": {"version": "0.1.7", "torch": torch_version, "seconds": their_seconds,
                    "mean": float(theirs.mean())},
        "pinhole": {"seconds": ours_info["seconds"], "mean": float(ours.mean())},
        "ncc": scores,
        "relative_l2": rel_l2,
    }
    print(json.dumps(summary, indent=2))
    best = max(scores, key=scores.get)
    ok = best == "as is (expected)" and scores[best] >= 0.99
    print(("PASS" if ok else "FAIL") + f": NCC {scores['as is (expected)']:.5f} (>= 0.99)",
          file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
