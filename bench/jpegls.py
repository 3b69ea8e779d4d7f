#!/usr/bin/env python3
"""JPEG-LS decoding: Pinhole's decoder (`pinhole_io::dicom::jpegls`, pure Rust, written
from T.87) against CharLS (pyjpegls, the decoder pydicom uses), one thread each, on the
same codestreams: the 20 slices of the shared CT series (512 x 512, 12 bits) encoded by
CharLS at NEAR 0 (lossless) and NEAR 3.

    cargo build --release -p pinhole-bench
    python3 bench/jpegls.py [--bench target/release/pinhole-bench] [--repeats 5]

Prints one Markdown row per NEAR: best-of-N seconds to decode all 20 slices (the checksum
is taken outside the timing on both sides), the ratio, and whether both decoders give
the same sample sum.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pydicom
import jpeg_ls

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERIES = os.path.join(os.environ.get("PINHOLE_DATA", os.path.join(ROOT, "..", "shared", "data")),
                      "dicom-ct-series")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bench", default=os.path.join(ROOT, "target", "release", "pinhole-bench"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    slices = []
    for name in sorted(os.listdir(SERIES)):
        ds = pydicom.dcmread(os.path.join(SERIES, name))
        slices.append((ds.pixel_array.astype(np.uint16), int(ds.BitsStored)))
    print("| NEAR | bytes (20 slices) | CharLS (pyjpegls) s | Pinhole s | Pinhole / CharLS | same samples |")
    print("|---|---|---|---|---|---|")
    for near in (0, 3):
        with tempfile.TemporaryDirectory() as tmp:
            streams = []
            for k, (pixels, bits) in enumerate(slices):
                data = bytes(jpeg_ls.encode_buffer(pixels.tobytes(), pixels.shape[0], pixels.shape[1],
                                                   1, bits, lossy_error=near))
                streams.append(data)
                with open(os.path.join(tmp, f"{k:03d}.jls"), "wb") as f:
                    f.write(data)
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                decoded = [jpeg_ls.decode(np.frombuffer(data, np.uint8)) for data in streams]
                best = min(best, time.perf_counter() - start)
            total = sum(int(d.astype(np.uint64).sum()) for d in decoded)
            ours = json.loads(subprocess.check_output([args.bench, "jpegls", tmp, str(args.repeats)]))
            size = sum(len(s) for s in streams)
            print(f"| {near} | {size} | {best:.4f} | {ours['seconds']:.4f} | "
                  f"{ours['seconds'] / best:.2f} | {ours['sample_sum'] == total} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
