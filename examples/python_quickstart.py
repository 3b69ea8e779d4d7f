"""Pinhole from Python, end to end on the shared real data (not a notebook).

    pip install target/wheels/pinhole-*.whl        # built by scripts/python-tests.sh
    python3 examples/python_quickstart.py [DATA_DIR] [OUT_DIR]

DATA_DIR defaults to ../shared/data (see its README). Writes a needle plan (the CLI's
files), a batch of DRRs as .npy, and prints guidance metrics for a needle half-way in.
NOT FOR CLINICAL USE.
"""

import sys
from pathlib import Path

import numpy as np

import pinhole

data = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parents[1] / ".." / "shared" / "data")
out = Path(sys.argv[2] if len(sys.argv) > 2 else "pinhole-python-out")
ct_path = data / "abdomen-ct" / "example_ct_sm.nii.gz"
labels_path = data / "abdomen-ct" / "example_seg.nii.gz"

# 1. A CT as a NumPy array (no copy) with its index -> LPS affine.
ct = pinhole.load(ct_path)
print(ct, "voxel (0,0,0) at LPS", ct.index_to_lps((0, 0, 0)).round(1))

# 2. DRRs: a frontal view and a batch over C-arm poses (rigid 4x4, CT -> room, LPS).
frontal = pinhole.drr(ct, size=128, pixel_mm=3.0)
shifts_mm = np.linspace(-10, 10, 5)
poses = np.repeat(np.eye(4)[None], len(shifts_mm), axis=0)
poses[:, 0, 3] = shifts_mm  # the table moved towards the patient's left
batch = pinhole.drr(ct, size=128, pixel_mm=3.0, poses=poses)
out.mkdir(parents=True, exist_ok=True)
np.save(out / "drr_batch.npy", batch)
print("DRR", frontal.shape, "batch", batch.shape, "max line integral", float(batch.max()))

# 3. A needle plan: the same report and files as `pinhole plan needle`.
plan = pinhole.plan_needle(ct_path, labels_path, procedure="kidney-biopsy",
                           target="kidney_left", candidates=10_000, out=out / "plan")
best = plan.paths[0]
print(f"best path {best.length_mm:.1f} mm from {np.round(best.entry_lps, 1)}")
for warning in plan.warnings:
    print("warning:", warning)

# 4. Guidance for a needle half-way along the best path.
guidance = pinhole.Guidance(ct_path, labels_path, plan=out / "plan" / "plan.json")
entry, target = np.array(best.entry_lps), np.array(best.target_lps)
metrics = guidance.evaluate(entry + 0.5 * (target - entry), target - entry)
print(f"depth remaining {metrics.depth_remaining_mm:.1f} mm, alert {metrics.alert}")
print(pinhole.DISCLAIMER)
