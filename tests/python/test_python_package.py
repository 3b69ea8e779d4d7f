"""The `pinhole` Python package against the CLI and independent readers (nibabel).

Run by scripts/test.sh after the wheel is built and installed (maturin). The CLI binary
comes from $PINHOLE_BIN (default: target/debug/pinhole, built by `cargo test --no-run`).
Real data: $PINHOLE_DATA (default ../shared/data). Not for clinical use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import pinhole

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("PINHOLE_DATA", ROOT.parent / "shared" / "data"))
CHEST_CT = DATA / "chest-ct" / "ct.nii.gz"
SMALL_CT = DATA / "abdomen-ct" / "example_ct_sm.nii.gz"
SMALL_LABELS = DATA / "abdomen-ct" / "example_seg.nii.gz"
# Fields that measure the run, not the result (wall-clock seconds).
TIMING_FIELDS = {"elapsed_s"}


def pinhole_bin() -> Path:
    path = Path(os.environ.get("PINHOLE_BIN", ROOT / "target" / "debug" / "pinhole"))
    if not path.exists():
        pytest.fail(f"the CLI binary {path} is missing (cargo build -p pinhole, or set PINHOLE_BIN)")
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(pinhole_bin()), *args], capture_output=True, text=True)


def cli_ok(*args: str) -> str:
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


# ---------------------------------------------------------------- volumes


def test_load_equals_nibabel_data_and_affine():
    for path in (CHEST_CT, SMALL_LABELS):
        ours = pinhole.load(path)
        ref = nib.load(str(path))
        ref_data = np.asanyarray(ref.dataobj)
        assert ours.shape == ref.shape
        np.testing.assert_array_equal(ours.array, ref_data)
        np.testing.assert_allclose(ours.affine_ras, ref.affine, atol=1e-4)
        # LPS = RAS with x and y negated, checked on an asymmetric voxel.
        ijk = np.array([3.0, 7.0, 11.0, 1.0])
        ras = ref.affine @ ijk
        np.testing.assert_allclose(ours.index_to_lps(ijk[:3]), [-ras[0], -ras[1], ras[2]], atol=1e-4)


def test_load_orientation_letters_follow_the_affine():
    ct = pinhole.load(CHEST_CT)
    # nibabel's axis codes are RAS letters; ours are the DICOM (LPS) letters of where
    # each index axis points.
    assert "".join(nib.aff2axcodes(nib.load(str(CHEST_CT)).affine)) == "LAS"
    assert ct.orientation == "LAS"


def test_load_is_zero_copy_peak_memory_below_one_and_a_half_arrays():
    script = textwrap.dedent(
        f"""
        import resource, pinhole
        def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        before = peak()
        ct = pinhole.load({str(CHEST_CT)!r})
        print(peak() - before, ct.array.nbytes, ct.array.flags["F_CONTIGUOUS"], ct.array.flags["OWNDATA"])
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    grown, nbytes, fortran, owns = out.stdout.split()
    assert fortran == "True"
    # The array wraps the reader's buffer (NumPy does not own a copy).
    assert owns == "False"
    assert int(grown) < 1.5 * int(nbytes), (grown, nbytes)


def test_volume_from_nibabel_and_from_array_agree():
    image = nib.load(str(SMALL_CT))
    a = pinhole.Volume.from_nibabel(image)
    b = pinhole.Volume.from_array(np.asanyarray(image.dataobj), affine_ras=image.affine)
    loaded = pinhole.load(SMALL_CT)
    np.testing.assert_allclose(a.affine, loaded.affine, atol=1e-4)
    np.testing.assert_allclose(b.affine, loaded.affine, atol=1e-4)
    np.testing.assert_array_equal(a.array, loaded.array)


@pytest.mark.parametrize(
    "affine, reason",
    [
        (np.diag([1.0, 1.0, 0.0, 1.0]), "spacing"),
        (np.array([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), "orthonormal"),
        (np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1.0]]), "last row"),
        (np.full((3, 3), 1.0), "4x4"),
    ],
)
def test_volume_refuses_a_bad_affine(affine, reason):
    with pytest.raises(pinhole.PinholeError, match=reason):
        pinhole.Volume(np.zeros((4, 4, 4), np.int16), affine)


def test_load_error_is_the_cli_message(tmp_path):
    missing = tmp_path / "absent.nii.gz"
    with pytest.raises(pinhole.PinholeError) as caught:
        pinhole.load(missing)
    done = cli("info", str(missing))
    assert done.returncode != 0
    assert done.stderr.strip() == f"error: {caught.value}"


# ---------------------------------------------------------------- DRR


def test_drr_equals_the_cli_raw_output(tmp_path):
    ct = pinhole.load(SMALL_CT)
    raw = tmp_path / "drr.nii"
    cli_ok("drr", "--ct", str(SMALL_CT), "--lao", "25", "--caud", "10", "--size", "48",
           "--pixel-mm", "6", "--out", str(tmp_path / "drr.png"), "--out-raw", str(raw))
    # The raw file's i is the detector column, j the row.
    ref = np.asanyarray(nib.load(str(raw)).dataobj)[:, :, 0].T
    ours = pinhole.drr(ct, lao=25, cran=-10, size=48, pixel_mm=6)
    assert ours.shape == (48, 48) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)
    assert ours.max() > 1.0  # the body is in the picture


def test_drr_pose_batch_matches_the_moved_isocentre():
    ct = pinhole.load(SMALL_CT)
    centre = ct.index_to_lps((np.array(ct.shape) - 1) / 2.0)
    shift_mm = np.array([12.0, -7.0, 5.0])  # asymmetric on purpose
    moved = np.eye(4)
    moved[:3, 3] = shift_mm
    batch = pinhole.drr(ct, lao=15, size=32, pixel_mm=8, poses=np.stack([np.eye(4), moved]))
    assert batch.shape == (2, 32, 32)
    plain = pinhole.drr(ct, lao=15, size=32, pixel_mm=8)
    np.testing.assert_allclose(batch[0], plain, atol=1e-5)
    # Moving the CT by t is moving the C-arm by -t.
    shifted = pinhole.drr(ct, lao=15, size=32, pixel_mm=8, isocenter_lps=centre - shift_mm)
    np.testing.assert_allclose(batch[1], shifted, atol=1e-4)
    assert not np.allclose(batch[1], plain, atol=1e-3)


def test_drr_refuses_a_mirroring_pose_and_a_bad_method():
    ct = pinhole.load(SMALL_CT)
    with pytest.raises(pinhole.PinholeError, match="rigid"):
        pinhole.drr(ct, size=16, poses=np.diag([-1.0, 1.0, 1.0, 1.0])[None])
    with pytest.raises(pinhole.PinholeError, match="siddon"):
        pinhole.drr(ct, size=16, method="magic")


def test_drr_threads_equal_serial_calls():
    ct = pinhole.load(SMALL_CT)
    angles = [-30, -10, 0, 10, 30, 45]
    serial = [pinhole.drr(ct, lao=a, size=32, pixel_mm=8) for a in angles]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda a: pinhole.drr(ct, lao=a, size=32, pixel_mm=8), angles))
    for s, t in zip(serial, threaded):
        np.testing.assert_array_equal(s, t)


# ---------------------------------------------------------------- reports


def test_plan_needle_equals_the_cli_plan_json(tmp_path):
    out = tmp_path / "cli"
    cli_ok("plan", "needle", "--ct", str(SMALL_CT), "--labels", str(SMALL_LABELS),
           "--procedure", "kidney-biopsy", "--target", "kidney_left", "--candidates", "4000",
           "--out", str(out))
    file_text = (out / "plan.json").read_text()
    report = pinhole.plan_needle(SMALL_CT, SMALL_LABELS, procedure="kidney-biopsy",
                                 target="kidney_left", candidates=4000, out=tmp_path / "py")
    assert without_timing(json.loads(report.to_json())) == without_timing(json.loads(file_text))
    assert without_timing(report.to_dict()) == without_timing(json.loads(file_text))
    assert report.to_json() == (tmp_path / "py" / "plan.json").read_text()
    for name in ("paths.mrk.json", "skin_access.vtk", "best.png"):
        assert (tmp_path / "py" / name).read_bytes() == (out / name).read_bytes(), name
    # Attribute access mirrors the JSON.
    assert report.paths[0].length_mm == json.loads(file_text)["paths"][0]["length_mm"]
    assert "Not for clinical use" in report.note


def test_measure_vessel_and_plan_ablation_equal_the_cli(tmp_path):
    cli_ok("measure", "vessel", "--labels", str(SMALL_LABELS), "--label", "aorta", "--out", str(tmp_path / "m"))
    measured = pinhole.measure_vessel(SMALL_LABELS, label="aorta")
    expected = json.loads((tmp_path / "m" / "measurements.json").read_text())
    assert without_timing(measured.to_dict()) == without_timing(expected)

    liver = pinhole.load(SMALL_LABELS)
    centre = liver.index_to_lps(np.argwhere(liver.array == 5).mean(axis=0))
    sphere = ",".join(f"{v:.1f}" for v in centre) + ",8"
    cli_ok("plan", "ablation", "--ct", str(SMALL_CT), "--labels", str(SMALL_LABELS),
           "--tumor", sphere, "--device", "emprint-example", "--power", "75", "--minutes", "5",
           "--out", str(tmp_path / "a"))
    ablation = pinhole.plan_ablation(SMALL_CT, SMALL_LABELS, tumor=sphere,
                                     device="emprint-example", power_w=75, minutes=5)
    expected = json.loads((tmp_path / "a" / "ablation.json").read_text())
    assert without_timing(ablation.to_dict()) == without_timing(expected)


def test_refusals_are_the_cli_messages(tmp_path):
    args = dict(procedure="kidney-biopsy", target="no_such_organ", candidates=100)
    with pytest.raises(pinhole.PinholeError) as caught:
        pinhole.plan_needle(SMALL_CT, SMALL_LABELS, **args)
    done = cli("plan", "needle", "--ct", str(SMALL_CT), "--labels", str(SMALL_LABELS),
               "--procedure", "kidney-biopsy", "--target", "no_such_organ", "--candidates", "100",
               "--out", str(tmp_path / "x"))
    assert done.returncode != 0
    assert f"error: {caught.value}" in done.stderr
    with pytest.raises(pinhole.PinholeError, match="unnamed_labels"):
        pinhole.plan_needle(SMALL_CT, SMALL_LABELS, procedure="kidney-biopsy", target="kidney_left",
                            unnamed_labels="sometimes")


def test_plan_threads_equal_serial_calls():
    targets = ["kidney_left", "kidney_right", "liver:deepest", "kidney_left:lower-pole"]
    procedures = ["kidney-biopsy", "nephrostomy", "liver-biopsy", "nephrostomy"]

    def plan(i):
        return pinhole.plan_needle(SMALL_CT, SMALL_LABELS, procedure=procedures[i],
                                   target=targets[i], candidates=3000).to_json()

    serial = [plan(i) for i in range(len(targets))]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(plan, range(len(targets))))
    assert serial == threaded


def test_report_warnings_reach_python_warnings():
    # The chest CT's label map has id 118 (costal cartilages), which TotalSegmentator
    # v2's table does not name: avoided with unnamed_labels="forbid", with a warning.
    labels = DATA / "chest-ct" / "labels.nii.gz"
    with pytest.warns(pinhole.PinholeWarning, match="118"):
        report = pinhole.plan_needle(CHEST_CT, labels, procedure="kidney-biopsy",
                                     target="kidney_cyst_left", candidates=500,
                                     unnamed_labels="forbid")
    assert any("118" in w for w in report.warnings)


def test_guidance_metrics_on_constructed_poses(tmp_path):
    pinhole.plan_needle(SMALL_CT, SMALL_LABELS, procedure="kidney-biopsy", target="kidney_left",
                        candidates=3000, out=tmp_path)
    plan = json.loads((tmp_path / "plan.json").read_text())
    entry = np.array(plan["paths"][0]["entry_lps"])
    target = np.array(plan["paths"][0]["target_lps"])
    engine = pinhole.Guidance(SMALL_CT, SMALL_LABELS, plan=tmp_path / "plan.json")
    assert engine.description.to_dict()["plan"]["target_lps"] == pytest.approx(list(target))
    direction = (target - entry) / np.linalg.norm(target - entry)
    length = np.linalg.norm(target - entry)
    # Half-way along the planned line, pointing along it.
    halfway = engine.evaluate(entry + 0.5 * (target - entry), direction)
    assert halfway.lateral_deviation_mm == pytest.approx(0.0, abs=1e-9)
    assert halfway.angle_deg == pytest.approx(0.0, abs=1e-6)
    assert halfway.depth_remaining_mm == pytest.approx(0.5 * length, abs=1e-9)
    assert halfway.tip_to_target_mm == pytest.approx(0.5 * length, abs=1e-9)
    # 3 mm off the line, perpendicular to it, tilted by 10 degrees.
    side = np.cross(direction, [0.0, 0.0, 1.0])
    side /= np.linalg.norm(side)
    tilt = np.cos(np.radians(10)) * direction + np.sin(np.radians(10)) * side
    off = engine.evaluate(entry + 0.5 * (target - entry) + 3.0 * side, tilt, seq=7)
    assert off.lateral_deviation_mm == pytest.approx(3.0, abs=1e-9)
    assert off.angle_deg == pytest.approx(10.0, abs=1e-6)
    assert off.seq == 7
    with pytest.raises(pinhole.PinholeError, match="plan=plan.json or target"):
        pinhole.Guidance(SMALL_CT, SMALL_LABELS)
    # The function form evaluates a list of poses with one engine.
    metrics = pinhole.guidance(SMALL_CT, SMALL_LABELS, [(target, direction)], target="kidney_left")
    assert metrics[0].lateral_deviation_mm is None  # no plan line with only a target


def test_drr_on_the_gpu_agrees_with_siddon():
    # CI's GPU is Mesa lavapipe (Vulkan on the CPU); a data-centre GPU runs the same code.
    ct = pinhole.load(SMALL_CT)
    poses = np.stack([np.eye(4), np.eye(4)])
    poses[1, :3, 3] = [4.0, -6.0, 2.0]
    exact = pinhole.drr(ct, lao=20, size=48, pixel_mm=6, poses=poses)
    sampled = pinhole.drr(ct, lao=20, size=48, pixel_mm=6, poses=poses, method="gpu", samples=1000)
    assert sampled.shape == exact.shape
    # Trilinear samples against exact voxel chords: close on average, edges differ most.
    assert np.abs(sampled - exact).mean() < 0.01 * exact.max()
    assert np.abs(sampled - exact).max() < 0.05 * exact.max()


def test_the_example_script_runs(tmp_path):
    script = ROOT / "examples" / "python_quickstart.py"
    done = subprocess.run([sys.executable, str(script), str(DATA), str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "plan" / "plan.json").exists()
    assert np.load(tmp_path / "drr_batch.npy").shape == (5, 128, 128)
    assert "NOT FOR CLINICAL USE" in done.stdout.upper()


def test_drr_reads_every_voxel_type_and_layout_alike():
    ct = pinhole.load(SMALL_CT)
    assert ct.array.dtype == np.int16
    reference = pinhole.drr(ct, lao=10, size=24, pixel_mm=10)
    for dtype in (np.float32, np.float64, np.int32):
        as_type = pinhole.Volume(ct.array.astype(dtype), ct.affine)
        np.testing.assert_allclose(pinhole.drr(as_type, lao=10, size=24, pixel_mm=10), reference,
                                   rtol=1e-6, atol=1e-6)
    # The same voxels in C order (not one contiguous Fortran slice).
    c_order = pinhole.Volume(np.ascontiguousarray(ct.array), ct.affine)
    assert not c_order.array.flags["F_CONTIGUOUS"]
    np.testing.assert_array_equal(pinhole.drr(c_order, lao=10, size=24, pixel_mm=10), reference)


def test_auto_renderer_skips_a_software_gpu():
    # CI has only Mesa lavapipe (a CPU rasteriser): "auto" must then render on the CPU.
    adapter = pinhole.gpu_adapter()
    ct = pinhole.load(SMALL_CT)
    auto = pinhole.drr(ct, lao=5, size=24, pixel_mm=10, method="auto")
    expected = "gpu" if adapter is not None else "siddon"
    np.testing.assert_array_equal(auto, pinhole.drr(ct, lao=5, size=24, pixel_mm=10, method=expected))
    if adapter is not None:
        assert "Cpu" not in adapter


def test_drr_refuses_an_array_that_is_not_hu_unless_allowed():
    # The label map (ids 0..117, no air): what the CLI refuses as "not a CT".
    labels = pinhole.load(SMALL_LABELS)
    with pytest.raises(pinhole.PinholeError, match="does not look like a CT.*no air"):
        pinhole.drr(labels, size=16, pixel_mm=12)
    with pytest.warns(pinhole.PinholeWarning, match="allow_non_ct"):
        image = pinhole.drr(labels, size=16, pixel_mm=12, allow_non_ct=True)
    assert image.shape == (16, 16)
    # The same check as `pinhole drr` on the file.
    done = cli("drr", "--ct", str(SMALL_LABELS), "--size", "16", "--out", "/dev/null")
    assert done.returncode != 0 and "no air" in done.stderr
