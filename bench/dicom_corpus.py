#!/usr/bin/env python3
"""Acceptance run over pydicom's own test corpus (issue 24): what `pinhole` reads, with
which values, and what it refuses and why.

    cargo build --release -p pinhole
    python3 bench/dicom_corpus.py [--pinhole target/release/pinhole] [--json out.json]

Every `.dcm` file bundled with pydicom (`pydicom.data.get_testdata_files`) is classified
by pydicom first: an image object (PixelData) whose pixels pydicom's handlers decode, an
image object pydicom cannot decode, or a non-image object (SR, RT plan, waveform ...).
Each file is then given to Pinhole alone in a folder (`pinhole convert DIR out.nii.gz`,
the series reader; a Segmentation as its file, the label-input reader; a colour image
to `out.nrrd`, the colour reader); where Pinhole reads it, its voxels (through nibabel)
are compared with pydicom's `apply_modality_lut` of every frame, or its RGB samples
(through pynrrd) with pydicom's `pixel_array` (YBR converted) or `apply_color_lut`. Prints a Markdown
table per file and a summary. Nothing is written outside a temporary folder.
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def pydicom_view(path):
    import pydicom
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as e:  # a truly broken file
        return {"kind": "unreadable", "why": f"{type(e).__name__}: {e}"[:120]}
    if "PixelData" not in ds:
        return {"kind": "non-image", "why": str(ds.get("Modality", "?"))}
    try:
        pixels = ds.pixel_array
    except Exception as e:
        return {"kind": "image, pydicom cannot decode", "why": f"{type(e).__name__}: {e}"[:120]}
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    view = {"kind": "image", "samples": samples, "frames": frames,
            "photometric": str(ds.get("PhotometricInterpretation", "")),
            "transfer_syntax": str(ds.file_meta.get("TransferSyntaxUID", "")) if "file_meta" in ds else ""}
    if str(ds.get("SOPClassUID", "")) == SEGMENTATION:
        # One segment per frame here: the label map is the mask times its segment number.
        numbers = [int(item.ReferencedSegmentNumber) for item in
                   (f.SegmentIdentificationSequence[0] for f in ds.PerFrameFunctionalGroupsSequence)]
        masks = pixels if frames > 1 else pixels[None]
        view["values"] = np.stack([m * n for m, n in zip(masks, numbers)]).astype(np.float64)
        return view
    colour = samples == 3 or view["photometric"] == "PALETTE COLOR"
    if not colour:
        values = apply_modality_lut(pixels, ds).astype(np.float64)
        if ds.get("Modality") == "RTDOSE" and "DoseGridScaling" in ds and "RescaleSlope" not in ds:
            values = values * float(ds.DoseGridScaling)  # PS3.3 C.8.8.3: dose = stored x scaling
        if frames == 1:
            values = values[None]
        view["values"] = values  # [frame, row, column]
    else:
        # Colour: pydicom's RGB (YBR converted by `pixel_array`), a palette through
        # `apply_color_lut`; Pinhole writes an RGB NRRD.
        if view["photometric"] == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut
            pixels = apply_color_lut(pixels, ds)
        rgb = np.asarray(pixels, dtype=np.float64)
        view["rgb"] = rgb[None] if frames == 1 else rgb  # [frame, row, column, c]
    return view


SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"


def pinhole_read(pinhole, path, tmp):
    folder = Path(tmp) / "in"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    shutil.copy(path, folder / Path(path).name)
    import pydicom
    header = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    colour = int(header.get("SamplesPerPixel", 1)) == 3 or \
        str(header.get("PhotometricInterpretation", "")) == "PALETTE COLOR"
    out = Path(tmp) / ("out.nrrd" if colour else "out.nii.gz")
    if out.exists():
        out.unlink()
    # A Segmentation is label input, read from its file (`seg_input`), not as a series.
    import pydicom
    segmentation = str(pydicom.dcmread(path, force=True, stop_before_pixels=True)
                       .get("SOPClassUID", "")) == SEGMENTATION
    source = folder / Path(path).name if segmentation else folder
    run = subprocess.run([pinhole, "convert", str(source), str(out)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        line = next((l for l in run.stderr.splitlines() if l.startswith("error")), run.stderr.strip())
        return None, line.replace(str(folder), "DIR")[:160], run.returncode
    if colour:
        import nrrd

        data, fields = nrrd.read(str(out))  # [c, i, j, k] with the RGB-color axis first
        assert fields["kinds"][0] == "RGB-color", fields["kinds"]
        return np.transpose(np.asarray(data, dtype=np.float64), (3, 2, 1, 0)), "", 0
    import nibabel as nib

    data = np.asarray(nib.load(str(out)).get_fdata(dtype=np.float64))
    return data, "", 0


def compare(view, data):
    if "rgb" in view:
        # pynrrd [c, i, j, k] was transposed to [k, j, i, c]: pydicom's [frame, row, column, c].
        if data.shape != view["rgb"].shape:
            return f"read, shape {data.shape} vs pydicom {view['rgb'].shape}"
        difference = np.abs(data - view["rgb"])
        worst = float(np.max(difference))
        if worst == 0.0:
            return "identical"
        return (f"differs by up to {worst:g} ({100 * np.mean(difference > 0):.1f} % of "
                f"samples, mean {np.mean(difference):.3f})")
    values = view.get("values")
    if values is None:
        return "read (not compared)"
    # NIfTI i = column, j = row, k = frame/slice; pydicom [frame, row, column].
    ours = np.transpose(data.reshape(data.shape[:3]), (2, 1, 0))
    if ours.shape != values.shape:
        return f"read, shape {ours.shape} vs pydicom {values.shape}"
    worst = float(np.max(np.abs(ours - values))) if values.size else 0.0
    return "identical" if worst == 0.0 else f"differs by up to {worst:g}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pinhole", default=str(ROOT / "target/release/pinhole"))
    parser.add_argument("--json")
    args = parser.parse_args()
    from pydicom.data import get_testdata_files

    files = sorted(f for f in get_testdata_files("*") if f.endswith(".dcm"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in files:
            view = pydicom_view(path)
            data, refusal, code = pinhole_read(args.pinhole, path, tmp)
            if code not in (0, 1):
                outcome = f"CRASH (exit {code}): {refusal}"
            elif data is None:
                outcome = f"refused: {refusal}"
            else:
                outcome = compare(view, data)
            rows.append({"file": Path(path).name, "pydicom": view["kind"],
                         "pydicom_why": view.get("why", ""), "pinhole": outcome})
    print("| file | pydicom | Pinhole |")
    print("|---|---|---|")
    for r in rows:
        why = f" ({r['pydicom_why']})" if r["pydicom_why"] and r["pydicom"] != "image" else ""
        print(f"| {r['file']} | {r['pydicom']}{why} | {r['pinhole']} |")
    decodable = [r for r in rows if r["pydicom"] == "image"]
    identical = [r for r in decodable if r["pinhole"] == "identical"]
    read_other = [r for r in decodable if not r["pinhole"].startswith(("refused", "CRASH", "identical"))]
    refused = [r for r in decodable if r["pinhole"].startswith("refused")]
    crashes = [r for r in rows if r["pinhole"].startswith("CRASH")]
    print(f"\n{len(rows)} files; pydicom decodes {len(decodable)} image objects: Pinhole reads "
          f"{len(identical)} with identical values, {len(read_other)} otherwise "
          f"(colour or differing), refuses {len(refused)}; crashes: {len(crashes)}.")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
