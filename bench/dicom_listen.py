"""Issue 24 benchmark: C-STORE of a 500-slice CT series into `pinhole dicom listen`
against pynetdicom's `storescp`, in one run, the same sender (pynetdicom, one
association) for both.

    python3 bench/dicom_listen.py [--bin target/release/pinhole] [--slices 500] [--repeats 3]

The series: the 20 real slices of ../shared/data/dicom-ct-series (JPEG 2000 lossless,
de-identified with blank UIDs) decompressed to explicit VR little endian (storescp
accepts uncompressed transfer syntaxes only) and repeated with fresh SOP Instance UIDs,
one Study/Series UID and positions 3 mm apart, written once to a temporary folder. Measured: wall time
from the first association request to the last C-STORE response (slices/s), and the
receiver's peak resident memory (VmHWM from /proc). Not for clinical use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PINHOLE_DATA", ROOT.parent / "shared" / "data"))
PEER = ROOT / "tests" / "py" / "dicom_net_peer.py"


def make_series(folder: Path, slices: int) -> list:
    sources = sorted((DATA / "dicom-ct-series").glob("CT*"))
    study, series = generate_uid(entropy_srcs=["bench-study"]), generate_uid(entropy_srcs=["bench-series"])
    paths = []
    for n in range(slices):
        ds = pydicom.dcmread(sources[n % len(sources)])
        # Uncompressed (explicit VR little endian): what pynetdicom's storescp accepts.
        ds.decompress()
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[f"bench-{n}"])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        position = list(ds.ImagePositionPatient)
        position[2] = -766.5 + 3.0 * n
        ds.ImagePositionPatient = position
        ds.InstanceNumber = n + 1
        path = folder / f"slice{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def send(port: int, ae: str, files: list) -> tuple:
    """Seconds, and how many instances the peer resent after pynetdicom lost their
    response (each costs its DIMSE timeout: such a run's rate is not comparable)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(PEER), "store", "127.0.0.1", str(port), ae,
                           *map(str, files)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"store failed: {done.stdout[-500:]} {done.stderr[-2000:]}")
    retried = len(json.loads(done.stdout).get("retried", []))
    return seconds, retried


def run_receiver(command: list, port: int, ae: str, files: list, store: Path) -> dict:
    receiver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        seconds, retried = send(port, ae, files)
        stored = sum(1 for _ in store.rglob("*") if _.is_file() and not _.name.startswith("."))
        return {"seconds": seconds, "slices_per_s": len(files) / seconds,
                "peak_rss_mb": peak_rss_mb(receiver.pid), "stored": stored,
                "peer_retries": retried}
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default=str(ROOT / "target" / "release" / "pinhole"))
    parser.add_argument("--slices", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" /
                                             f"dicom-listen-{time.strftime('%Y-%m-%d')}.json"))
    args = parser.parse_args()
    runs = {"pinhole": [], "pynetdicom_storescp": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "series").mkdir()
        files = make_series(tmp / "series", args.slices)
        series_mb = sum(f.stat().st_size for f in files) / 1e6
        for n in range(args.repeats):
            port, store = free_port(), tmp / f"pinhole{n}"
            runs["pinhole"].append(run_receiver(
                [args.bin, "dicom", "listen", "--port", str(port), "--ae-title", "PINHOLE",
                 "--store", str(store), "--series-quiet-s", "1"], port, "PINHOLE", files, store))
            port, store = free_port(), tmp / f"storescp{n}"
            store.mkdir()
            runs["pynetdicom_storescp"].append(run_receiver(
                [sys.executable, "-m", "pynetdicom", "storescp", str(port), "-aet", "STORESCP",
                 "-od", str(store)], port, "STORESCP", files, store))
    median = {k: {m: statistics.median(r[m] for r in v) for m in ("slices_per_s", "peak_rss_mb")}
              for k, v in runs.items()}
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "slices": args.slices,
        "series_mb": series_mb,
        "runs": runs,
        "median": median,
        "pinhole_over_storescp_throughput": median["pinhole"]["slices_per_s"]
        / median["pynetdicom_storescp"]["slices_per_s"],
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    resent = {k: sum(r["peer_retries"] for r in v) for k, v in runs.items()}
    if any(resent.values()):
        print(f"warning: pynetdicom lost C-STORE responses and resent instances {resent}: "
              "those runs include a DIMSE timeout; rerun before comparing")
    for name, m in median.items():
        print(f"{name:22s} {m['slices_per_s']:7.1f} slices/s  peak RSS {m['peak_rss_mb']:6.1f} MB")
    print(f"pinhole / storescp throughput: x{result['pinhole_over_storescp_throughput']:.2f} "
          f"({args.slices} slices, {series_mb:.1f} MB); wrote {args.out}")


if __name__ == "__main__":
    main()
