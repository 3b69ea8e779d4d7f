#!/usr/bin/env python3
"""Enhanced multi-frame DICOM objects for Pinhole's tests, made by independent tools.

Commands (JSON on stdout):
  legacy-ct SRC_DIR OUT.dcm [VARIANT]
      highdicom's LegacyConvertedEnhancedCTImage of the single-frame CT series in SRC_DIR
      (PS3.3 A.70: one file, geometry and rescale in functional groups), its pixels
      decompressed by pydicom first (native). VARIANT `j2k` keeps the source's JPEG 2000
      frames (encapsulated, one fragment per frame); these are edited by pydicom after
      the conversion: `reversed` stores the frames (and their per-frame groups) in the
      opposite order of the slices, `two-stacks` repeats every frame (two stacks at the
      same positions), `bad-count` declares one frame more than the Per-frame Functional
      Groups items. Blank SOP / Study / Series / Frame of Reference UIDs (the shared
      series has none) are filled first. Prints {"frames", "sop_class_uid",
      "transfer_syntax"}.
  dcm2niix FILE OUT_DIR
      converts FILE with dcm2niix (Debian package) to OUT_DIR/converted.nii; prints
      {"nifti": path, "version": dcm2niix's version line}.
"""
import json
import os
import subprocess
import sys

import pydicom
from pydicom.uid import generate_uid


def load_series(folder):
    files = sorted(os.path.join(folder, n) for n in os.listdir(folder) if not n.startswith("."))
    datasets = [pydicom.dcmread(f) for f in files]
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    for ds in datasets:
        if not str(ds.get("SOPClassUID", "")).strip():
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        if not str(ds.get("SOPInstanceUID", "")).strip():
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        if not str(ds.get("StudyInstanceUID", "")).strip():
            ds.StudyInstanceUID = study
        if not str(ds.get("SeriesInstanceUID", "")).strip():
            ds.SeriesInstanceUID = series
        if not str(ds.get("FrameOfReferenceUID", "")).strip():
            ds.FrameOfReferenceUID = frame_of_reference
    return datasets


def legacy_ct(src, out, order="native"):
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    datasets = load_series(src)
    if order != "j2k":
        for ds in datasets:
            ds.decompress()
    image = LegacyConvertedEnhancedCTImage(
        legacy_datasets=datasets,
        series_instance_uid=generate_uid(),
        series_number=901,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    image.save_as(out)
    ds = pydicom.dcmread(out)
    frames = int(ds.NumberOfFrames)
    if order == "reversed":
        per_frame = list(ds.PerFrameFunctionalGroupsSequence)[::-1]
        pixels = ds.pixel_array[::-1].copy()
        ds.PerFrameFunctionalGroupsSequence = per_frame
        ds.PixelData = pixels.tobytes()
    elif order == "two-stacks":
        per_frame = list(ds.PerFrameFunctionalGroupsSequence)
        ds.PerFrameFunctionalGroupsSequence = per_frame + [pydicom.Dataset(i) for i in per_frame]
        ds.PixelData = ds.PixelData * 2
        frames *= 2
        ds.NumberOfFrames = frames
    elif order == "bad-count":
        ds.NumberOfFrames = frames + 1
    elif order not in ("native", "j2k"):
        sys.exit(f"unknown ORDER {order}")
    ds.save_as(out)
    print(json.dumps({
        "frames": frames,
        "sop_class_uid": str(ds.SOPClassUID),
        "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
    }))


def dcm2niix(path, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    single = os.path.join(out_dir, "in")
    os.makedirs(single, exist_ok=True)
    link = os.path.join(single, os.path.basename(path))
    if not os.path.exists(link):
        os.symlink(os.path.abspath(path), link)
    run = subprocess.run(
        ["dcm2niix", "-f", "converted", "-z", "n", "-b", "n", "-o", out_dir, single],
        capture_output=True, text=True, check=True)
    version = next((line for line in run.stdout.splitlines() if "version" in line), "")
    print(json.dumps({"nifti": os.path.join(out_dir, "converted.nii"), "version": version}))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"legacy-ct": legacy_ct, "dcm2niix": dcm2niix}[command](*args)
