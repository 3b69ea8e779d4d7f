#!/usr/bin/env python3
"""Gantry-tilted CT series with a known answer, for Pinhole's DICOM reader tests.

Commands (JSON on stdout):
  make DIR TILT_DEG [RECORD]
      writes 12 single-frame CT slices (48 columns x 40 rows, PixelSpacing 0.7 \\ 0.8 mm)
      into DIR as a tilted gantry makes them: image planes tilted by TILT_DEG about the
      patient's left-right axis (ImageOrientationPatient row (1, 0, 0), column
      (0, cos t, -sin t)) while the table moves 2.5 mm along S per slice, so each slice is
      displaced along its column direction by 2.5 sin t mm more than the previous one.
      Each pixel holds round(f) of the linear field f(x, y, z) = 2 x - 3 y + 5 z + 100 of
      its own LPS position (mm), stored as int16 with RescaleIntercept -1000 (so the value
      read is round(f) - 1000); GantryDetectorTilt is TILT_DEG unless RECORD is `none`.
      Prints {"field": [2, -3, 5, 100], "intercept": -1000, "slices": 12}.
  dcm2niix DIR OUT_DIR
      dcm2niix (Debian package) on DIR; prints {"niftis": [every .nii it wrote]}, the
      tilt-corrected one ("_Tilt_") first when there is one.
"""
import glob
import json
import math
import os
import subprocess
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

FIELD = (2.0, -3.0, 5.0, 100.0)
COLUMNS, ROWS = 48, 40
SPACING_ROW, SPACING_COLUMN = 0.7, 0.8  # PixelSpacing: between rows, between columns
STEP_MM = 2.5
SLICES = 12


def make(folder, tilt_deg, record="yes"):
    os.makedirs(folder, exist_ok=True)
    t = math.radians(float(tilt_deg))
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, math.cos(t), -math.sin(t)])
    origin = np.array([-17.3, -12.1, 40.0])
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    i = np.arange(COLUMNS)[None, :]
    j = np.arange(ROWS)[:, None]
    for k in range(SLICES):
        position = origin + np.array([0.0, 0.0, k * STEP_MM])
        world = [position[a] + i * SPACING_COLUMN * row[a] + j * SPACING_ROW * col[a]
                 for a in range(3)]
        f = FIELD[0] * world[0] + FIELD[1] * world[1] + FIELD[2] * world[2] + FIELD[3]
        stored = np.round(f).astype(np.int16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "CT"
        ds.PatientName = "Tilt^Phantom"
        ds.PatientID = "TILT"
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in (*row, *col)]
        ds.ImagePositionPatient = [f"{v:.10g}" for v in position]
        ds.PixelSpacing = [SPACING_ROW, SPACING_COLUMN]
        ds.SliceThickness = STEP_MM * math.cos(t)
        if record != "none":
            ds.GantryDetectorTilt = tilt_deg
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ROWS, COLUMNS
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1000
        ds.RescaleSlope = 1
        ds.PixelData = stored.tobytes()
        ds.save_as(os.path.join(folder, f"slice{k:03d}.dcm"), enforce_file_format=True)
    print(json.dumps({"field": FIELD, "intercept": -1000, "slices": SLICES}))


def dcm2niix(folder, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    subprocess.run(["dcm2niix", "-f", "converted", "-z", "n", "-b", "n", "-o", out_dir, folder],
                   capture_output=True, text=True, check=True)
    niftis = sorted(glob.glob(os.path.join(out_dir, "*.nii")), key=lambda p: "_Tilt_" not in p)
    print(json.dumps({"niftis": niftis}))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"make": make, "dcm2niix": dcm2niix}[command](*args)
