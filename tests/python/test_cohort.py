"""``pinhole.cohort`` on Ray: serial vs Ray, resumability, a node lost mid-run, DRR
datasets, refused manifests. Real data: the TotalSegmentator example abdomen CT (see
``cohort_cases.py``). NOT FOR CLINICAL USE.

The reference for every Ray result is an independent serial ``pinhole.plan_needle``
call per case, and for flipped storage the unflipped peer case.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cohort_cases  # noqa: E402

import pinhole  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402
from pinhole import PinholeError, cohort  # noqa: E402

#: Enough work per case that a node can be removed while cases are still running.
CANDIDATES = 100_000
TOP = 5
PROCEDURE = cohort_cases.DEFAULT_PROCEDURE
TEXT_FILES = ("plan.json", "paths.mrk.json", "skin_access.vtk")

if not (cohort_cases.data_dir() / "abdomen-ct" / cohort_cases.CT_NAME).is_file():
    raise RuntimeError(f"real data not found under {cohort_cases.data_dir()} (set PINHOLE_DATA)")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> cohort_cases.Cohort:
    return cohort_cases.build_cohort(tmp_path_factory.mktemp("cohort"))


def _serial_plan(built: cohort_cases.Cohort, spec: cohort_cases.CaseSpec, out: Path
                 ) -> Optional[str]:
    """A direct ``plan_needle`` call into ``out``; the error text when it fails."""
    try:
        pinhole.plan_needle(
            built.root / spec.ct, built.root / spec.labels,
            procedure=spec.procedure or PROCEDURE, target=spec.target,
            candidates=CANDIDATES, top=TOP, out=out,
        )
    except PinholeError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def serial(built, tmp_path_factory) -> Dict[str, dict]:
    """case -> {"dir": folder of the serial run's files, "error": text or None}."""
    root = tmp_path_factory.mktemp("serial")
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pinhole.PinholeWarning)
        for spec in built.cases:
            error = _serial_plan(built, spec, root / spec.case)
            results[spec.case] = {"dir": root / spec.case, "error": error}
    return results


@pytest.fixture(scope="module")
def ray_run(built, tmp_path_factory):
    """The cohort on an embedded local Ray with 2 CPUs (``run`` starts and stops it)."""
    assert not ray.is_initialized()
    out = tmp_path_factory.mktemp("ray") / "out"
    rows = cohort.run(built.manifest, PROCEDURE, out, num_cpus=2, candidates=CANDIDATES,
                      top=TOP, progress=False)
    assert not ray.is_initialized(), "run() must shut down the Ray it started"
    return out, rows


@pytest.fixture
def cluster():
    """A head without CPUs and three one-CPU worker nodes; the driver connected."""
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(3)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()


# --------------------------------------------------------------------------- helpers


def _case_dirs(out: Path) -> List[str]:
    return sorted(p.name for p in (out / "cases").iterdir())


def _temporaries(out: Path) -> List[str]:
    return [str(p) for p in out.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


def _record(out: Path, case: str) -> dict:
    return json.loads((out / "cases" / case / "case.json").read_text())


def _plan(folder: Path) -> dict:
    return json.loads((folder / "plan.json").read_text())


def _assert_matches_serial(out: Path, built, serial) -> None:
    """Every case exactly once, complete, equal to the serial run's files."""
    assert _case_dirs(out) == sorted(c.case for c in built.cases)
    assert _temporaries(out) == []
    for spec in built.cases:
        folder, reference = out / "cases" / spec.case, serial[spec.case]
        record = _record(out, spec.case)
        assert record["case"] == spec.case
        if reference["error"] is not None:
            assert record["status"] == "failed"
            assert record["error"] == reference["error"]
            assert sorted(p.name for p in folder.iterdir()) == ["case.json"]
            continue
        assert record["status"] == "ok" and record["error"] is None, record
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            cohort.PLAN_FILES + ("case.json",))
        for name in TEXT_FILES:
            text = (folder / name).read_text()
            assert ".tmp-" not in text, f"{spec.case}/{name} names a temporary folder"
            assert text == (reference["dir"] / name).read_text(), f"{spec.case}/{name}"
        assert (folder / "best.png").read_bytes() == (reference["dir"] / "best.png").read_bytes()


def _exact_check_failures(plan: dict) -> int:
    pattern = re.compile(r"^(\d+) candidate\(s\) passed the coarse screen but failed the exact")
    return sum(int(m.group(1)) for m in map(pattern.match, plan["warnings"]) if m)


def _read_summary_csv(path: Path) -> List[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------- tests


def test_cohort_covers_the_cases_asked_for(built, serial):
    assert len(built.cases) >= 20
    failing = [c.case for c in built.cases if not c.expect_ok]
    assert failing == ["missing-kidney-left"]
    assert {c.case for c in built.cases if serial[c.case]["error"]} == set(failing)
    assert "kidney_left" in serial["missing-kidney-left"]["error"]
    inputs = _plan(serial["full-kidney_left"]["dir"])["inputs"]
    assert [i["path"] for i in inputs] == ["ct.nii.gz", "labels.nii.gz"]  # no folder names


def test_ray_run_equals_serial_run(built, serial, ray_run):
    out, rows = ray_run
    _assert_matches_serial(out, built, serial)
    assert [r["case"] for r in rows] == sorted(c.case for c in built.cases)
    assert not any(r["skipped"] for r in rows)


def test_flipped_storage_plans_the_same_best_path(built, ray_run):
    out, _ = ray_run
    peers = [c for c in built.cases if c.same_as]
    assert len(peers) >= 8
    for spec in peers:
        best = _plan(out / "cases" / spec.case)["paths"][0]
        peer = _plan(out / "cases" / spec.same_as)["paths"][0]
        for key in ("entry_lps", "target_lps", "direction_lps"):
            np.testing.assert_allclose(best[key], peer[key], atol=1e-6, err_msg=spec.case)
        assert math.isclose(best["length_mm"], peer["length_mm"], abs_tol=1e-6)


def test_failed_case_is_recorded_and_the_others_complete(built, ray_run):
    out, rows = ray_run
    by_case = {r["case"]: r for r in rows}
    failed = by_case["missing-kidney-left"]
    assert failed["status"] == "failed" and "kidney_left" in failed["error"]
    assert failed["n_paths"] is None and failed["feasible"] is None
    assert all(by_case[c.case]["status"] == "ok" for c in built.cases if c.expect_ok)
    report = json.loads((out / "cohort.json").read_text())
    assert report["counts"]["failed"] == 1
    assert report["counts"]["ok"] == len(built.cases) - 1
    assert report["disclaimer"] == pinhole.DISCLAIMER
    assert any("missing-kidney-left" in w for w in report["warnings"])


def test_summary_rows_follow_the_plans(built, serial, ray_run):
    out, rows = ray_run
    for row in rows:
        if row["status"] != "ok":
            continue
        plan = _plan(serial[row["case"]]["dir"])  # the serial run, not the cohort's files
        best = plan["paths"][0]
        clearances = [v for v in best["min_clearance_mm"].values() if v is not None]
        assert row["n_paths"] == len(plan["paths"]) <= TOP
        assert row["feasible"] is True
        assert row["best_length_mm"] == best["length_mm"]
        assert row["best_min_clearance_mm"] == min(clearances)
        assert row["candidates"] == CANDIDATES
        # Every candidate passes the coarse screen (``feasible``) or is rejected by one
        # rule; those of the screen's passes that fail the exact check are counted in
        # ``rejected`` too, and the plan's warnings say how many.
        assert row["feasible_candidates"] + row["rejected"] == \
            CANDIDATES + _exact_check_failures(plan)
        assert row["seconds"] > 0
    table = pq.read_table(out / "summary.parquet").to_pylist()
    assert table == rows
    from_csv = _read_summary_csv(out / "summary.csv")
    assert [r["case"] for r in from_csv] == [r["case"] for r in rows]
    for text_row, row in zip(from_csv, rows):
        for key in ("best_length_mm", "best_min_clearance_mm", "seconds"):
            assert (text_row[key] == "") == (row[key] is None)
            if row[key] is not None:
                assert float(text_row[key]) == row[key]
        assert text_row["feasible"] == {True: "true", False: "false", None: ""}[row["feasible"]]


def test_rerun_skips_finished_cases_and_reruns_changed_inputs(built, ray_run, tmp_path):
    source_out, first_rows = ray_run
    root = tmp_path / "cohort"
    shutil.copytree(built.root, root)
    out = tmp_path / "out"
    shutil.copytree(source_out, out)
    manifest = root / "manifest.csv"

    rows = cohort.run(manifest, PROCEDURE, out, num_cpus=2, candidates=CANDIDATES, top=TOP,
                      progress=False)
    failed = {c.case for c in built.cases if not c.expect_ok}
    assert {r["case"] for r in rows if not r["skipped"]} == failed
    for before, after in zip(first_rows, rows):
        ignore = {"skipped"} | ({"seconds"} if before["case"] in failed else set())
        assert {k: v for k, v in before.items() if k not in ignore} == \
               {k: v for k, v in after.items() if k not in ignore}
    assert json.loads((out / "cohort.json").read_text())["counts"]["skipped"] == \
        len(built.cases) - len(failed)

    # A different crop of one case's inputs: that case (and the failing one) rerun.
    changed = "crop-wide-left"
    hash_before = _record(out, changed)["inputs_hash"]
    source = cohort_cases.load_source()
    lo, hi = cohort_cases.label_box(source.labels, "kidney_left", (18, 25, 0))
    cohort_cases.write_crop(root, changed, source, lo, hi)
    rows = cohort.run(manifest, PROCEDURE, out, num_cpus=2, candidates=CANDIDATES, top=TOP,
                      progress=False)
    assert {r["case"] for r in rows if not r["skipped"]} == failed | {changed}
    assert _record(out, changed)["inputs_hash"] != hash_before
    spec = built.by_id()[changed]
    reference = tmp_path / "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pinhole.PinholeWarning)
        assert _serial_plan(cohort_cases.Cohort(root, manifest, built.cases), spec,
                            reference) is None
    assert (out / "cases" / changed / "plan.json").read_text() == \
        (reference / "plan.json").read_text()
    assert _temporaries(out) == []


def test_node_lost_mid_run_every_case_completes_once(built, serial, cluster, tmp_path):
    the_cluster, workers = cluster
    out = tmp_path / "out"
    outcome: dict = {}

    def drive() -> None:
        try:
            outcome["rows"] = cohort.run(built.manifest, PROCEDURE, out,
                                         candidates=CANDIDATES, top=TOP, progress=False)
        except BaseException as exc:  # reported by the assertions below
            outcome["error"] = exc

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    finished_at_removal, in_flight_at_removal = None, []
    deadline = time.monotonic() + 240
    while thread.is_alive() and time.monotonic() < deadline:
        entries = list((out / "cases").iterdir()) if (out / "cases").is_dir() else []
        done = [p for p in entries if not p.name.startswith(".")]
        in_flight = [p.name for p in entries if ".tmp-" in p.name]
        if len(done) >= 3 and in_flight:
            finished_at_removal, in_flight_at_removal = len(done), in_flight
            the_cluster.remove_node(workers[0], allow_graceful=False)
            break
        time.sleep(0.02)
    thread.join(timeout=240)
    assert not thread.is_alive(), "the cohort did not finish after the node was removed"
    assert "error" not in outcome, outcome.get("error")
    assert finished_at_removal is not None and finished_at_removal < len(built.cases), \
        "the node was not removed while cases were still running"
    assert in_flight_at_removal, "no case was being written when the node was removed"
    _assert_matches_serial(out, built, serial)
    rows = outcome["rows"]
    assert [r["status"] for r in rows].count("ok") == len(built.cases) - 1


def test_drr_dataset_shards_poses_and_determinism(tmp_path):
    ct_path = cohort_cases.data_dir() / "abdomen-ct" / cohort_cases.CT_NAME
    options = dict(n=10, seed=7, shard_size=4, size=32, lao_range_deg=(-30.0, 30.0),
                   cran_range_deg=(-15.0, 15.0), translation_sd_mm=5.0)
    manifest = cohort.drr_dataset(ct_path, tmp_path / "a", **options)
    assert [s["count"] for s in manifest["shards"]] == [4, 4, 2]
    assert manifest["image_shape"] == [32, 32]
    assert manifest["disclaimer"] == pinhole.DISCLAIMER
    assert json.loads((tmp_path / "a" / "manifest.json").read_text()) == manifest

    images = [np.load(tmp_path / "a" / s["images"], mmap_mode="r") for s in manifest["shards"]]
    poses = [np.load(tmp_path / "a" / s["poses"], mmap_mode="r") for s in manifest["shards"]]
    assert [i.shape for i in images] == [(4, 32, 32), (4, 32, 32), (2, 32, 32)]
    assert all(i.dtype == np.float32 for i in images)
    assert all(p.dtype == np.float64 and p.shape[1:] == (4, 4) for p in poses)
    all_poses = np.concatenate(poses)

    ct = pinhole.load(ct_path)
    pixel_mm = manifest["geometry"]["pixel_mm"]
    expected = pinhole.drr(ct, poses=all_poses, size=32, pixel_mm=pixel_mm)
    np.testing.assert_array_equal(np.concatenate(images), expected)
    assert float(np.concatenate(images).max()) > 0.0

    _check_poses_follow_the_documented_distribution(all_poses, ct, options)

    # The same seed again, through the command line: identical files.
    result = _cli("drr", "--ct", str(ct_path), "--out", str(tmp_path / "b"), "--n", "10",
                  "--seed", "7", "--shard-size", "4", "--size", "32",
                  "--lao-range-deg", "-30", "30", "--cran-range-deg", "-15", "15",
                  "--translation-sd-mm", "5")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "b")) == sorted(os.listdir(tmp_path / "a"))
    for name in sorted(os.listdir(tmp_path / "a")):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert _temporaries(tmp_path) == []


def _check_poses_follow_the_documented_distribution(poses, ct, options) -> None:
    """Rigid; angles and translation are the documented draws; and a pose without its
    translation renders what the C-arm at those angles renders."""
    n = options["n"]
    rng = np.random.default_rng(options["seed"])
    lao = rng.uniform(*options["lao_range_deg"], size=n)
    cran = rng.uniform(*options["cran_range_deg"], size=n)
    translation = rng.normal(0.0, options["translation_sd_mm"], size=(n, 3))
    center = ct.index_to_lps((np.asarray(ct.shape) - 1.0) / 2.0)
    for k, pose in enumerate(poses):
        rotation = pose[:3, :3]
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rotation) == pytest.approx(1.0)
        np.testing.assert_array_equal(pose[3], [0, 0, 0, 1])
        carm = rotation.T  # the C-arm's rotation Rz(lao) Rx(-cran)
        assert math.degrees(math.atan2(carm[1, 0], carm[0, 0])) == pytest.approx(lao[k])
        assert -math.degrees(math.atan2(carm[2, 1], carm[2, 2])) == pytest.approx(cran[k])
        np.testing.assert_allclose(pose[:3, 3] - (center - rotation @ center),
                                   translation[k], atol=1e-9)
    for k in (0, 1):
        untranslated = poses[k].copy()
        untranslated[:3, 3] -= translation[k]
        size, pixel_mm = 48, 400.0 / 48
        posed = pinhole.drr(ct, poses=untranslated, size=size, pixel_mm=pixel_mm)[0]
        carm_view = pinhole.drr(ct, lao=lao[k], cran=cran[k], size=size, pixel_mm=pixel_mm)
        np.testing.assert_allclose(posed, carm_view, rtol=1e-5, atol=1e-5)


def test_duplicate_and_stale_executions_leave_one_complete_folder(built, serial, tmp_path):
    """What a retried or duplicated task does: an equal result already in place is kept,
    a stale one (other inputs) is replaced; never a temporary folder left."""
    spec = built.by_id()["full-kidney_right"]
    case = cohort.read_manifest(built.manifest, PROCEDURE)[
        [c.case for c in built.cases].index(spec.case)]
    digest = cohort.inputs_hash(case, candidates=CANDIDATES, top=TOP)
    cases_dir = tmp_path / "cases"
    cases_dir.mkdir()
    first = cohort.plan_case(case, digest, str(cases_dir), CANDIDATES, TOP)
    second = cohort.plan_case(case, digest, str(cases_dir), CANDIDATES, TOP)
    assert second == first  # the existing result was kept
    assert os.listdir(cases_dir) == [spec.case]
    stale = cohort.plan_case(case, "0" * 64, str(cases_dir), CANDIDATES, TOP)
    assert stale["inputs_hash"] == "0" * 64
    again = cohort.plan_case(case, digest, str(cases_dir), CANDIDATES, TOP)
    assert again["inputs_hash"] == digest and _record(tmp_path, spec.case) == again
    assert os.listdir(cases_dir) == [spec.case]
    assert (cases_dir / spec.case / "plan.json").read_text() == \
        (serial[spec.case]["dir"] / "plan.json").read_text()


def _write_manifest(path: Path, header: List[str], rows: List[List[str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.mark.parametrize(
    "header, rows, message",
    [
        (["case", "ct", "labels"], [["a", "ct.nii.gz", "l.nii.gz"]], r"missing column.*target"),
        (["case", "ct", "labels", "target"],
         [["a", "ct.nii.gz", "l.nii.gz", "kidney_left"],
          ["a", "ct.nii.gz", "l.nii.gz", "kidney_right"]], r"duplicate case id 'a'.*lines 2 and 3"),
        (["case", "ct", "labels", "target"], [], r"no cases"),
        (["case", "ct", "labels", "target"], [["../a", "ct", "l", "t"]], r"plain folder name"),
        (["case", "ct", "labels", "target"], [["a", "ct", "", "t"]], r"line 2: empty labels"),
    ],
)
def test_malformed_manifest_is_refused_before_anything_runs(tmp_path, header, rows, message):
    manifest = _write_manifest(tmp_path / "m.csv", header, rows)
    out = tmp_path / "out"
    with pytest.raises(PinholeError, match=message):
        cohort.run(manifest, PROCEDURE, out, progress=False)
    assert not out.exists()


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", "pinhole", "cohort", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_refused_manifest_exits_2(tmp_path):
    manifest = _write_manifest(tmp_path / "m.csv", ["case", "ct", "labels", "target"],
                               [["x", "ct", "l", "t"], ["x", "ct", "l", "t"]])
    result = _cli("run", str(manifest), "--procedure", PROCEDURE, "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "duplicate case id 'x'" in result.stderr
    assert not (tmp_path / "o").exists()


def test_cli_run_exits_0_with_a_failed_case(built, tmp_path):
    keep = {"full-kidney_left", "missing-kidney-left"}
    rows = [[c.case, str(built.root / c.ct), str(built.root / c.labels), c.target]
            for c in built.cases if c.case in keep]  # absolute paths
    manifest = _write_manifest(tmp_path / "two.csv", ["case", "ct", "labels", "target"], rows)
    out = tmp_path / "out"
    result = _cli("run", str(manifest), "--procedure", PROCEDURE, "--out", str(out),
                  "--num-cpus", "1", "--candidates", "4000", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "cases 2, ok 1, failed 1" in result.stdout
    summary = {r["case"]: r for r in _read_summary_csv(out / "summary.csv")}
    assert summary["full-kidney_left"]["status"] == "ok"
    assert summary["missing-kidney-left"]["status"] == "failed"


def test_infeasible_case_is_an_answer_with_the_rejection_counts(built, tmp_path):
    # A profile whose needle is 5 mm long: every candidate breaks the length rule, a
    # constructed "no feasible path" with known counts.
    shipped = Path(__file__).resolve().parents[2] / "crates" / "plan-needle" / "profiles"
    text = (shipped / f"{PROCEDURE}.toml").read_text()
    assert len(re.findall(r"(?m)^max_mm = ", text)) == 1
    profile = tmp_path / "short.toml"
    profile.write_text(re.sub(r"(?m)^max_mm = .*$", "max_mm = 5.0", text))
    full = next(c for c in built.cases if c.case == "full-kidney_left")
    row = [str(built.root / full.ct), str(built.root / full.labels), full.target]
    manifest = _write_manifest(tmp_path / "m.csv", ["case", "ct", "labels", "target", "profile"],
                               [["short", *row, str(profile)], ["normal", *row, ""]])
    out = tmp_path / "out"
    args = ("run", str(manifest), "--procedure", PROCEDURE, "--out", str(out), "--num-cpus", "1",
            "--candidates", "2000", "--no-progress")
    result = _cli(*args)
    assert result.returncode == 0, result.stderr
    summary = {r["case"]: r for r in _read_summary_csv(out / "summary.csv")}
    short = summary["short"]
    assert (short["status"], short["feasible"], short["n_paths"]) == ("infeasible", "false", "0")
    assert (short["candidates"], short["rejected"]) == ("2000", "2000")
    assert _record(out, "short")["no_path"]["rejected"] == {"max_length": 2000}
    assert summary["normal"]["status"] == "ok" and summary["normal"]["feasible"] == "true"
    report = json.loads((out / "cohort.json").read_text())
    assert (report["counts"]["feasible"], report["counts"]["infeasible"]) == (1, 1)
    # An answer is not rerun.
    assert _cli(*args).returncode == 0
    again = {r["case"]: r for r in _read_summary_csv(out / "summary.csv")}
    assert again["short"]["skipped"] == "true" and again["normal"]["skipped"] == "true"


def test_the_rust_cli_hands_cohort_to_the_python_package(tmp_path):
    binary = Path(os.environ.get("PINHOLE_BIN", Path(__file__).resolve().parents[2]
                                 / "target" / "debug" / "pinhole"))
    manifest = _write_manifest(tmp_path / "m.csv", ["case", "ct", "labels", "target"],
                               [["x", "ct", "l", "t"], ["x", "ct", "l", "t"]])
    env = dict(os.environ, PINHOLE_PYTHON=sys.executable)
    result = subprocess.run([str(binary), "cohort", "run", str(manifest), "--procedure", PROCEDURE,
                             "--out", str(tmp_path / "o")], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    assert "duplicate case id 'x'" in result.stderr
    # An interpreter without the package: refused with what to install.
    env["PINHOLE_PYTHON"] = str(tmp_path / "no-python")
    result = subprocess.run([str(binary), "cohort", "run", str(manifest)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "PINHOLE_PYTHON" in result.stderr


def test_what_the_run_could_not_use_is_on_the_terminal(built, tmp_path):
    full = next(c for c in built.cases if c.case == "full-kidney_left")
    manifest = _write_manifest(
        tmp_path / "m.csv", ["case", "ct", "labels", "target", "comment"],
        [["one", str(built.root / full.ct), str(built.root / full.labels), full.target, "x"]])
    result = _cli("run", str(manifest), "--procedure", PROCEDURE, "--out", str(tmp_path / "o"),
                  "--num-cpus", "1", "--candidates", "2000", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "warning: manifest column 'comment' is not used" in result.stderr
    report = json.loads((tmp_path / "o" / "cohort.json").read_text())
    assert "manifest column 'comment' is not used" in report["warnings"]
