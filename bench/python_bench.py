"""Issue 22 benchmarks: the Python package against the CLI, and cohorts on Ray.

    python3 bench/python_bench.py [--bin target/release/pinhole] [--repeats 5] [--out bench/results/python-DATE.json]

Needs the release wheel installed (maturin build --release -m crates/python/Cargo.toml)
and the release CLI (cargo build --release -p pinhole). Measures, on the same machine
in one run:
  1. call overhead: `pinhole plan needle` (process) vs `pinhole.plan_needle` (in-process),
     and `pinhole drr` vs `pinhole.load` + `pinhole.drr`, on the chest CT (median of
     `--repeats`, alternating);
  2. cohort throughput: `pinhole.cohort.run` on 20 cases of the small abdomen CT with
     Ray limited to 1 and to 2 CPUs;
  3. DRRs per second written to a dataset (`pinhole.cohort.drr_dataset`, CPU).
Not for clinical use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pinhole

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PINHOLE_DATA", ROOT.parent / "shared" / "data"))
CHEST_CT = DATA / "chest-ct" / "ct.nii.gz"
CHEST_LABELS = DATA / "chest-ct" / "labels.nii.gz"
CHEST_TABLE = DATA / "chest-ct" / "structures.csv"
SMALL_CT = DATA / "abdomen-ct" / "example_ct_sm.nii.gz"
SMALL_LABELS = DATA / "abdomen-ct" / "example_seg.nii.gz"


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def overhead(binary: Path, repeats: int, scratch: Path) -> dict:
    plan_args = ["--ct", str(CHEST_CT), "--labels", str(CHEST_LABELS),
                 "--labels-table", str(CHEST_TABLE), "--procedure", "kidney-biopsy",
                 "--target", "kidney_cyst_left"]
    drr_args = ["--ct", str(CHEST_CT), "--lao", "20", "--size", "512"]
    runs = {"plan_cli": [], "plan_python": [], "drr_cli": [], "drr_python": []}
    for n in range(repeats):
        out = scratch / f"cli{n}"
        runs["plan_cli"].append(timed(lambda: subprocess.run(
            [str(binary), "plan", "needle", *plan_args, "--out", str(out)],
            check=True, capture_output=True)))
        runs["plan_python"].append(timed(lambda: pinhole.plan_needle(
            CHEST_CT, CHEST_LABELS, labels_table=str(CHEST_TABLE), procedure="kidney-biopsy",
            target="kidney_cyst_left", out=scratch / f"py{n}")))
        runs["drr_cli"].append(timed(lambda: subprocess.run(
            [str(binary), "drr", *drr_args, "--out", str(scratch / "drr.png"),
             "--out-raw", str(scratch / "drr.nii")], check=True, capture_output=True)))
        runs["drr_python"].append(timed(
            lambda: pinhole.drr(pinhole.load(CHEST_CT), lao=20, size=512)))
    medians = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "seconds_median": medians,
        "runs": runs,
        "plan_python_over_cli_pct": 100 * (medians["plan_python"] / medians["plan_cli"] - 1),
        "drr_python_over_cli_pct": 100 * (medians["drr_python"] / medians["drr_cli"] - 1),
    }


def cohort_throughput(scratch: Path, cases: int) -> dict:
    import ray

    from pinhole import cohort

    manifest = scratch / "manifest.csv"
    rows = ["case,ct,labels,target"]
    for n in range(cases):
        target = ["kidney_left", "kidney_right", "kidney_left:lower-pole", "kidney_right:centroid"][n % 4]
        rows.append(f"case{n:02d},{SMALL_CT},{SMALL_LABELS},{target}")
    manifest.write_text("\n".join(rows) + "\n")
    result = {}
    for cpus in (1, 2):
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        try:
            out = scratch / f"cohort{cpus}"
            seconds = timed(lambda: cohort.run(manifest, "kidney-biopsy", out,
                                               progress=False))
        finally:
            ray.shutdown()
        result[f"{cpus}_cpu"] = {"seconds": seconds, "cases_per_s": cases / seconds}
    result["speedup_2_over_1"] = result["1_cpu"]["seconds"] / result["2_cpu"]["seconds"]
    return result


def drr_dataset_rate(scratch: Path, n: int, size: int) -> dict:
    import ray

    from pinhole import cohort

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        seconds = timed(lambda: cohort.drr_dataset(CHEST_CT, scratch / "drrs", n=n, size=size,
                                                   pixel_mm=400.0 / size, shard_size=16))
    finally:
        ray.shutdown()
    return {"n": n, "size_px": size, "seconds": seconds, "drrs_per_s": n / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default=str(ROOT / "target" / "release" / "pinhole"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--drrs", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / f"python-{time.strftime('%Y-%m-%d')}.json"))
    parser.add_argument("--skip-cohort", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        result = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "date": time.strftime("%Y-%m-%d"),
            "pinhole": pinhole.__version__,
            "overhead": overhead(Path(args.bin), args.repeats, scratch),
        }
        if not args.skip_cohort:
            result["cohort"] = cohort_throughput(scratch, args.cases)
            result["drr_dataset"] = drr_dataset_rate(scratch, args.drrs, 256)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    o = result["overhead"]
    print(f"plan: CLI {o['seconds_median']['plan_cli']:.3f} s, Python "
          f"{o['seconds_median']['plan_python']:.3f} s ({o['plan_python_over_cli_pct']:+.1f} %)")
    print(f"DRR:  CLI {o['seconds_median']['drr_cli']:.3f} s, Python "
          f"{o['seconds_median']['drr_python']:.3f} s ({o['drr_python_over_cli_pct']:+.1f} %)")
    if "cohort" in result:
        c = result["cohort"]
        print(f"cohort: 1 CPU {c['1_cpu']['cases_per_s']:.2f} cases/s, 2 CPUs "
              f"{c['2_cpu']['cases_per_s']:.2f} cases/s (x{c['speedup_2_over_1']:.2f})")
        d = result["drr_dataset"]
        print(f"DRR dataset: {d['drrs_per_s']:.1f} DRRs/s ({d['size_px']}², CPU)")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
